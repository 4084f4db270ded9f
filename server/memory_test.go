package server

import (
	"log/slog"
	"math"
	"runtime/debug"
	"testing"
)

// TestMemoryTuner checks the collector's settings through a load: a low GC
// percentage while the first snapshot loads, then the old one back and a
// soft limit above what is live; and nothing at all when the operator set
// GOGC or GOMEMLIMIT.
func TestMemoryTuner(t *testing.T) {
	gc := debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() { debug.SetGCPercent(gc); debug.SetMemoryLimit(limit) })

	t.Run("tuned", func(t *testing.T) {
		t.Setenv("GOGC", "")
		t.Setenv("GOMEMLIMIT", "")
		m := newMemoryTuner(slog.New(slog.DiscardHandler))
		m.start()
		if got := debug.SetGCPercent(-1); got != loadingGCPercent {
			t.Errorf("GC percent while loading %d, want %d", got, loadingGCPercent)
		}
		debug.SetGCPercent(loadingGCPercent)
		m.loaded()
		if got := debug.SetGCPercent(100); got != 100 {
			t.Errorf("GC percent after loading %d, want 100 back", got)
		}
		live := liveMemory()
		got := uint64(debug.SetMemoryLimit(-1))
		if live == 0 || got < live+memoryMinMargin || got == math.MaxInt64 {
			t.Errorf("memory limit %d with %d live", got, live)
		}
	})
	t.Run("operator's settings kept", func(t *testing.T) {
		debug.SetMemoryLimit(math.MaxInt64)
		t.Setenv("GOGC", "200")
		m := newMemoryTuner(slog.New(slog.DiscardHandler))
		m.start()
		m.loaded()
		if got := debug.SetGCPercent(100); got != 100 {
			t.Errorf("GC percent %d, want it untouched", got)
		}
		if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
			t.Errorf("memory limit %d, want it untouched", got)
		}
	})
}
