package netns

import (
	"fmt"
	"net/netip"
	"testing"
)

// Lab is a small cluster: nodes on one LAN, pods on every node, and an
// outside client on the same LAN standing for the rest of the world (a
// router or a cloud load balancer):
//
//	client ──┐
//	node 0 ──┼── bridge (in its own namespace, the LAN)
//	node 1 ──┘
//	node i ──── its pods, one point-to-point link each (see Topology)
//
// Each node routes every other node's pod range via that node, as a
// cluster network does without encapsulation, and has its default route via
// the client, so packets to virtual addresses that no rule translates leave
// the node and die at the client, which does not forward. The client
// reaches the nodes directly, reaches each node's pods via that node (a
// cloud network's routes), and sends traffic for a load balancer or
// external IP to the node Route names, as a router would.
type Lab struct {
	Client *NS
	// ClientIPs are the client's addresses on the LAN; the first is the
	// one it sends from unless told otherwise.
	ClientIPs []netip.Addr
	Nodes     []*LabNode
	lan       *NS
}

// LabNode is one node of a Lab.
type LabNode struct {
	// Name and Zone are the node's Kubernetes name and zone, carried here
	// for the test to write into the Node object.
	Name, Zone string
	NS         *NS
	IP         netip.Addr
	PodCIDR    netip.Prefix
	Pods       []*NS
	PodIPs     []netip.Addr
}

// LabSpec lists the lab's addresses.
type LabSpec struct {
	// LAN is the prefix the client and the nodes share.
	LAN       netip.Prefix
	ClientIPs []string
	Nodes     []LabNodeSpec
}

// LabNodeSpec is one node: its address on the LAN, its pod range and the
// pods' addresses inside it.
type LabNodeSpec struct {
	Name, Zone, IP, PodCIDR string
	PodIPs                  []string
}

// NewLab builds the lab. Namespace names start with "cdns-" and carry a
// random part, so parallel runs do not collide.
func NewLab(t testing.TB, spec LabSpec) *Lab {
	t.Helper()
	run := RunID()
	bits := fmt.Sprint(spec.LAN.Bits())
	l := &Lab{lan: New(t, "cdns-lan-"+run+"-"), Client: New(t, "cdns-cli-"+run+"-")}
	l.lan.MustRun("ip", "link", "add", "br0", "type", "bridge")
	l.lan.MustRun("ip", "link", "set", "br0", "up")
	attach := func(ns *NS, port string) {
		Veth(t, l.lan, port, ns, "lan0")
		l.lan.MustRun("ip", "link", "set", port, "master", "br0")
	}
	attach(l.Client, "client")
	for _, ip := range spec.ClientIPs {
		l.Client.MustRun("ip", "addr", "add", ip+"/"+bits, "dev", "lan0")
		l.ClientIPs = append(l.ClientIPs, netip.MustParseAddr(ip))
	}
	for i, ns := range spec.Nodes {
		n := &LabNode{Name: ns.Name, Zone: ns.Zone, IP: netip.MustParseAddr(ns.IP), PodCIDR: netip.MustParsePrefix(ns.PodCIDR),
			NS: New(t, fmt.Sprintf("cdns-n%d-%s-", i, run))}
		attach(n.NS, fmt.Sprintf("node%d", i))
		n.NS.SetSysctl("net/ipv4/ip_forward", "1")
		n.NS.MustRun("ip", "addr", "add", ns.IP+"/"+bits, "dev", "lan0")
		n.NS.MustRun("ip", "route", "add", "default", "via", spec.ClientIPs[0], "dev", "lan0")
		for j, ip := range ns.PodIPs {
			n.Pods = append(n.Pods, addPod(t, n.NS, fmt.Sprintf("cdns-n%dp%d-%s-", i, j, run), fmt.Sprintf("pod%d", j), ip))
			n.PodIPs = append(n.PodIPs, netip.MustParseAddr(ip))
		}
		l.Nodes = append(l.Nodes, n)
	}
	for _, n := range l.Nodes {
		l.Client.MustRun("ip", "route", "add", n.PodCIDR.String(), "via", n.IP.String(), "dev", "lan0")
		for _, other := range l.Nodes {
			if other != n {
				n.NS.MustRun("ip", "route", "add", other.PodCIDR.String(), "via", other.IP.String(), "dev", "lan0")
			}
		}
	}
	return l
}

// Route makes the client send traffic for addr (a load balancer or external
// IP) to node, replacing any route it had for addr.
func (l *Lab) Route(addr netip.Addr, node *LabNode) {
	l.Client.MustRun("ip", "route", "replace", netip.PrefixFrom(addr, addr.BitLen()).String(), "via", node.IP.String(), "dev", "lan0")
}
