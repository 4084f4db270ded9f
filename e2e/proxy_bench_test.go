package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/clusterdns/clusterdns/e2e/netns"
	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/iptables"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
)

// BenchmarkProxyIPTablesApply renders and applies n services × 5 endpoints
// with the real iptables-restore, inside a namespace of its own, for both
// iptables variants: a full sync of everything, and one endpoint change
// (a partial sync).
//
//	go test ./e2e -run XXX -bench ProxyIPTablesApply/legacy -benchtime 5x -timeout 30m
//
// The nft variant is slow to set up at 10,000 services (iptables-nft 1.8.9
// restores take time quadratic in the number of chains): run it with
// -bench 'ProxyIPTablesApply/nft/.*=1000$'.
func BenchmarkProxyIPTablesApply(b *testing.B) {
	netns.Require(b, "iptables-nft-restore", "iptables-legacy-restore")
	ctx := context.Background()
	for _, variant := range []string{"nft", "legacy"} {
		for _, n := range []int{1000, 10000} {
			ports := [][]*proxy.ServicePort{pt.BenchPorts(n, 0), pt.BenchPorts(n, 1)}
			setup := func(b *testing.B) (*iptables.Backend, *proxy.Model) {
				ns := netns.New(b, "cdns-bench-")
				be := iptables.New(iptables.Config{
					Runner:   iptables.ExecRunner{Variant: variant, Prefix: []string{"ip", "netns", "exec", ns.Name}},
					Families: []proxy.Family{proxy.IPv4},
				})
				m := proxy.NewModel(nil, slices.Clone(ports[0]))
				if _, err := be.Sync(ctx, m, true); err != nil {
					b.Fatal(err)
				}
				return be, m
			}
			b.Run(fmt.Sprintf("%s/full/services=%d", variant, n), func(b *testing.B) {
				be, m := setup(b)
				for b.Loop() {
					if _, err := be.Sync(ctx, m, true); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("%s/endpoint-change/services=%d", variant, n), func(b *testing.B) {
				be, m := setup(b)
				for i := 0; b.Loop(); i++ {
					b.StopTimer()
					m = proxy.NewModel(m, slices.Clone(ports[(i+1)%2]))
					b.StartTimer()
					res, err := be.Sync(ctx, m, false)
					if err != nil {
						b.Fatal(err)
					}
					if res.Rewritten != 1 {
						b.Fatalf("an endpoint change rewrote %d service ports", res.Rewritten)
					}
				}
			})
		}
	}
}
