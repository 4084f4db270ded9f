package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/zone"
)

// BenchmarkBuildModel is the other half of an endpoint change: the model is
// rebuilt from the whole snapshot (the source publishes whole snapshots).
func BenchmarkBuildModel(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			prev := proxy.NewModel(nil, benchPorts(n, 0))
			next := benchPorts(n, 1)
			for b.Loop() {
				proxy.NewModel(prev, slices.Clone(next))
			}
		})
	}
}

// discardRunner applies nothing, so a benchmark measures rendering alone.
type discardRunner struct{ bytes int }

func (d *discardRunner) Restore(_ context.Context, _ proxy.Family, data []byte) error {
	d.bytes += len(data)
	return nil
}
func (*discardRunner) Save(context.Context, proxy.Family, string) ([]byte, error) { return nil, nil }
func (*discardRunner) Run(context.Context, proxy.Family, ...string) error         { return nil }

// benchPorts returns n ClusterIP service ports with five endpoints each;
// variant changes one endpoint of one service.
func benchPorts(n, variant int) []*proxy.ServicePort {
	ports := make([]*proxy.ServicePort, 0, n)
	for i := range n {
		sp := &proxy.ServicePort{
			Key:       proxy.PortKey{Service: zone.Key{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i)}, Port: "http", Family: proxy.IPv4},
			Protocol:  zone.ProtocolTCP,
			ClusterIP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}),
			Port:      80,
		}
		for e := range 5 {
			last := byte(e + 1)
			if i == n/2 && e == 4 {
				last += byte(variant * 10)
			}
			sp.Endpoints = append(sp.Endpoints, netip.AddrPortFrom(netip.AddrFrom4([4]byte{172, byte(16 + e), byte(i >> 8), last}), 8080))
		}
		ports = append(ports, sp)
	}
	return ports
}

func BenchmarkRender(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		ports := [][]*proxy.ServicePort{benchPorts(n, 0), benchPorts(n, 1)}
		models := []*proxy.Model{proxy.NewModel(nil, slices.Clone(ports[0]))}
		b.Run(fmt.Sprintf("full/services=%d", n), func(b *testing.B) {
			r := &discardRunner{}
			be := New(Config{Runner: r, Families: []proxy.Family{proxy.IPv4}})
			for i := 0; b.Loop(); i++ {
				if _, err := be.Sync(context.Background(), models[0], true); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(r.bytes)/float64(b.N), "bytes/sync")
		})
		b.Run(fmt.Sprintf("endpoint-change/services=%d", n), func(b *testing.B) {
			r := &discardRunner{}
			be := New(Config{Runner: r, Families: []proxy.Family{proxy.IPv4}})
			m := models[0]
			if _, err := be.Sync(context.Background(), m, true); err != nil {
				b.Fatal(err)
			}
			r.bytes = 0
			for i := 0; b.Loop(); i++ {
				// Each model is built from the previous one, as the agent
				// builds them; that O(n) step is BenchmarkBuildModel's.
				b.StopTimer()
				m = proxy.NewModel(m, slices.Clone(ports[(i+1)%2]))
				b.StartTimer()
				if _, err := be.Sync(context.Background(), m, false); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(r.bytes)/float64(b.N), "bytes/sync")
		})
	}
}
