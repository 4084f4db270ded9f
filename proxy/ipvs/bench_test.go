package ipvs

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/proxy"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
	"github.com/clusterdns/clusterdns/zone"
)

// benchCluster makes n ClusterIP Services of five ready endpoints each; every
// tenth is a NodePort.
func benchCluster(n int) []pt.Service {
	out := make([]pt.Service, 0, n)
	for i := range n {
		s := pt.Service{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i), ClusterIPs: []string{fmt.Sprintf("10.%d.%d.%d", 96+i/65536, i/256%256, i%256)}, Port: 80}
		for j := range 5 {
			s.Ready = append(s.Ready, fmt.Sprintf("172.%d.%d.%d", 16+j, i/256%256, i%256))
		}
		if i%10 == 0 {
			s.Type, s.NodePort = zone.TypeNodePort, int32(30000+i%2000)
		}
		out = append(out, s)
	}
	return out
}

// benchPolicyCluster is benchCluster with every tenth Service (from the
// fourth) a load balancer of externalTrafficPolicy Local with two of its
// five endpoints on this node, and every tenth (from the eighth) with zone
// hints narrowing it to three.
func benchPolicyCluster(n int) []pt.Service {
	out := benchCluster(n)
	for i := range out {
		s := &out[i]
		switch i % 10 {
		case 3:
			s.Type, s.NodePort, s.ExternalLocal = zone.TypeLoadBalancer, int32(32000+i/10), true
			s.LoadBalancerIPs = []string{fmt.Sprintf("203.%d.%d.%d", i/65536, i/256%256, i%256)}
			s.Local = s.Ready[:2]
		case 7:
			s.ZoneHints = map[string][]string{}
			for j, a := range s.Ready {
				s.ZoneHints[a] = []string{[]string{pt.NodeZone, "zone-b"}[j%2]}
			}
		}
	}
	return out
}

// BenchmarkSync measures the backend against the fake kernel (the cost of
// diffing and of the calls it makes, not of netlink): the first sync into an
// empty kernel, a periodic full sync of an unchanged cluster (which reads the
// whole table back), and a partial sync after one endpoint changed.
//
//	go test -run '^$' -bench BenchmarkSync -benchtime 5x ./proxy/ipvs/
func BenchmarkSync(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		benchSync(b, fmt.Sprintf("services=%d", n), n, benchCluster(n))
	}
	for _, n := range []int{1000, 10000} {
		benchSync(b, fmt.Sprintf("policies/services=%d", n), n, benchPolicyCluster(n))
	}
}

func benchSync(b *testing.B, name string, n int, specs []pt.Service) {
	m := pt.Model(nil, specs...)
	newBackend := func() (*Backend, *FakeKernel) {
		k := NewFakeKernel(map[string][]string{"eth0": {nodeIP}})
		return New(Config{IPVS: k, Links: k, IPSets: k, Sysctl: k, Runner: nopRunner{}, Families: []proxy.Family{proxy.IPv4}}), k
	}
	b.Run(name+"/first", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			be, _ := newBackend()
			b.StartTimer()
			if _, err := be.Sync(b.Context(), m, true); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(name+"/full", func(b *testing.B) {
		be, _ := newBackend()
		if _, err := be.Sync(b.Context(), m, true); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := be.Sync(b.Context(), m, true); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(name+"/one-change", func(b *testing.B) {
		be, _ := newBackend()
		if _, err := be.Sync(b.Context(), m, true); err != nil {
			b.Fatal(err)
		}
		// Alternate one Service's endpoints between two sets.
		cur := m
		changed := append([]pt.Service(nil), specs...)
		// The model rebuild is outside the timer but its garbage is
		// collected inside it, so the sync call's own time is reported
		// too, as sync-ns/op.
		i := 0
		var inSync time.Duration
		for b.Loop() {
			b.StopTimer()
			changed[n/2].Ready = []string{fmt.Sprintf("172.30.0.%d", i%2+1)}
			cur = pt.Model(cur, changed...)
			i++
			b.StartTimer()
			start := time.Now()
			res, err := be.Sync(b.Context(), cur, false)
			inSync += time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			if res.Rewritten != 1 {
				b.Fatalf("rewrote %d ports, want 1", res.Rewritten)
			}
		}
		b.ReportMetric(float64(inSync.Nanoseconds())/float64(i), "sync-ns/op")
	})
}

// nopRunner accepts every iptables command: the benchmark measures IPVS,
// links and sets, not iptables-restore.
type nopRunner struct{}

func (nopRunner) Restore(context.Context, proxy.Family, []byte) error { return nil }
func (nopRunner) Save(context.Context, proxy.Family, string) ([]byte, error) {
	return nil, nil
}
func (nopRunner) Run(context.Context, proxy.Family, ...string) error { return nil }
