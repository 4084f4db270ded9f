package nftables

import (
	"context"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
)

// contractTarget is the nftables backend over the stateful fake; it answers
// the contract's questions by tracing packets through the fake's tables.
type contractTarget struct {
	fake *Fake
	b    *Backend
}

func newContractTarget(_ *testing.T, r proxy.Routing) pt.Target {
	fake := NewFake()
	return &contractTarget{fake: fake, b: New(Config{Runner: fake, Routing: r})}
}

func (c *contractTarget) Sync(t *testing.T, m *proxy.Model, full bool) proxy.SyncResult {
	t.Helper()
	res, err := c.b.Sync(context.Background(), m, full)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return res
}

func (c *contractTarget) Route(t *testing.T, p pt.Packet) (pt.Route, bool) {
	tr := newTracer(t, c.fake, p.Family(), pt.LocalAddrs()...)
	out, affinity := tr.route(packet{src: p.Src, dst: p.Dst, proto: strings.ToLower(string(p.Protocol)), dport: p.Port}, p.FromNode)
	return pt.Route{Outcomes: out, Affinity: affinity}, true
}

// State leaves out which slots of the endpoints map each list took: partial
// syncs take other slots than one full sync does.
func (c *contractTarget) State(t *testing.T) string { return resolveSlots(t, c.fake.Dump()) }

func TestContract(t *testing.T) {
	pt.Run(t, newContractTarget, nil)
}
