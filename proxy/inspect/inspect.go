// Package inspect compares what a node's kernel routes for a Service with
// what the rule model says the node should route. Each backend reads its own
// kernel state back into a Kernel (proxy/iptables, proxy/nftables,
// proxy/ipvs: ReadKernel); this package only compares, so that "in sync" and
// "exactly what differs" mean the same in every mode.
//
// It reads and never writes: nothing here may change the kernel or the
// model.
package inspect

import (
	"net/netip"
	"slices"
	"strconv"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/zone"
)

// Frontend is an address and port clients send to: a cluster IP, an
// external IP or a load balancer IP with a Service port, or a node port on
// the unspecified address of its family (0.0.0.0 or ::: any local address).
type Frontend struct {
	Addr     netip.Addr
	Protocol zone.Protocol
	Port     uint16
}

// String is "10.0.0.1:80/TCP", or "node port 30080/TCP".
func (f Frontend) String() string {
	if f.Addr.IsUnspecified() {
		return "node port " + strconv.Itoa(int(f.Port)) + "/" + string(f.Protocol)
	}
	return netip.AddrPortFrom(f.Addr, f.Port).String() + "/" + string(f.Protocol)
}

// Kernel is what one node's kernel does with traffic to service addresses,
// as read back from it.
type Kernel struct {
	// Mode is the proxy mode the rules were found in: iptables, nftables or
	// ipvs.
	Mode string
	// Endpoints maps every frontend the mode routes to the endpoints a new
	// connection to it may reach, sorted. An empty list means the frontend is
	// known and rejected (a Service port without endpoints).
	Endpoints map[Frontend][]netip.AddrPort
	// NoNodePorts is set by a read-back that cannot tell node ports from
	// other frontends (IPVS: a virtual server per node address), so node
	// ports are not compared.
	NoNodePorts bool
	// ExternalOwnList is set when the mode sends external traffic only to
	// the external list (IPVS, whose short-circuit for the node's and
	// pods' traffic under externalTrafficPolicy Local is in other rules),
	// rather than behind the frontend to both lists.
	ExternalOwnList bool
}

// Add records one endpoint (or, when ep is not valid, only the frontend)
// while a backend reads its rules back.
func (k *Kernel) Add(f Frontend, ep netip.AddrPort) {
	if k.Endpoints == nil {
		k.Endpoints = make(map[Frontend][]netip.AddrPort)
	}
	eps := k.Endpoints[f]
	if ep.IsValid() && !slices.Contains(eps, ep) {
		eps = append(eps, ep)
		slices.SortFunc(eps, func(a, b netip.AddrPort) int { return a.Compare(b) })
	}
	k.Endpoints[f] = eps
}

// NodePortFrontend is the frontend of a node port in family f.
func NodePortFrontend(f proxy.Family, protocol zone.Protocol, port uint16) Frontend {
	a := netip.IPv4Unspecified()
	if f == proxy.IPv6 {
		a = netip.IPv6Unspecified()
	}
	return Frontend{Addr: a, Protocol: protocol, Port: port}
}

// The kinds of frontend a Service port has.
const (
	KindClusterIP      = "clusterIP"
	KindExternalIP     = "externalIP"
	KindLoadBalancerIP = "loadBalancerIP"
	KindNodePort       = "nodePort"
)

// Port is one Service port on one of its frontends: the endpoints the model
// wants this node to send to, and those the kernel sends to.
type Port struct {
	Frontend Frontend
	// Kind is KindClusterIP, KindExternalIP, KindLoadBalancerIP or
	// KindNodePort; empty for a stale frontend.
	Kind string
	// ServicePort is the Service's port number (Frontend.Port but for a
	// node port).
	ServicePort uint16
	// Name is the Service port's name, empty for a single unnamed port.
	Name string
	// Want is nil for a frontend the kernel routes but the Service no
	// longer has (Stale).
	Want   []netip.AddrPort
	Kernel []netip.AddrPort
	// Programmed is whether the kernel has the frontend at all.
	Programmed bool
	// Stale marks a frontend on one of the Service's addresses that the
	// model does not have: rules left behind.
	Stale bool
	// Missing are wanted endpoints the kernel lacks; Extra those it sends to
	// and should not.
	Missing, Extra []netip.AddrPort
}

// InSync reports whether the kernel does exactly what the model says.
func (p *Port) InSync() bool {
	return p.Programmed && !p.Stale && len(p.Missing) == 0 && len(p.Extra) == 0
}

// Label is "80/TCP", the port as the explain output names it.
func (p *Port) Label() string {
	return strconv.Itoa(int(p.Frontend.Port)) + "/" + string(p.Frontend.Protocol)
}

