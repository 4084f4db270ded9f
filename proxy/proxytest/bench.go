package proxytest

import (
	"slices"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/proxy"
)

// BenchEndpointChange measures a backend's syncs of one endpoint change,
// after a full sync of n BenchPorts (its time reported as s/full-sync).
// Each model is built from the previous one, as the agent builds them,
// outside the timer: that step is proxy's BenchmarkBuildModel. afterFull,
// when not nil, runs between the full sync and the measured ones.
func BenchEndpointChange(b *testing.B, n int, be proxy.Backend, afterFull func()) {
	benchEndpointChange(b, [][]*proxy.ServicePort{BenchPorts(n, 0), BenchPorts(n, 1)}, be, afterFull)
}

// BenchPolicyEndpointChange is BenchEndpointChange over BenchPolicyPorts.
func BenchPolicyEndpointChange(b *testing.B, n int, be proxy.Backend, afterFull func()) {
	benchEndpointChange(b, [][]*proxy.ServicePort{BenchPolicyPorts(n, 0), BenchPolicyPorts(n, 1)}, be, afterFull)
}

func benchEndpointChange(b *testing.B, ports [][]*proxy.ServicePort, be proxy.Backend, afterFull func()) {
	m := proxy.NewModel(nil, slices.Clone(ports[0]))
	start := time.Now()
	if _, err := be.Sync(b.Context(), m, true); err != nil {
		b.Fatal(err)
	}
	fullSync := time.Since(start)
	if afterFull != nil {
		afterFull()
	}
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		m = proxy.NewModel(m, slices.Clone(ports[(i+1)%2]))
		b.StartTimer()
		if _, err := be.Sync(b.Context(), m, false); err != nil {
			b.Fatal(err)
		}
	}
	// Reported after the loop: b.Loop's first call resets the metrics.
	b.ReportMetric(fullSync.Seconds(), "s/full-sync")
}
