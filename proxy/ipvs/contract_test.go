package ipvs

import (
	"net/netip"
	"sort"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/iptables"
	"github.com/clusterdns/clusterdns/proxy/iptables/iptablestest"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
)

// contractTarget is the IPVS backend over the fake kernel and tables. It
// answers the contract's questions the way the kernel would route: the nat
// rules mark the packet, the filter rules may refuse it, IPVS picks a real
// server of the virtual server at the packet's destination (a virtual
// server without one refuses the connection), and nat POSTROUTING decides
// on masquerade.
type contractTarget struct {
	kernel *FakeKernel
	ipt    *iptables.FakeRunner
	b      *Backend
}

func newContractTarget(_ *testing.T, r proxy.Routing) pt.Target {
	c := &contractTarget{
		kernel: NewFakeKernel(map[string][]string{"eth0": {pt.NodeIP, pt.NodeIPv6, "fe80::1"}, "eth1": {pt.OtherLocalIP}}),
		ipt:    iptables.NewFakeRunner(),
	}
	c.b = New(Config{IPVS: c.kernel, Links: c.kernel, IPSets: c.kernel, Sysctl: c.kernel, Runner: c.ipt, Routing: r})
	return c
}

// Sync also checks that the count the backend reports is what the kernel
// holds: virtual and real servers.
func (c *contractTarget) Sync(t *testing.T, m *proxy.Model, full bool) proxy.SyncResult {
	t.Helper()
	res, err := c.b.Sync(t.Context(), m, full)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	table, err := ReadTable(c.kernel)
	if err != nil {
		t.Fatal(err)
	}
	held := len(table)
	for _, e := range table {
		held += len(e.Reals)
	}
	if res.Rules != held {
		t.Errorf("the backend counts %d virtual and real servers, the kernel has %d", res.Rules, held)
	}
	return res
}

// State is the whole kernel: IPVS, links, sets, settings and rules.
func (c *contractTarget) State(*testing.T) string {
	return c.kernel.Dump() + c.ipt.Dump(proxy.IPv4) + c.ipt.Dump(proxy.IPv6)
}

func (c *contractTarget) Route(t *testing.T, p pt.Packet) (pt.Route, bool) {
	local := pt.LocalAddrs()
	dummy, err := c.kernel.Addrs(DefaultDummyLink)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range dummy {
		local = append(local, a.String())
	}
	tr := iptablestest.NewTracer(t, c.ipt.Dump(p.Family()), local...)
	tr.InSet = c.inSet
	pkt := iptablestest.Packet{Src: p.Src, Dst: p.Dst, Proto: strings.ToLower(string(p.Protocol)), DPort: p.Port}

	vs, reals := c.virtualServer(t, VSKey{Protocol: string(p.Protocol), Address: netip.AddrPortFrom(p.Dst, p.Port)})
	first, filter := "PREROUTING", "FORWARD"
	switch {
	case p.FromNode:
		first, filter = "OUTPUT", "OUTPUT"
	case tr.Local(p.Dst):
		filter = "INPUT"
	}
	seen := map[string]bool{}
	for _, s := range tr.Walk("nat", first, pkt, iptablestest.State{}) {
		// The filter table sees the packet before IPVS takes it.
		rejected, dropped := false, false
		for _, f := range tr.Walk("filter", filter, pkt, iptablestest.State{}) {
			rejected = rejected || f.Reject
			dropped = dropped || f.Drop
		}
		switch {
		case dropped:
			seen[pt.Dropped] = true
			continue
		case rejected || vs != nil && len(reals) == 0:
			seen[pt.Rejected] = true
			continue
		case vs == nil:
			seen[pt.Untranslated] = true
			continue
		}
		for _, r := range reals {
			after := pkt
			after.Dst, after.DPort = r.Addr(), r.Port()
			masq := false
			for _, post := range tr.Walk("nat", "POSTROUTING", after, iptablestest.State{Mark: s.Mark}) {
				masq = masq || post.Masq
			}
			out := r.String()
			if masq {
				out += " masq"
			}
			seen[out] = true
		}
	}
	route := pt.Route{}
	for o := range seen {
		route.Outcomes = append(route.Outcomes, o)
	}
	sort.Strings(route.Outcomes)
	if vs != nil {
		route.Affinity = int(vs.Persistence)
	}
	return route, true
}

// virtualServer returns the virtual server at key, nil for none, and the
// real servers it schedules to (weight above zero).
func (c *contractTarget) virtualServer(t *testing.T, key VSKey) (*VirtualServer, []netip.AddrPort) {
	vss, err := c.kernel.VirtualServers()
	if err != nil {
		t.Fatal(err)
	}
	for _, vs := range vss {
		if vs.Key() != key {
			continue
		}
		reals, err := c.kernel.RealServers(key)
		if err != nil {
			t.Fatal(err)
		}
		var out []netip.AddrPort
		for _, r := range reals {
			if r.Weight > 0 {
				out = append(out, r.Address)
			}
		}
		return &vs, out
	}
	return nil, nil
}

// inSet answers "-m set --match-set NAME DIRS" from the fake's sets: each
// direction picks the packet's source or destination for one part of a
// member (address, protocol:port, second address).
func (c *contractTarget) inSet(name, dirs string, p iptablestest.Packet) bool {
	members, err := c.kernel.Members(name)
	if err != nil {
		return false
	}
	d := strings.Split(dirs, ",")
	addr := func(dir string) netip.Addr {
		if dir == "src" {
			return p.Src
		}
		return p.Dst
	}
	for _, m := range members {
		if m.IP != addr(d[0]) {
			continue
		}
		if len(d) > 1 && (d[1] != "dst" || m.Protocol != p.Proto || m.Port != p.DPort) {
			continue
		}
		if len(d) > 2 && !(m.NetBits == 0 && m.IP2 == addr(d[2]) || m.NetBits != 0 && m.Net().Contains(addr(d[2]))) {
			continue
		}
		return true
	}
	return false
}

func TestContract(t *testing.T) {
	pt.RunDeviating(t, newContractTarget, pt.Gaps{
		pt.FeatureShortCircuit: "a virtual server has one list of real servers for every client: pods and the node reach only the local endpoints of an externalTrafficPolicy Local Service while the node has some",
	}, pt.Deviations{
		// kube-proxy's IPVS mode keeps the virtual server without real
		// servers and IPVS refuses; e2e TestProxyLabIPVS checks it does.
		"internal-traffic-local/no local endpoint: dropped": pt.Rejects(),
	})
}
