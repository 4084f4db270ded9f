package iptables

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/iptables/iptablestest"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
)

// contractTarget is the iptables backend over the fake tables; it answers
// the contract's questions by tracing packets through the fake's dump.
type contractTarget struct {
	fake *FakeRunner
	b    *Backend
}

func newContractTarget(_ *testing.T, r proxy.Routing) pt.Target {
	fake := NewFakeRunner()
	return &contractTarget{fake: fake, b: New(Config{Runner: fake, Routing: r})}
}

func (c *contractTarget) Sync(t *testing.T, m *proxy.Model, full bool) {
	t.Helper()
	if _, err := c.b.Sync(context.Background(), m, full); err != nil {
		t.Fatalf("sync: %v", err)
	}
}

func (c *contractTarget) Route(t *testing.T, p pt.Packet) (pt.Route, bool) {
	tr := iptablestest.NewTracer(t, c.fake.Dump(p.Family()), pt.LocalAddrs()...)
	out, affinity := tr.Trace(tracerPacket(p), p.FromNode)
	return pt.Route{Outcomes: out, Affinity: affinity}, true
}

func tracerPacket(p pt.Packet) iptablestest.Packet {
	return iptablestest.Packet{Src: p.Src, Dst: p.Dst, Proto: strings.ToLower(string(p.Protocol)), DPort: p.Port}
}

func TestContract(t *testing.T) {
	pt.Run(t, newContractTarget, pt.Gaps{
		pt.FeatureExternalIPs: "the renderer writes no rules for a Service's external IPs",
	})
}

// TestRenderGolden keeps, per contract scenario, the restore input of its
// last sync.
func TestRenderGolden(t *testing.T) {
	for _, sc := range pt.Scenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			fake := NewFakeRunner()
			b := New(Config{Runner: fake, Routing: sc.Routing})
			models := sc.Models()
			for i, m := range models {
				if _, err := b.Sync(context.Background(), m, i == 0); err != nil {
					t.Fatalf("sync %d: %v", i, err)
				}
			}
			var got bytes.Buffer
			for _, r := range restoresOfLastSync(fake, len(models)) {
				fmt.Fprintf(&got, "# %s\n%s", r.Family, r.Data)
			}
			pt.Golden(t, sc.Name, got.Bytes())
		})
	}
}

// restoresOfLastSync returns the restore inputs of the last Sync. The first
// sync of a backend applies one restore per family; every later sync of the
// scenarios changes IPv4 only.
func restoresOfLastSync(fake *FakeRunner, syncs int) []FakeRestore {
	if syncs == 1 {
		return fake.Restores
	}
	return fake.Restores[len(fake.Restores)-1:]
}