// Differences says, one sentence each, how the kernel differs from the
// model; nil when in sync.
func (p *Port) Differences() []string {
	f := p.Frontend.String()
	switch {
	case p.Stale:
		return []string{"the kernel still routes " + f + ", which the model does not have (stale rules)"}
	case !p.Programmed:
		return []string{"the kernel has no rules for " + f}
	}
	var out []string
	for _, ep := range p.Missing {
		out = append(out, f+": the kernel does not send to "+ep.String())
	}
	for _, ep := range p.Extra {
		out = append(out, f+": the kernel still sends to "+ep.String()+", which the model does not send to")
	}
	return out
}

// Compare lines up the model's ports of one Service with the kernel: each
// port on its cluster IP, then its external IPs, load balancer IPs and node
// port. addrs are the addresses to look for stale frontends on: the
// Service's cluster IPs and external addresses, or the address asked about
// when the Service is gone. want may be empty (a Service the model does not
// have). Ports come in the model's order, then stale ones by frontend.
//
// External traffic may reach two lists (with externalTrafficPolicy Local,
// the node's own endpoints for outside clients and the cluster's for the
// node and its pods); the kernel holds both behind the frontend, so the
// wanted list is their union.
func Compare(want []*proxy.ServicePort, addrs []netip.Addr, k *Kernel) []Port {
	var out []Port
	seen := make(map[Frontend]bool)
	add := func(sp *proxy.ServicePort, f Frontend, kind string, eps []netip.AddrPort) {
		seen[f] = true
		got, ok := k.Endpoints[f]
		p := Port{Frontend: f, Kind: kind, ServicePort: sp.Port, Name: sp.Key.Port, Want: nonNil(eps), Kernel: nonNil(got), Programmed: ok}
		if ok {
			p.Missing, p.Extra = diff(p.Want, p.Kernel)
		}
		out = append(out, p)
	}
	for _, sp := range want {
		add(sp, Frontend{Addr: sp.ClusterIP, Protocol: sp.Protocol, Port: sp.Port}, KindClusterIP, sp.Endpoints)
		if !sp.External() {
			continue
		}
		ext := externalWant(sp, k.ExternalOwnList)
		for _, ip := range sp.ExternalIPs {
			add(sp, Frontend{Addr: ip, Protocol: sp.Protocol, Port: sp.Port}, KindExternalIP, ext)
		}
		for _, ip := range sp.LoadBalancerIPs {
			add(sp, Frontend{Addr: ip, Protocol: sp.Protocol, Port: sp.Port}, KindLoadBalancerIP, ext)
		}
		if sp.NodePort != 0 && !k.NoNodePorts {
			add(sp, NodePortFrontend(sp.Key.Family, sp.Protocol, sp.NodePort), KindNodePort, ext)
		}
	}
	var stale []Port
	for f, got := range k.Endpoints {
		if seen[f] || !slices.Contains(addrs, f.Addr) {
			continue
		}
		stale = append(stale, Port{Frontend: f, Kernel: nonNil(got), Programmed: true, Stale: true})
	}
	slices.SortFunc(stale, func(a, b Port) int { return compareFrontends(a.Frontend, b.Frontend) })
	return append(out, stale...)
}

// ForService returns the model's ports of one Service, in the model's order.
func ForService(m *proxy.Model, svc zone.Key) []*proxy.ServicePort {
	var out []*proxy.ServicePort
	for _, p := range m.Ports {
		if p.Key.Service == svc {
			out = append(out, p)
		}
	}
	return out
}

// externalWant is where external traffic to sp may go from this node: the
// external endpoints and, with externalTrafficPolicy Local, the cluster
// ones its own and its pods' traffic goes to; sorted, each once. With
// ownList, only the external endpoints, or the cluster ones when the node
// has none (the mode then drops outside traffic by other rules).
func externalWant(sp *proxy.ServicePort, ownList bool) []netip.AddrPort {
	eps := sp.ExternalEndpoints
	if ownList {
		if len(eps) == 0 && sp.HasEndpoints() {
			return sp.ClusterEndpoints
		}
		return eps
	}
	if eps == nil && !sp.ExternalLocal {
		// A port built by hand may leave the external list out.
		eps = sp.Endpoints
	}
	if len(sp.ClusterEndpoints) == 0 {
		return eps
	}
	out := slices.Concat(eps, sp.ClusterEndpoints)
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return slices.Compact(out)
}

func compareFrontends(a, b Frontend) int {
	if c := a.Addr.Compare(b.Addr); c != 0 {
		return c
	}
	if a.Protocol != b.Protocol {
		if a.Protocol < b.Protocol {
			return -1
		}
		return 1
	}
	return int(a.Port) - int(b.Port)
}

// diff returns what is in want and not in got, and what is in got and not
// in want; both inputs are sorted.
func diff(want, got []netip.AddrPort) (missing, extra []netip.AddrPort) {
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			extra = append(extra, g)
		}
	}
	return missing, extra
}

// nonNil keeps an empty list empty rather than nil, so that JSON shows [].
func nonNil(eps []netip.AddrPort) []netip.AddrPort {
	if eps == nil {
		return []netip.AddrPort{}
	}
	return eps
}
