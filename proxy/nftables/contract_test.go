package nftables

import (
	"context"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
)

// contractTarget runs the contract's scenarios through the nftables backend
// over the recording runner. The runner keeps scripts, not state, so the
// target cannot answer routing questions nor show a state yet: the syncs of
// every scenario are checked (they must succeed, and partial ones count
// what a full one counts), the questions are counted as unanswered. Route
// and State are the methods to change once a stateful fake with a packet
// tracer exists.
type contractTarget struct {
	rec *RecordingRunner
	b   *Backend
}

func newContractTarget(_ *testing.T, r proxy.Routing) pt.Target {
	rec := &RecordingRunner{}
	return &contractTarget{rec: rec, b: New(Config{Runner: rec, Routing: r})}
}

func (c *contractTarget) Sync(t *testing.T, m *proxy.Model, full bool) proxy.SyncResult {
	t.Helper()
	res, err := c.b.Sync(context.Background(), m, full)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return res
}

func (c *contractTarget) Route(*testing.T, pt.Packet) (pt.Route, bool) { return pt.Route{}, false }

func (c *contractTarget) State(*testing.T) string { return "" }

func TestContract(t *testing.T) {
	pt.Run(t, newContractTarget, nil)
}
