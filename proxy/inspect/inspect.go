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

// Frontend is an address and port clients send to: a cluster IP or an
// external IP with a Service port.
type Frontend struct {
	Addr     netip.Addr
	Protocol zone.Protocol
	Port     uint16
}

// String is "10.0.0.1:80/TCP".
func (f Frontend) String() string {
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

// Port is one Service port on one cluster IP: the endpoints the model wants
// this node to send to, and those the kernel sends to.
type Port struct {
	Frontend Frontend
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

// Compare lines up the model's ports of one Service with the kernel. addrs
// are the addresses to look for stale frontends on: the Service's cluster
// IPs, or the address asked about when the Service is gone. want may be
// empty (a Service the model does not have). Ports come in the model's
// order, then stale ones by frontend.
func Compare(want []*proxy.ServicePort, addrs []netip.Addr, k *Kernel) []Port {
	var out []Port
	seen := make(map[Frontend]bool)
	for _, sp := range want {
		f := Frontend{Addr: sp.ClusterIP, Protocol: sp.Protocol, Port: sp.Port}
		seen[f] = true
		got, ok := k.Endpoints[f]
		p := Port{Frontend: f, Name: sp.Key.Port, Want: nonNil(sp.Endpoints), Kernel: nonNil(got), Programmed: ok}
		if ok {
			p.Missing, p.Extra = diff(p.Want, p.Kernel)
		}
		out = append(out, p)
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
