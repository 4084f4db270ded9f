package proxy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"testing"

	"github.com/clusterdns/clusterdns/zone"
)

func ep(addrs ...string) []zone.Endpoint {
	var out []zone.Endpoint
	for _, a := range addrs {
		out = append(out, zone.Endpoint{Addresses: []netip.Addr{netip.MustParseAddr(a)}, Ready: true, Serving: true})
	}
	return out
}

func snapshot(services []*zone.Service, slices ...*zone.EndpointSlice) *zone.Cluster {
	b := zone.NewBuilder()
	for _, s := range services {
		b.SetService(s)
	}
	for _, s := range slices {
		b.SetSlice(s)
	}
	return b.Snapshot()
}

func TestBuildModel(t *testing.T) {
	web := &zone.Service{
		Key: zone.Key{Namespace: "dev", Name: "web"}, Type: zone.TypeNodePort,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
		Ports: []zone.ServicePort{
			{Name: "http", Protocol: zone.ProtocolTCP, Port: 80, TargetPort: 8080, NodePort: 30080},
			{Name: "dns", Protocol: zone.ProtocolUDP, Port: 53, TargetPort: 53},
		},
		AffinityTimeout: 10800,
	}
	headless := &zone.Service{Key: zone.Key{Namespace: "dev", Name: "headless"}, Headless: true,
		Ports: []zone.ServicePort{{Protocol: zone.ProtocolTCP, Port: 80}}}
	external := &zone.Service{Key: zone.Key{Namespace: "dev", Name: "ext"}, Type: zone.TypeExternalName, ExternalName: "example.com"}
	v4 := &zone.EndpointSlice{
		Key: zone.Key{Namespace: "dev", Name: "web-a"}, Service: "web", AddressType: zone.AddressIPv4,
		Ports: []zone.EndpointPort{{Name: "http", Protocol: zone.ProtocolTCP, Port: 8080}},
		Endpoints: append(ep("172.16.0.2", "172.16.0.1", "172.16.0.1"),
			zone.Endpoint{Addresses: []netip.Addr{netip.MustParseAddr("172.16.0.3")}}, // not ready
			zone.Endpoint{Addresses: []netip.Addr{netip.MustParseAddr("172.16.0.4")}, Serving: true, Terminating: true}),
	}
	v6 := &zone.EndpointSlice{
		Key: zone.Key{Namespace: "dev", Name: "web-b"}, Service: "web", AddressType: zone.AddressIPv6,
		Ports:     []zone.EndpointPort{{Name: "http", Protocol: zone.ProtocolTCP, Port: 8080}, {Name: "dns", Protocol: zone.ProtocolUDP, Port: 5353}},
		Endpoints: ep("fd00::10"),
	}
	m := BuildModel(nil, snapshot([]*zone.Service{web, headless, external}, v4, v6))

	var keys []string
	for _, p := range m.Ports {
		keys = append(keys, p.Key.String()+"/"+p.Key.Family.String())
	}
	want := []string{"dev/web:dns/IPv4", "dev/web:dns/IPv6", "dev/web:http/IPv4", "dev/web:http/IPv6"}
	if !slices.Equal(keys, want) {
		t.Fatalf("ports %v, want %v", keys, want)
	}
	http4 := m.Lookup(PortKey{Service: web.Key, Port: "http", Family: IPv4})
	if got := http4.Endpoints; !slices.Equal(got, []netip.AddrPort{netip.MustParseAddrPort("172.16.0.1:8080"), netip.MustParseAddrPort("172.16.0.2:8080")}) {
		t.Errorf("http IPv4 endpoints %v: want the ready ones, sorted, once each", got)
	}
	if http4.NodePort != 30080 || http4.AffinitySeconds != 10800 || http4.ClusterIP != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("http IPv4 port %+v", http4)
	}
	if got := m.Lookup(PortKey{Service: web.Key, Port: "dns", Family: IPv4}).Endpoints; len(got) != 0 {
		t.Errorf("dns IPv4 has endpoints %v although the IPv4 slice does not declare the port", got)
	}
	if got := m.Lookup(PortKey{Service: web.Key, Port: "dns", Family: IPv6}).Endpoints; !slices.Equal(got, []netip.AddrPort{netip.MustParseAddrPort("[fd00::10]:5353")}) {
		t.Errorf("dns IPv6 endpoints %v", got)
	}

	// With no ready endpoint, the serving terminating ones take over. (A
	// source never edits an object a snapshot holds: a change is a new one.)
	changed := *v4
	changed.Endpoints = v4.Endpoints[3:]
	m2 := BuildModel(m, snapshot([]*zone.Service{web, headless, external}, &changed, v6))
	if got := m2.Lookup(http4.Key).Endpoints; !slices.Equal(got, []netip.AddrPort{netip.MustParseAddrPort("172.16.0.4:8080")}) {
		t.Errorf("fallback endpoints %v, want the terminating serving one", got)
	}
	// The new model shares unchanged ports and lists the changed one.
	if m2.BaseID != m.ID || !slices.Equal(m2.Changes, []PortKey{http4.Key}) {
		t.Errorf("changes %v (base %d, want %d)", m2.Changes, m2.BaseID, m.ID)
	}
	dns6 := PortKey{Service: web.Key, Port: "dns", Family: IPv6}
	if m2.Lookup(dns6) != m.Lookup(dns6) {
		t.Error("an unchanged port was not shared with the previous model")
	}
	// Removing the Service lists all its ports as changed.
	m3 := BuildModel(m2, snapshot(nil))
	if len(m3.Ports) != 0 || len(m3.Changes) != 4 {
		t.Errorf("after removal: %d ports, changes %v", len(m3.Ports), m3.Changes)
	}
}

