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
	// synced is set once a sync succeeded.
	synced bool
}

func newContractTarget(_ *testing.T, r proxy.Routing) pt.Target {
	fake := NewFakeRunner()
	return &contractTarget{fake: fake, b: New(Config{Runner: fake, Routing: r})}
}

// hookRules is how many hook rules the backend puts in built-in chains, in
// both families.
const hookRules = 12

// Sync also checks what the backend promises beyond routing: the rule count
// it reports is what the tables hold, and a partial sync after a successful
// one never lists the kernel's chains.
func (c *contractTarget) Sync(t *testing.T, m *proxy.Model, full bool) proxy.SyncResult {
	t.Helper()
	saves := c.fake.Saves
	res, err := c.b.Sync(context.Background(), m, full)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	if held := c.fake.RuleCount(proxy.IPv4) + c.fake.RuleCount(proxy.IPv6); res.Rules+hookRules != held {
		t.Errorf("the backend counts %d rules, the tables hold %d (with %d hooks)", res.Rules, held, hookRules)
	}
	if !full && c.synced && c.fake.Saves != saves {
		t.Errorf("a partial sync listed the kernel's chains %d times", c.fake.Saves-saves)
	}
	c.synced = true
	return res
}

func (c *contractTarget) State(*testing.T) string {
	return c.fake.Dump(proxy.IPv4) + c.fake.Dump(proxy.IPv6)
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
	pt.Run(t, newContractTarget, nil)
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
				if i == 0 && len(models) > 1 {
					// The first state of a scenario of several is kept too:
					// the last is often the plainest.
					var first bytes.Buffer
					for _, r := range fake.Restores {
						fmt.Fprintf(&first, "# %s\n%s", r.Family, r.Data)
					}
					pt.Golden(t, sc.Name+"-first", first.Bytes())
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
