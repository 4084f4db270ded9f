package resolver

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/zone"
	"github.com/clusterdns/clusterdns/zone/dnsindex"
)

// bigCluster has n ClusterIP services in 100 namespaces and n/10 headless
// services with 5 ready endpoints each.
func bigCluster(n int) *zone.Cluster { return bigBuilder(n).Snapshot() }

func bigBuilder(n int) *zone.Builder {
	b := zone.NewBuilder()
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("ns-%d", i%100)
		b.SetService(&zone.Service{
			Key:        zone.Key{Namespace: ns, Name: fmt.Sprintf("svc-%d", i)},
			Type:       zone.TypeClusterIP,
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})},
			Ports:      []zone.ServicePort{{Name: "http", Protocol: zone.ProtocolTCP, Port: 80, TargetPort: 8080}},
		})
	}
	for i := 0; i < n/10; i++ {
		ns := fmt.Sprintf("ns-%d", i%100)
		name := fmt.Sprintf("headless-%d", i)
		b.SetService(&zone.Service{Key: zone.Key{Namespace: ns, Name: name}, Type: zone.TypeClusterIP, Headless: true,
			Ports: []zone.ServicePort{{Name: "http", Protocol: zone.ProtocolTCP, Port: 80, TargetPort: 8080}}})
		var eps []zone.Endpoint
		for j := 0; j < 5; j++ {
			eps = append(eps, zone.Endpoint{Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 100 + byte(j), byte(i >> 8), byte(i)})}, Ready: true})
		}
		b.SetSlice(&zone.EndpointSlice{Key: zone.Key{Namespace: ns, Name: name + "-1"}, Service: name, AddressType: zone.AddressIPv4,
			Ports: []zone.EndpointPort{{Name: "http", Protocol: zone.ProtocolTCP, Port: 8080}}, Endpoints: eps})
	}
	return b
}

func benchKubernetes(b *testing.B) *Kubernetes {
	k := NewKubernetes(dnsindex.Options{Zones: []string{"cluster.local.", "in-addr.arpa.", "ip6.arpa."}, TTL: 5}, nil, false, Refused)
	k.Update(bigCluster(10000))
	return k
}

// BenchmarkIndexLookup is the map access alone.
func BenchmarkIndexLookup(b *testing.B) {
	ix := benchKubernetes(b).Index()
	b.ReportAllocs()
	for b.Loop() {
		if ix.Lookup("svc-4242.ns-42.svc.cluster.local.") == nil {
			b.Fatal("miss")
		}
	}
}

// BenchmarkResolve is one query through the cluster-zone handler: parse-free,
// from Request to reply message.
func BenchmarkResolve(b *testing.B) {
	k := benchKubernetes(b)
	for _, tc := range []struct {
		name  string
		qname string
		qtype uint16
	}{
		{"ClusterIP_A", "svc-4242.ns-42.svc.cluster.local.", dns.TypeA},
		{"Headless_A", "headless-42.ns-42.svc.cluster.local.", dns.TypeA},
		{"SRV", "_http._tcp.svc-4242.ns-42.svc.cluster.local.", dns.TypeSRV},
		{"NXDOMAIN", "nope.ns-42.svc.cluster.local.", dns.TypeA},
		{"MixedCase_A", "Svc-4242.ns-42.svc.cluster.local.", dns.TypeA},
	} {
		b.Run(tc.name, func(b *testing.B) {
			q := new(dns.Msg)
			q.SetQuestion(tc.qname, tc.qtype)
			req := NewRequest(q, netip.MustParseAddrPort("10.0.0.1:5353"), false)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := k.Resolve(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAnswerWire is the whole answer path short of the socket: unpack
// the query bytes, resolve, pack the reply.
func BenchmarkAnswerWire(b *testing.B) {
	k := benchKubernetes(b)
	q := new(dns.Msg)
	q.SetQuestion("svc-4242.ns-42.svc.cluster.local.", dns.TypeA)
	q.SetEdns0(1232, false)
	wire, err := q.Pack()
	if err != nil {
		b.Fatal(err)
	}
	client := netip.MustParseAddrPort("10.0.0.1:5353")
	buf := make([]byte, 0, 1232)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		m := new(dns.Msg)
		if err := m.Unpack(wire); err != nil {
			b.Fatal(err)
		}
		r, err := k.Resolve(ctx, NewRequest(m, client, false))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.PackBuffer(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIndexBuild is the cost of a new snapshot: from scratch at 10,000
// services, and for one changed endpoint at 1,000 and 10,000 services (the
// snapshot cut included), where unchanged Services' records and untouched
// shards are reused.
func BenchmarkIndexBuild(b *testing.B) {
	opts := dnsindex.Options{Zones: []string{"cluster.local.", "in-addr.arpa.", "ip6.arpa."}, TTL: 5}
	b.Run("Full10k", func(b *testing.B) {
		c := bigCluster(10000)
		b.ReportAllocs()
		for b.Loop() {
			dnsindex.Build(c, opts, nil)
		}
	})
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("OneEndpointChange%dk", n/1000), func(b *testing.B) {
			builder := bigBuilder(n)
			prev := dnsindex.Build(builder.Snapshot(), opts, nil)
			i := 0
			b.ReportAllocs()
			for b.Loop() {
				i++
				builder.SetSlice(&zone.EndpointSlice{Key: zone.Key{Namespace: "ns-7", Name: "headless-7-1"}, Service: "headless-7",
					AddressType: zone.AddressIPv4, Ports: []zone.EndpointPort{{Name: "http", Protocol: zone.ProtocolTCP, Port: 8080}},
					Endpoints: []zone.Endpoint{{Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)})}, Ready: true}}})
				prev = dnsindex.Build(builder.Snapshot(), opts, prev)
			}
		})
	}
}

// BenchmarkIndexMemory reports the heap an index holds for the peer
// benchmark's cluster shape: n ClusterIP Services and n/10 headless ones, 5
// ready endpoints each (the snapshot itself is not counted).
func BenchmarkIndexMemory(b *testing.B) {
	opts := dnsindex.Options{Zones: []string{"cluster.local.", "in-addr.arpa.", "ip6.arpa."}, TTL: 5}
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			builder := bigBuilder(n)
			for i := 0; i < n; i++ {
				ns, name := fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("svc-%d", i)
				var eps []zone.Endpoint
				for j := 0; j < 5; j++ {
					eps = append(eps, zone.Endpoint{Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 200 + byte(j), byte(i >> 8), byte(i)})}, Ready: true})
				}
				builder.SetSlice(&zone.EndpointSlice{Key: zone.Key{Namespace: ns, Name: name + "-1"}, Service: name, AddressType: zone.AddressIPv4,
					Ports: []zone.EndpointPort{{Name: "http", Protocol: zone.ProtocolTCP, Port: 8080}}, Endpoints: eps})
			}
			c := builder.Snapshot()
			var before, after runtime.MemStats
			var held uint64
			for b.Loop() {
				runtime.GC()
				runtime.ReadMemStats(&before)
				ix := dnsindex.Build(c, opts, nil)
				runtime.GC()
				runtime.ReadMemStats(&after)
				held = after.HeapAlloc - before.HeapAlloc
				runtime.KeepAlive(ix)
			}
			b.ReportMetric(float64(held)/(1<<20), "MiB/index")
		})
	}
}