func TestStaleUDPFlows(t *testing.T) {
	dns := func(eps ...string) *ServicePort {
		p := &ServicePort{Key: PortKey{Service: zone.Key{Namespace: "kube-system", Name: "dns"}, Port: "dns"}, Protocol: zone.ProtocolUDP,
			ClusterIP: netip.MustParseAddr("10.0.0.10"), Port: 53, NodePort: 30053}
		for _, e := range eps {
			p.Endpoints = append(p.Endpoints, netip.MustParseAddrPort(e))
		}
		return p
	}
	web := &ServicePort{Key: PortKey{Service: zone.Key{Namespace: "dev", Name: "web"}}, Protocol: zone.ProtocolTCP,
		ClusterIP: netip.MustParseAddr("10.0.0.1"), Port: 80, Endpoints: []netip.AddrPort{netip.MustParseAddrPort("172.16.0.1:80")}}
	webGone := *web
	webGone.Endpoints = nil
	svc := netip.MustParseAddrPort("10.0.0.10:53")
	// An eTP Local load balancer whose local endpoint is the first, the
	// second elsewhere: losing the remote one matters to pods only.
	lbSvc := netip.MustParseAddrPort("10.0.0.20:53")
	lb := func(eps ...string) *ServicePort {
		p := &ServicePort{Key: PortKey{Service: zone.Key{Namespace: "dev", Name: "lb"}}, Protocol: zone.ProtocolUDP,
			ClusterIP: lbSvc.Addr(), Port: 53, LoadBalancerIPs: []netip.Addr{netip.MustParseAddr("203.0.113.9")}, ExternalLocal: true,
			ExternalEndpoints: []netip.AddrPort{netip.MustParseAddrPort(eps[0])}}
		for _, e := range eps {
			p.ClusterEndpoints = append(p.ClusterEndpoints, netip.MustParseAddrPort(e))
		}
		return p
	}
	cases := []struct {
		name          string
		before, after []*ServicePort
		want          []StaleFlow
	}{
		{"endpoint removed", []*ServicePort{dns("172.16.0.1:53", "172.16.0.2:53")}, []*ServicePort{dns("172.16.0.2:53")},
			[]StaleFlow{{Service: svc, NodePort: 30053, Endpoint: netip.MustParseAddrPort("172.16.0.1:53")}}},
		{"endpoint added", []*ServicePort{dns("172.16.0.1:53")}, []*ServicePort{dns("172.16.0.1:53", "172.16.0.2:53")}, nil},
		{"first endpoints", []*ServicePort{dns()}, []*ServicePort{dns("172.16.0.1:53")}, []StaleFlow{{Service: svc, NodePort: 30053}}},
		{"service removed", []*ServicePort{dns("172.16.0.1:53")}, nil,
			[]StaleFlow{{Service: svc, NodePort: 30053, Endpoint: netip.MustParseAddrPort("172.16.0.1:53")}}},
		{"TCP is left alone", []*ServicePort{web}, []*ServicePort{&webGone}, nil},
		{"external endpoint removed", []*ServicePort{lb("172.16.0.1:53", "172.16.0.2:53")}, []*ServicePort{lb("172.16.0.1:53")},
			[]StaleFlow{{Service: lbSvc, External: []netip.Addr{netip.MustParseAddr("203.0.113.9")}, Endpoint: netip.MustParseAddrPort("172.16.0.2:53")}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := StaleUDPFlows(NewModel(nil, tc.before), NewModel(nil, tc.after))
			if !slices.EqualFunc(got, tc.want, func(a, b StaleFlow) bool {
				return a.Service == b.Service && a.NodePort == b.NodePort && a.Endpoint == b.Endpoint && slices.Equal(a.External, b.External)
			}) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestStaleFilterMatches(t *testing.T) {
	ap := netip.MustParseAddrPort
	f := staleFilter{
		{Service: ap("10.0.0.10:53"), NodePort: 30053, Endpoint: ap("172.16.0.1:53")},
		{Service: ap("10.0.0.11:53")},
		{Service: ap("10.0.0.20:53"), External: []netip.Addr{netip.MustParseAddr("203.0.113.9")}, Endpoint: ap("172.16.0.2:53")},
	}
	cases := []struct {
		origDst, replySrc string
		want              bool
	}{
		{"10.0.0.10:53", "172.16.0.1:53", true},      // to the removed endpoint
		{"10.0.0.10:53", "172.16.0.2:53", false},     // to one that stays
		{"192.168.1.5:30053", "172.16.0.1:53", true}, // via the node port
		{"10.0.0.99:53", "172.16.0.1:53", false},     // another service
		{"10.0.0.11:53", "10.0.0.11:53", true},       // untranslated, service now has endpoints
		{"10.0.0.11:53", "172.16.0.7:53", false},     // translated flow of that service
		{"203.0.113.9:53", "172.16.0.2:53", true},    // via a load balancer IP
		{"203.0.113.9:54", "172.16.0.2:53", false},   // another port of it
	}
	for _, tc := range cases {
		if got := f.matches(ap(tc.origDst), ap(tc.replySrc)); got != tc.want {
			t.Errorf("flow to %s answered by %s: match %v, want %v", tc.origDst, tc.replySrc, got, tc.want)
		}
	}
}

// A model built from the previous one equals one built from scratch, and its
// Changes are exactly the ports that differ, whatever changed in between.
func TestIncrementalModelMatchesFullBuild(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	b := zone.NewBuilder()
	key := func(i int) zone.Key { return zone.Key{Namespace: "ns", Name: fmt.Sprintf("s%d", i)} }
	service := func(i int) *zone.Service {
		s := &zone.Service{Key: key(i), Type: zone.TypeClusterIP,
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, 0, byte(i)})},
			Ports:      []zone.ServicePort{{Name: "a", Protocol: zone.ProtocolTCP, Port: 80}}}
		switch rng.IntN(5) {
		case 0:
			s.Headless, s.ClusterIPs = true, nil
		case 1:
			s.Ports = append(s.Ports, zone.ServicePort{Name: "b", Protocol: zone.ProtocolUDP, Port: 53})
		case 2:
			s.ClusterIPs = append(s.ClusterIPs, netip.MustParseAddr(fmt.Sprintf("fd00::%x", i)))
		case 3:
			s.AffinityTimeout = int32(rng.IntN(3)) * 100
		}
		return s
	}
	slice := func(i int) *zone.EndpointSlice {
		s := &zone.EndpointSlice{Key: zone.Key{Namespace: "ns", Name: fmt.Sprintf("s%d-x", i)}, Service: fmt.Sprintf("s%d", i),
			AddressType: zone.AddressIPv4, Ports: []zone.EndpointPort{{Name: "a", Protocol: zone.ProtocolTCP, Port: 8080}, {Name: "b", Protocol: zone.ProtocolUDP, Port: 5353}}}
		for j := 0; j < rng.IntN(4); j++ {
			s.Endpoints = append(s.Endpoints, zone.Endpoint{Addresses: []netip.Addr{netip.AddrFrom4([4]byte{172, 16, 0, byte(rng.IntN(8))})}, Ready: rng.IntN(4) > 0})
		}
		return s
	}
	var prev *Model
	for step := 0; step < 400; step++ {
		i := rng.IntN(30)
		switch rng.IntN(6) {
		case 0, 1:
			b.SetService(service(i))
		case 2, 3:
			b.SetSlice(slice(i))
		case 4:
			b.DeleteService(key(i))
		case 5:
			b.DeleteSlice(zone.Key{Namespace: "ns", Name: fmt.Sprintf("s%d-x", i)})
		}
		if rng.IntN(8) == 0 {
			// A snapshot the agent never built a model for: the next
			// model cannot go by the changes of one snapshot alone.
			b.Snapshot()
			b.SetSlice(slice(rng.IntN(30)))
		}
		c := b.Snapshot()
		inc, full := BuildModel(prev, c), BuildModel(nil, c)
		if len(inc.Ports) != len(full.Ports) {
			t.Fatalf("step %d: %d ports, a full build has %d", step, len(inc.Ports), len(full.Ports))
		}
		for j, p := range full.Ports {
			if !inc.Ports[j].Equal(p) || inc.Lookup(p.Key) != inc.Ports[j] {
				t.Fatalf("step %d: port %d is %+v, a full build has %+v", step, j, inc.Ports[j], p)
			}
		}
		if prev != nil {
			var want []PortKey
			for _, p := range full.Ports {
				if !prev.Lookup(p.Key).Equal(p) {
					want = append(want, p.Key)
				}
			}
			for _, p := range prev.Ports {
				if full.Lookup(p.Key) == nil {
					want = append(want, p.Key)
				}
			}
			sort.Slice(want, func(i, j int) bool { return want[i].less(want[j]) })
			if inc.BaseID != prev.ID || !slices.Equal(inc.Changes, want) {
				t.Fatalf("step %d: changes %v, want %v", step, inc.Changes, want)
			}
			for _, p := range inc.Ports {
				if old := prev.Lookup(p.Key); old.Equal(p) && old != p {
					t.Fatalf("step %d: unchanged port %v not shared with the previous model", step, p.Key)
				}
			}
		}
		prev = inc
	}
}

// TestServiceAlias checks that the node-local DNS address becomes an
// external IP of the named Service's ports of its family, and of no other
// Service's, and that a model with another alias is rebuilt.
func TestServiceAlias(t *testing.T) {
	dnsKey := zone.Key{Namespace: "kube-system", Name: "kube-dns"}
	svc := func(k zone.Key, ips ...string) *zone.Service {
		s := &zone.Service{Key: k, Ports: []zone.ServicePort{{Name: "dns", Protocol: zone.ProtocolUDP, Port: 53, TargetPort: 53}}}
		for _, ip := range ips {
			s.ClusterIPs = append(s.ClusterIPs, netip.MustParseAddr(ip))
		}
		return s
	}
	c := snapshot([]*zone.Service{svc(dnsKey, "10.96.0.10", "fd00::a"), svc(zone.Key{Namespace: "dev", Name: "web"}, "10.96.0.20")})
	alias := ServiceAlias{Service: dnsKey, Addr: netip.MustParseAddr("169.254.20.10")}
	plain := BuildNodeModel(nil, c, "n1")
	m := BuildNodeModelAlias(plain, c, "n1", alias)
	got := map[string][]netip.Addr{}
	for _, p := range m.Ports {
		got[p.Key.String()] = p.ExternalIPs
	}
	want := map[string][]netip.Addr{
		PortKey{Service: dnsKey, Port: "dns", Family: IPv4}.String():                                  {alias.Addr},
		PortKey{Service: dnsKey, Port: "dns", Family: IPv6}.String():                                  nil,
		PortKey{Service: zone.Key{Namespace: "dev", Name: "web"}, Port: "dns", Family: IPv4}.String(): nil,
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || !slices.Equal(g, w) {
			t.Errorf("%s: external IPs %v, want %v (have %v)", k, g, w, got)
		}
	}
	if again := BuildNodeModel(m, c, "n1"); len(again.Lookup(PortKey{Service: dnsKey, Port: "dns", Family: IPv4}).ExternalIPs) != 0 {
		t.Error("a model built without the alias kept it from the previous one")
	}
}
