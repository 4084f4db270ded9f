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
// hold about twice its size. The tuner sets a soft memory limit a margin
// above what is live once a snapshot is loaded, so the collector runs
// sooner instead; the answer path of the cluster zone allocates nothing,
// so this costs it nothing, and the margin keeps collections of the
// forwarding path's garbage far apart. The limit follows the cluster as it
// grows or shrinks. While the first snapshot loads (listing the cluster
// makes garbage several times what stays), the collector runs more often,
// so that this peak stays near the final size.
//
// A limit or GC percentage the operator set (GOMEMLIMIT, GOGC) is left
// alone.
type memoryTuner struct {
	log *slog.Logger

	mu       sync.Mutex // protects the fields below
	loading  bool       // the first snapshot has not been loaded yet
	oldGC    int
	disabled bool
}

// Tuning constants: the margin is memoryMargin of what the runtime holds
// live, at least memoryMinMargin; loadingGCPercent applies until the first
// snapshot is loaded.
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
func (t *memoryTuner) start() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.disabled || t.loading {
		return
	}
	t.loading = true
	t.oldGC = debug.SetGCPercent(loadingGCPercent)
}

// loaded is called after each snapshot has been applied (and, after the
// first, the memory of loading handed back): it sets the limit from what is
// live now.
func (t *memoryTuner) loaded() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.disabled {
		return
	}
	if t.loading {
		t.loading = false
		debug.SetGCPercent(t.oldGC)
	}
	live := liveMemory()
	if live == 0 {
		return
	}
	limit := live + max(uint64(float64(live)*memoryMargin), memoryMinMargin)
	debug.SetMemoryLimit(int64(limit))
	t.log.Debug("memory limit", "live_bytes", live, "limit_bytes", limit)
}

// liveMemory is what the runtime holds that the next collection cannot
// free: the heap live at the last collection, plus everything outside the
// heap (stacks, runtime structures), which the memory limit counts too.
func liveMemory() uint64 {
	s := []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
	}
	metrics.Read(s)
	for _, x := range s {
		if x.Value.Kind() != metrics.KindUint64 {
			return 0
		}
	}
	live, total := s[0].Value.Uint64(), s[1].Value.Uint64()
	heap := s[2].Value.Uint64() + s[3].Value.Uint64() + s[4].Value.Uint64() + s[5].Value.Uint64()
	if heap > total {
		return live
	}
	return live + total - heap
}
