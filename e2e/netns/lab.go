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
//
// With LabSpec.LAN6 the lab is dual-stack: the same links and routes again
// in IPv6, with unique local addresses (there is no route out either way).
type Lab struct {
	Client *NS
	// ClientIPs are the client's addresses on the LAN; the first is the
	// one it sends from unless told otherwise. ClientIPs6 are its IPv6
	// ones, in a dual-stack lab.
	ClientIPs, ClientIPs6 []netip.Addr
	Nodes                 []*LabNode
	lan                   *NS
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
	// IP6, PodCIDR6 and PodIPs6 are the IPv6 counterparts in a dual-stack
	// lab (zero otherwise); PodIPs6[i] belongs to Pods[i].
	IP6      netip.Addr
	PodCIDR6 netip.Prefix
	PodIPs6  []netip.Addr
}

// LabSpec lists the lab's addresses.
type LabSpec struct {
	// LAN is the prefix the client and the nodes share.
	LAN       netip.Prefix
	ClientIPs []string
	Nodes     []LabNodeSpec
	// LAN6, when set, makes the lab dual-stack: the client and the nodes
	// share it as well, and every node and pod needs its IPv6 fields.
	LAN6       netip.Prefix
	ClientIPs6 []string
}

// LabNodeSpec is one node: its address on the LAN, its pod range and the
// pods' addresses inside it, and in a dual-stack lab the same in IPv6.
type LabNodeSpec struct {
	Name, Zone, IP, PodCIDR string
	PodIPs                  []string
	IP6, PodCIDR6           string
	PodIPs6                 []string
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
	dual := spec.LAN6.IsValid()
	bits6 := fmt.Sprint(spec.LAN6.Bits())
	for _, ip := range spec.ClientIPs {
		l.Client.MustRun("ip", "addr", "add", ip+"/"+bits, "dev", "lan0")
		l.ClientIPs = append(l.ClientIPs, netip.MustParseAddr(ip))
	}
	for i, ip := range spec.ClientIPs6 {
		// nodad: the address is usable at once instead of after duplicate
		// address detection, and nothing else on the LAN holds it.
		args := []string{"ip", "addr", "add", ip + "/" + bits6, "dev", "lan0", "nodad"}
		if i > 0 {
			// Deprecated, so that the client sends from the first address
			// unless told otherwise, as in IPv4 (where the kernel picks the
			// primary address; in IPv6 it would pick the latest).
			args = append(args, "preferred_lft", "0")
		}
		l.Client.MustRun(args...)
		l.ClientIPs6 = append(l.ClientIPs6, netip.MustParseAddr(ip))
	}
	for i, ns := range spec.Nodes {
		n := &LabNode{Name: ns.Name, Zone: ns.Zone, IP: netip.MustParseAddr(ns.IP), PodCIDR: netip.MustParsePrefix(ns.PodCIDR),
			NS: New(t, fmt.Sprintf("cdns-n%d-%s-", i, run))}
		attach(n.NS, fmt.Sprintf("node%d", i))
		n.NS.SetSysctl("net/ipv4/ip_forward", "1")
		n.NS.MustRun("ip", "addr", "add", ns.IP+"/"+bits, "dev", "lan0")
		n.NS.MustRun("ip", "route", "add", "default", "via", spec.ClientIPs[0], "dev", "lan0")
		if dual {
			n.IP6, n.PodCIDR6 = netip.MustParseAddr(ns.IP6), netip.MustParsePrefix(ns.PodCIDR6)
			n.NS.SetSysctl("net/ipv6/conf/all/forwarding", "1")
			n.NS.MustRun("ip", "addr", "add", ns.IP6+"/"+bits6, "dev", "lan0", "nodad")
			n.NS.MustRun("ip", "-6", "route", "add", "default", "via", spec.ClientIPs6[0], "dev", "lan0")
		}
		for j, ip := range ns.PodIPs {
			hostSide := fmt.Sprintf("pod%d", j)
			pod := addPod(t, n.NS, fmt.Sprintf("cdns-n%dp%d-%s-", i, j, run), hostSide, ip)
			n.Pods = append(n.Pods, pod)
			n.PodIPs = append(n.PodIPs, netip.MustParseAddr(ip))
			if dual {
				addPod6(n.NS, hostSide, pod, ns.PodIPs6[j])
				n.PodIPs6 = append(n.PodIPs6, netip.MustParseAddr(ns.PodIPs6[j]))
			}
		}
		l.Nodes = append(l.Nodes, n)
	}
	for _, n := range l.Nodes {
		l.Client.MustRun("ip", "route", "add", n.PodCIDR.String(), "via", n.IP.String(), "dev", "lan0")
		if dual {
			l.Client.MustRun("ip", "-6", "route", "add", n.PodCIDR6.String(), "via", n.IP6.String(), "dev", "lan0")
		}
		for _, other := range l.Nodes {
			if other != n {
				n.NS.MustRun("ip", "route", "add", other.PodCIDR.String(), "via", other.IP.String(), "dev", "lan0")
				if dual {
					n.NS.MustRun("ip", "-6", "route", "add", other.PodCIDR6.String(), "via", other.IP6.String(), "dev", "lan0")
				}
			}
		}
	}
	return l
}

// Route makes the client send traffic for addr (a load balancer or external
// IP) to node, replacing any route it had for addr; an IPv6 addr goes to
// the node's IPv6 address.
func (l *Lab) Route(addr netip.Addr, node *LabNode) {
	via := node.IP
	if addr.Is6() {
		via = node.IP6
	}
	l.Client.MustRun("ip", "route", "replace", netip.PrefixFrom(addr, addr.BitLen()).String(), "via", via.String(), "dev", "lan0")
}

// NodeIP returns the node's address in the family of like.
func (n *LabNode) NodeIP(like netip.Addr) netip.Addr {
	if like.Is6() {
		return n.IP6
	}
	return n.IP
}
