package proxy

import (
	"context"
	"io"
)

// Backend programs the model into the kernel. A backend is a renderer (model
// to kernel objects, pure and testable against golden files) plus an applier
// (one atomic transaction per sync). It keeps in memory what it programmed, so
// that a partial sync touches only what changed and never reads the whole
// kernel table back.
type Backend interface {
	// Name is the proxy mode, "iptables", "nftables" or "ipvs", for logs
	// and metrics.
	Name() string
	// Sync makes the kernel route as m says. With full false the backend may
	// rewrite only the service ports that changed since its last successful
	// sync; with full true it rewrites everything it owns, repairing drift and
	// deleting leftovers. After a failed sync the next call is a full one.
	Sync(ctx context.Context, m *Model, full bool) (SyncResult, error)
	// Cleanup removes everything any run of this backend ever programmed. It is
	// idempotent: removing what is not there is not an error.
	Cleanup(ctx context.Context) error
	// DryRun writes, in the mode's own terms (restore input, nft script,
	// IPVS table), what a first full sync of m would program. It changes
	// nothing, in the kernel or in the backend.
	DryRun(m *Model, w io.Writer) error
}

// SyncResult reports what one sync did.
type SyncResult struct {
	// Rules is how many rules the backend now has programmed in total.
	Rules int
	// Rewritten is how many service ports' rules this sync wrote.
	Rewritten int
}
