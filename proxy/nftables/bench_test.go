package nftables

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
)

// countingRunner applies nothing, so a benchmark measures rendering alone.
// It writes the script, as ExecRunner does, so that figures stay
// comparable with the time the backend wrote scripts itself.
type countingRunner struct{ bytes int }

func (c *countingRunner) Apply(_ context.Context, tx *Transaction) error {
	c.bytes += len(tx.Script())
	return nil
}
func (*countingRunner) ListTables(context.Context) ([]byte, error) { return nil, nil }

// benchServices sets the cluster sizes the benchmarks run at; the
// 50,000-Service point takes minutes, so it is asked for, not default.
var benchServices = flag.String("bench-services", "1000,10000", "Service counts the endpoint-change benchmarks run at, comma-separated")

func benchSizes(b *testing.B) []int {
	var sizes []int
	for _, f := range strings.Split(*benchServices, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			b.Fatalf("-bench-services: %q is not a count", f)
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// benchSync measures syncs of one endpoint change through runner, after a
// full sync of n services (the agent's own model step after one change is
// proxy's BenchmarkBuildModelOneEndpointChange).
func benchSync(b *testing.B, n int, runner Runner) {
	pt.BenchEndpointChange(b, n, New(Config{Runner: runner, Families: []proxy.Family{proxy.IPv4}}), nil)
}

// BenchmarkRenderEndpointChange is the backend's own work for one endpoint
// change: diff and script, no kernel.
func BenchmarkRenderEndpointChange(b *testing.B) {
	for _, n := range benchSizes(b) {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			r := &countingRunner{}
			benchSync(b, n, r)
		})
		b.Run(fmt.Sprintf("policies/services=%d", n), func(b *testing.B) {
			pt.BenchPolicyEndpointChange(b, n, New(Config{Runner: &countingRunner{}, Families: []proxy.Family{proxy.IPv4}}), nil)
		})
	}
}

// BenchmarkKernelEndpointChange applies one endpoint change in a namespace of
// its own, on top of n services with five endpoints each, through the nft
// tool and through netlink: what the agent pays per change, kernel included.
func BenchmarkKernelEndpointChange(b *testing.B) {
	for _, n := range benchSizes(b) {
		for _, via := range []string{"nft", "netlink"} {
			b.Run(fmt.Sprintf("services=%d/via=%s", n, via), func(b *testing.B) {
				var r Runner = testNamespace(b)
				if via == "netlink" {
					r = netlinkRunner(b, r.(ExecRunner))
				}
				benchSync(b, n, r)
			})
		}
	}
}
