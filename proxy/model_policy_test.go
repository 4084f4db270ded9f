package proxy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/zone"
)

// policyEndpoint describes an endpoint in a short form for the policy table:
// "address node [ready|draining|down] [zones=a,b] [nodes=n1,n2]".
func policyEndpoint(desc string) zone.Endpoint {
	f := strings.Fields(desc)
	e := zone.Endpoint{Addresses: []netip.Addr{netip.MustParseAddr(f[0])}, NodeName: f[1], Ready: true, Serving: true}
	for _, w := range f[2:] {
		switch {
		case w == "draining":
			e.Ready, e.Terminating = false, true
		case w == "down":
			e.Ready, e.Serving = false, false
		case strings.HasPrefix(w, "zones="):
			if e.Hints == nil {
				e.Hints = &zone.EndpointHints{}
			}
			e.Hints.ForZones = strings.Split(w[len("zones="):], ",")
		case strings.HasPrefix(w, "nodes="):
			if e.Hints == nil {
				e.Hints = &zone.EndpointHints{}
			}
			e.Hints.ForNodes = strings.Split(w[len("nodes="):], ",")
		}
	}
	return e
}

func addrList(eps []netip.AddrPort) string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Addr().String())
	}
	return strings.Join(out, " ")
}

// TestBuildNodeModelPolicies checks, for node n1 in zone z1, which endpoints
// each kind of traffic may reach under the traffic policies, the terminating
// fallback and topology hints.
func TestBuildNodeModelPolicies(t *testing.T) {
	type svcEdit func(*zone.Service)
	eLocal := func(s *zone.Service) { s.ExternalTrafficLocal = true }
	iLocal := func(s *zone.Service) { s.InternalTrafficLocal = true }
	tests := []struct {
		name      string
		edit      svcEdit
		endpoints []string
		// Want: internal, external, cluster (short-circuit) endpoints,
		// topology and whether any endpoint exists.
		internal, external, cluster, topology string
		any                                   bool
	}{
		{name: "cluster policies use every ready endpoint",
			endpoints: []string{"10.1.0.1 n1", "10.1.0.2 n2", "10.1.0.3 n2 down"},
			internal:  "10.1.0.1 10.1.0.2", external: "10.1.0.1 10.1.0.2", any: true},
		{name: "no ready endpoint: serving terminating ones cluster-wide",
			endpoints: []string{"10.1.0.1 n1 down", "10.1.0.2 n2 draining"},
			internal:  "10.1.0.2", external: "10.1.0.2", any: true},
		{name: "no endpoints", endpoints: []string{"10.1.0.1 n1 down"}},
		{name: "eTP Local: external traffic to local endpoints, pods and node to all", edit: eLocal,
			endpoints: []string{"10.1.0.1 n1", "10.1.0.2 n2"},
			internal:  "10.1.0.1 10.1.0.2", external: "10.1.0.1", cluster: "10.1.0.1 10.1.0.2", any: true},
		{name: "eTP Local without local endpoints: external traffic has none", edit: eLocal,
			endpoints: []string{"10.1.0.2 n2"},
			internal:  "10.1.0.2", external: "", cluster: "10.1.0.2", any: true},
		{name: "eTP Local: a local draining endpoint takes external traffic when no local one is ready", edit: eLocal,
			endpoints: []string{"10.1.0.1 n1 draining", "10.1.0.2 n2"},
			internal:  "10.1.0.2", external: "10.1.0.1", cluster: "10.1.0.2", any: true},
		{name: "iTP Local: internal traffic to local endpoints", edit: iLocal,
			endpoints: []string{"10.1.0.1 n1", "10.1.0.2 n2"},
			internal:  "10.1.0.1", external: "10.1.0.1 10.1.0.2", any: true},
		{name: "iTP Local without local endpoints", edit: iLocal,
			endpoints: []string{"10.1.0.2 n2"},
			internal:  "", external: "10.1.0.2", any: true},
		{name: "zone hints for this zone narrow cluster-wide endpoints",
			endpoints: []string{"10.1.0.1 n2 zones=z1", "10.1.0.2 n3 zones=z2", "10.1.0.3 n4 zones=z1,z2"},
			internal:  "10.1.0.1 10.1.0.3", external: "10.1.0.1 10.1.0.3", topology: zone.TrafficPreferSameZone, any: true},
		{name: "hints are ignored when one ready endpoint lacks them",
			endpoints: []string{"10.1.0.1 n2 zones=z1", "10.1.0.2 n3"},
			internal:  "10.1.0.1 10.1.0.2", external: "10.1.0.1 10.1.0.2", any: true},
		{name: "hints are ignored when none is for this zone",
			endpoints: []string{"10.1.0.1 n2 zones=z2", "10.1.0.2 n3 zones=z3"},
			internal:  "10.1.0.1 10.1.0.2", external: "10.1.0.1 10.1.0.2", any: true},
		{name: "a hintless draining endpoint does not stop hints",
			endpoints: []string{"10.1.0.1 n2 zones=z1", "10.1.0.2 n3 zones=z2", "10.1.0.4 n3 draining"},
			internal:  "10.1.0.1", external: "10.1.0.1", topology: zone.TrafficPreferSameZone, any: true},
		{name: "node hints for this node win over zone hints",
			endpoints: []string{"10.1.0.1 n1 zones=z1 nodes=n1", "10.1.0.2 n2 zones=z1 nodes=n2"},
			internal:  "10.1.0.1", external: "10.1.0.1", topology: zone.TrafficPreferSameNode, any: true},
		{name: "node hints for other nodes fall back to zone hints",
			endpoints: []string{"10.1.0.1 n3 zones=z1 nodes=n3", "10.1.0.2 n2 zones=z2 nodes=n2"},
			internal:  "10.1.0.1", external: "10.1.0.1", topology: zone.TrafficPreferSameZone, any: true},
		{name: "eTP Local ignores hints for external traffic but pods use them", edit: eLocal,
			endpoints: []string{"10.1.0.1 n1 zones=z2", "10.1.0.2 n2 zones=z1"},
			internal:  "10.1.0.2", external: "10.1.0.1", cluster: "10.1.0.2", topology: zone.TrafficPreferSameZone, any: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &zone.Service{
				Key: zone.Key{Namespace: "dev", Name: "web"}, Type: zone.TypeLoadBalancer,
				ClusterIPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")},
				Ports:      []zone.ServicePort{{Protocol: zone.ProtocolTCP, Port: 80, TargetPort: 8080, NodePort: 30080}},
			}
			if tt.edit != nil {
				tt.edit(svc)
			}
			slice := &zone.EndpointSlice{Key: zone.Key{Namespace: "dev", Name: "web-1"}, Service: "web", AddressType: zone.AddressIPv4,
				Ports: []zone.EndpointPort{{Protocol: zone.ProtocolTCP, Port: 8080}}}
			for _, d := range tt.endpoints {
				slice.Endpoints = append(slice.Endpoints, policyEndpoint(d))
			}
			b := zone.NewBuilder()
			b.SetService(svc)
			b.SetSlice(slice)
			b.SetNode(&zone.Node{Name: "n1", Zone: "z1"})
			m := BuildNodeModel(nil, b.Snapshot(), "n1")
			if len(m.Ports) != 1 {
				t.Fatalf("%d ports, want 1", len(m.Ports))
			}
			p := m.Ports[0]
			got := fmt.Sprintf("internal %q external %q cluster %q topology %q any %v",
				addrList(p.Endpoints), addrList(p.ExternalEndpoints), addrList(p.ClusterEndpoints), p.Topology, p.AnyEndpoints)
			want := fmt.Sprintf("internal %q external %q cluster %q topology %q any %v", tt.internal, tt.external, tt.cluster, tt.topology, tt.any)
			if got != want {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestBuildNodeModelAddresses(t *testing.T) {
	svc := &zone.Service{
		Key: zone.Key{Namespace: "dev", Name: "lb"}, Type: zone.TypeLoadBalancer, ExternalTrafficLocal: true,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")},
		Ports:      []zone.ServicePort{{Protocol: zone.ProtocolTCP, Port: 80, TargetPort: 80, NodePort: 30080}},
		LoadBalancerIngress: []zone.LoadBalancerIngress{
			{IP: netip.MustParseAddr("203.0.113.9")}, {IP: netip.MustParseAddr("203.0.113.7")},
			{IP: netip.MustParseAddr("203.0.113.8"), Proxy: true}, {IP: netip.MustParseAddr("2001:db8::7")},
		},
		LoadBalancerSourceRanges: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.0/24")},
	}
	m := BuildNodeModel(nil, snapshot([]*zone.Service{svc}), "n1")
	v4, v6 := m.Lookup(PortKey{Service: svc.Key, Family: IPv4}), m.Lookup(PortKey{Service: svc.Key, Family: IPv6})
	if got := fmt.Sprint(v4.LoadBalancerIPs, v4.SourceRanges); got != "[203.0.113.7 203.0.113.9] [192.0.2.0/24 198.51.100.0/24]" {
		t.Errorf("IPv4: load balancer IPs and ranges %s (ipMode Proxy must be left out)", got)
	}
	// The ranges are all IPv4: IPv6 has none and lets every source through.
	if got := fmt.Sprint(v6.LoadBalancerIPs, v6.SourceRanges); got != "[2001:db8::7] []" {
		t.Errorf("IPv6: load balancer IPs and ranges %s", got)
	}
	if !v4.ExternalLocal || v4.AnyEndpoints {
		t.Errorf("IPv4: ExternalLocal %v AnyEndpoints %v, want true false", v4.ExternalLocal, v4.AnyEndpoints)
	}
	clusterOnly := &zone.Service{Key: zone.Key{Namespace: "dev", Name: "c"}, ExternalTrafficLocal: true,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.0.0.2")}, Ports: []zone.ServicePort{{Protocol: zone.ProtocolTCP, Port: 80}}}
	if p := BuildNodeModel(nil, snapshot([]*zone.Service{clusterOnly}), "n1").Ports[0]; p.ExternalLocal || p.External() {
		t.Errorf("a ClusterIP Service with eTP Local: ExternalLocal %v External %v, want false", p.ExternalLocal, p.External())
	}
}

// A model built for a node whose zone changed must not keep the previous
// zone's endpoints, even though no Service changed.
func TestBuildNodeModelFollowsTheNodeZone(t *testing.T) {
	svc := &zone.Service{Key: zone.Key{Namespace: "dev", Name: "web"}, ClusterIPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")},
		Ports: []zone.ServicePort{{Protocol: zone.ProtocolTCP, Port: 80, TargetPort: 80}}}
	slice := &zone.EndpointSlice{Key: zone.Key{Namespace: "dev", Name: "web-1"}, Service: "web", AddressType: zone.AddressIPv4,
		Ports:     []zone.EndpointPort{{Protocol: zone.ProtocolTCP, Port: 80}},
		Endpoints: []zone.Endpoint{policyEndpoint("10.1.0.1 n2 zones=z1"), policyEndpoint("10.1.0.2 n3 zones=z2")}}
	b := zone.NewBuilder()
	b.SetService(svc)
	b.SetSlice(slice)
	b.SetNode(&zone.Node{Name: "n1", Zone: "z1"})
	first := BuildNodeModel(nil, b.Snapshot(), "n1")
	b.SetNode(&zone.Node{Name: "n1", Zone: "z2"})
	second := BuildNodeModel(first, b.Snapshot(), "n1")
	if got := addrList(second.Ports[0].Endpoints); got != "10.1.0.2" {
		t.Errorf("after the move to z2: endpoints %q, want 10.1.0.2", got)
	}
	if len(second.Changes) != 1 {
		t.Errorf("changes %v, want the one port", second.Changes)
	}
	b.DeleteNode("n1")
	third := BuildNodeModel(second, b.Snapshot(), "n1")
	if got := addrList(third.Ports[0].Endpoints); got != "10.1.0.1 10.1.0.2" {
		t.Errorf("without a zone: endpoints %q, want both", got)
	}
}
