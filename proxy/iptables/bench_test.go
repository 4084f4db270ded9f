package iptables

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
)

// BenchmarkBuildModel makes a model from every port of the cluster, as a full
// build does. After one change the agent takes a shorter path, from the
// Services the snapshot lists as changed: proxy's
// BenchmarkBuildModelOneEndpointChange measures that one.
func BenchmarkBuildModel(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			prev := proxy.NewModel(nil, pt.BenchPorts(n, 0))
			next := pt.BenchPorts(n, 1)
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

func BenchmarkRender(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		ports := [][]*proxy.ServicePort{pt.BenchPorts(n, 0), pt.BenchPorts(n, 1)}
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
			pt.BenchEndpointChange(b, n, New(Config{Runner: r, Families: []proxy.Family{proxy.IPv4}}), func() { r.bytes = 0 })
			b.ReportMetric(float64(r.bytes)/float64(b.N), "bytes/sync")
		})
		b.Run(fmt.Sprintf("endpoint-change-policies/services=%d", n), func(b *testing.B) {
			r := &discardRunner{}
			pt.BenchPolicyEndpointChange(b, n, New(Config{Runner: r, Families: []proxy.Family{proxy.IPv4}}), func() { r.bytes = 0 })
			b.ReportMetric(float64(r.bytes)/float64(b.N), "bytes/sync")
		})
	}
}
