package netns

import (
	"fmt"
	"net/netip"
	"testing"
)

// Topology is one node with pods and an outside client, like a Kubernetes
// node seen from one side:
//
//	client (ClientIP) ---- node (NodeIP) ---- pod i (PodIPs[i]), one veth each
//
// The node routes between them (ip_forward on). Each pod link is
// point-to-point: the pod has its /32 address and a default route via
// GatewayIP, an address the node holds on every pod link, and the node has a
// /32 route per pod. The node's default route leads to the client, so
// packets to virtual addresses (cluster IPs) have somewhere to go before
// they are translated, and nowhere outside the test. The client knows only
// the node's link.
type Topology struct {
	Node   *NS
	Client *NS
	Pods   []*NS
	// PodIPs[i] is the address of Pods[i].
	PodIPs   []netip.Addr
	NodeIP   netip.Addr
	ClientIP netip.Addr
}

// GatewayIP is the node's address on every pod link; GatewayIP6 is its
// IPv6 one, link-local like the gateways of CNI plugins.
const (
	GatewayIP  = "169.254.1.1"
	GatewayIP6 = "fe80::1"
)

// TopologySpec lists the addresses to use.
type TopologySpec struct {
	PodIPs []string
	// NodeIP and ClientIP share a /24 on the node-client link.
	NodeIP, ClientIP string
}

// NewTopology builds the namespaces and links. Namespace names start with
// "cdns-" and carry a random part, so parallel runs do not collide.
func NewTopology(t testing.TB, spec TopologySpec) *Topology {
	t.Helper()
	run := RunID()
	topo := &Topology{
		Node:     New(t, "cdns-node-"+run+"-"),
		Client:   New(t, "cdns-client-"+run+"-"),
		NodeIP:   netip.MustParseAddr(spec.NodeIP),
		ClientIP: netip.MustParseAddr(spec.ClientIP),
	}
	node := topo.Node
	node.SetSysctl("net/ipv4/ip_forward", "1")

	Veth(t, node, "to-client", topo.Client, "eth0")
	node.MustRun("ip", "addr", "add", spec.NodeIP+"/24", "dev", "to-client")
	topo.Client.MustRun("ip", "addr", "add", spec.ClientIP+"/24", "dev", "eth0")
	node.MustRun("ip", "route", "add", "default", "via", spec.ClientIP, "dev", "to-client")

	for i, ip := range spec.PodIPs {
		pod := addPod(t, node, fmt.Sprintf("cdns-pod%d-%s-", i, run), fmt.Sprintf("pod%d", i), ip)
		topo.Pods = append(topo.Pods, pod)
		topo.PodIPs = append(topo.PodIPs, netip.MustParseAddr(ip))
	}
	return topo
}

// addPod creates a pod namespace with address ip on a point-to-point link
// to node (hostSide is the link's name on the node): the pod reaches
// everything through GatewayIP, the node reaches the pod by a /32 route.
func addPod(t testing.TB, node *NS, prefix, hostSide, ip string) *NS {
	t.Helper()
	pod := New(t, prefix)
	Veth(t, node, hostSide, pod, "eth0")
	node.MustRun("ip", "addr", "add", GatewayIP+"/32", "dev", hostSide)
	node.MustRun("ip", "route", "add", ip+"/32", "dev", hostSide)
	pod.MustRun("ip", "addr", "add", ip+"/32", "dev", "eth0")
	pod.MustRun("ip", "route", "add", GatewayIP+"/32", "dev", "eth0")
	pod.MustRun("ip", "route", "add", "default", "via", GatewayIP, "dev", "eth0")
	return pod
}

// addPod6 gives a pod made by addPod the IPv6 address ip on the same link:
// the pod reaches everything through GatewayIP6, the node reaches the pod
// by a /128 route.
func addPod6(node *NS, hostSide string, pod *NS, ip string) {
	// nodad: both addresses are usable at once instead of after duplicate
	// address detection; nothing else on the link holds them.
	node.MustRun("ip", "addr", "add", GatewayIP6+"/64", "dev", hostSide, "nodad")
	node.MustRun("ip", "-6", "route", "add", ip+"/128", "dev", hostSide)
	pod.MustRun("ip", "addr", "add", ip+"/128", "dev", "eth0", "nodad")
	pod.MustRun("ip", "-6", "route", "add", "default", "via", GatewayIP6, "dev", "eth0")
}
