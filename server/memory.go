package server

import (
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// memoryTuner fits the garbage collector to the live set. Go's default
// (GOGC=100) lets the heap grow to twice what is live before collecting, and
// the resident memory follows the heap's peaks, not the live set: the
// index of a large cluster is most of what is live, so the process would
// hold about twice its size. Once a snapshot is loaded the tuner lowers the
// GC percentage so that the heap may grow a margin above what is live
// (half of it, at least memoryMinMargin) instead, so the collector runs
// sooner; the answer path of the cluster zone allocates nothing, so this
// costs it nothing, and the margin keeps collections of the forwarding
// path's garbage far apart. A percentage, unlike a soft memory limit,
// scales by itself as the forward cache fills between snapshots: a limit
// fixed at one snapshot's live set would have the collector run without
// pause once the caches outgrew it. It is derived again after every
// snapshot. While the first snapshot loads (listing the cluster makes
// garbage several times what stays), the collector runs more often still,
// so that this peak stays near the final size. A server with no cluster
// zone (the node cache) is never tuned.
//
// A limit or GC percentage the operator set (GOMEMLIMIT, GOGC) is left
// alone.
type memoryTuner struct {
	log *slog.Logger

	mu       sync.Mutex // protects the fields below
	started  bool       // start was called
	loading  bool       // the first snapshot has not been loaded yet
	disabled bool
}

// Tuning constants: the margin is memoryMargin of the live heap, at least
// memoryMinMargin, and never more than Go's default (GOGC=100);
// loadingGCPercent applies until the first snapshot is loaded.
const (
	memoryMargin     = 0.5
	memoryMinMargin  = 16 << 20
	loadingGCPercent = 25
)

// newMemoryTuner returns a tuner that changes nothing until start.
func newMemoryTuner(log *slog.Logger) *memoryTuner {
	return &memoryTuner{log: log, disabled: os.Getenv("GOMEMLIMIT") != "" || os.Getenv("GOGC") != ""}
}

// start makes the collector run at loadingGCPercent until loaded is called.
// Only the first call counts: a source added by a reload loads beside the
// serving one, under the percentage already fitted.
func (t *memoryTuner) start() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.disabled || t.started {
		return
	}
	t.started, t.loading = true, true
	debug.SetGCPercent(loadingGCPercent)
}

// loaded is called after each snapshot has been applied (and, after the
// first, the memory of loading handed back): it sets the GC percentage from
// the heap live now.
func (t *memoryTuner) loaded() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.disabled {
		return
	}
	t.loading = false
	live := liveHeap()
	percent := gcPercentFor(live)
	debug.SetGCPercent(percent)
	t.log.Debug("gc percent fitted", "live_heap_bytes", live, "gc_percent", percent)
}

// gcPercentFor is the GC percentage that lets a heap of live bytes grow by
// memoryMargin of itself, or by memoryMinMargin when that is more, up to
// Go's default of 100 (also when nothing has been collected yet, live 0).
func gcPercentFor(live uint64) int {
	if live == 0 {
		return 100
	}
	margin := max(uint64(float64(live)*memoryMargin), memoryMinMargin)
	return int(min(100, (margin*100+live-1)/live))
}

// liveHeap is the heap live at the last collection, zero when the runtime
// does not say.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
