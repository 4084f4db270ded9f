package proxy

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/clusterdns/clusterdns/zone"
)

// BenchmarkBuildModelOneEndpointChange is the agent's share of one endpoint
// change: the model from the new snapshot, relative to the programmed one.
func BenchmarkBuildModelOneEndpointChange(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			builder := zone.NewBuilder()
			slice := func(i, variant int) *zone.EndpointSlice {
				s := &zone.EndpointSlice{Key: zone.Key{Namespace: "bench", Name: fmt.Sprintf("svc-%d-x", i)}, Service: fmt.Sprintf("svc-%d", i),
					AddressType: zone.AddressIPv4, Ports: []zone.EndpointPort{{Name: "http", Protocol: zone.ProtocolTCP, Port: 8080}}}
				for e := range 5 {
					s.Endpoints = append(s.Endpoints, zone.Endpoint{Ready: true,
						Addresses: []netip.Addr{netip.AddrFrom4([4]byte{172, byte(16 + e), byte(i >> 8), byte(i) + byte(variant)})}})
				}
				return s
			}
			for i := range n {
				builder.SetService(&zone.Service{Key: zone.Key{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i)}, Type: zone.TypeClusterIP,
					ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})},
					Ports:      []zone.ServicePort{{Name: "http", Protocol: zone.ProtocolTCP, Port: 80}}})
				builder.SetSlice(slice(i, 0))
			}
			prev := BuildModel(nil, builder.Snapshot())
			builder.SetSlice(slice(n/2, 1))
			next := builder.Snapshot()
			b.ReportAllocs()
			for b.Loop() {
				if m := BuildModel(prev, next); len(m.Changes) != 1 {
					b.Fatalf("%d changes, want 1", len(m.Changes))
				}
			}
		})
	}
}
