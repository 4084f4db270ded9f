package proxy

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/clusterdns/clusterdns/zone"
)

// BenchmarkBuildModelOneEndpointChange is the agent's share of one endpoint
// change: the model from the new snapshot, relative to the programmed one.
//
// The policies variant makes a tenth of the Services load balancers of
// externalTrafficPolicy Local, with endpoints on this node and others, and
// gives another tenth's endpoints topology hints.
func BenchmarkBuildModelOneEndpointChange(b *testing.B) {
	for _, policies := range []bool{false, true} {
		for _, n := range []int{1000, 10000} {
			name := fmt.Sprintf("services=%d", n)
			if policies {
				name = "policies/" + name
			}
			b.Run(name, func(b *testing.B) { benchBuildModel(b, n, policies) })
		}
	}
}

func benchBuildModel(b *testing.B, n int, policies bool) {
	builder := zone.NewBuilder()
	slice := func(i, variant int) *zone.EndpointSlice {
		s := &zone.EndpointSlice{Key: zone.Key{Namespace: "bench", Name: fmt.Sprintf("svc-%d-x", i)}, Service: fmt.Sprintf("svc-%d", i),
			AddressType: zone.AddressIPv4, Ports: []zone.EndpointPort{{Name: "http", Protocol: zone.ProtocolTCP, Port: 8080}}}
		for e := range 5 {
			ep := zone.Endpoint{Ready: true, Serving: true, NodeName: fmt.Sprintf("node-%d", e%3),
				Addresses: []netip.Addr{netip.AddrFrom4([4]byte{172, byte(16 + e), byte(i >> 8), byte(i) + byte(variant)})}}
			if policies && i%10 == 7 {
				ep.Hints = &zone.EndpointHints{ForZones: []string{fmt.Sprintf("zone-%d", e%2)}}
			}
			s.Endpoints = append(s.Endpoints, ep)
		}
		return s
	}
	builder.SetNode(&zone.Node{Name: "node-0", Zone: "zone-0"})
	for i := range n {
		svc := &zone.Service{Key: zone.Key{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i)}, Type: zone.TypeClusterIP,
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})},
			Ports:      []zone.ServicePort{{Name: "http", Protocol: zone.ProtocolTCP, Port: 80}}}
		if policies && i%10 == 3 {
			svc.Type, svc.ExternalTrafficLocal = zone.TypeLoadBalancer, true
			svc.Ports[0].NodePort = int32(30000 + i/10)
			svc.LoadBalancerIngress = []zone.LoadBalancerIngress{{IP: netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})}}
		}
		builder.SetService(svc)
		builder.SetSlice(slice(i, 0))
	}
	prev := BuildNodeModel(nil, builder.Snapshot(), "node-0")
	builder.SetSlice(slice(n/2, 1))
	next := builder.Snapshot()
	b.ReportAllocs()
	for b.Loop() {
		if m := BuildNodeModel(prev, next, "node-0"); len(m.Changes) != 1 {
			b.Fatalf("%d changes, want 1", len(m.Changes))
		}
	}
}
