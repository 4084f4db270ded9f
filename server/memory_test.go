package server

import (
	"log/slog"
	"math"
	"runtime/debug"
	"testing"
)

// TestMemoryTuner checks the collector's settings through a load: a low GC
// percentage while the first snapshot loads, then one fitted to the live
// heap, and never a memory limit (a fixed limit has the collector run
// without pause once the forward cache outgrows it); nothing at all when the
// operator set GOGC or GOMEMLIMIT.
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
		// gcPercentFor of the live heap then (a collection since may have
		// changed it, so only the range is checked here).
		if got := debug.SetGCPercent(100); got < 50 || got > 100 {
			t.Errorf("GC percent after loading %d, want it fitted, between 50 and 100", got)
		}
		if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
			t.Errorf("memory limit %d, want none", got)
		}
		m.start() // a later source does not start loading again
		if got := debug.SetGCPercent(100); got != 100 {
			t.Errorf("GC percent after a second start %d, want it untouched", got)
		}
	})
	t.Run("operator's settings kept", func(t *testing.T) {
		t.Setenv("GOGC", "200")
		m := newMemoryTuner(slog.New(slog.DiscardHandler))
		m.start()
		m.loaded()
		if got := debug.SetGCPercent(100); got != 100 {
			t.Errorf("GC percent %d, want it untouched", got)
		}
	})
}

func TestGCPercentFor(t *testing.T) {
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{1 << 20, 100},  // 1 MiB: the 16 MiB floor is more than Go's default
		{16 << 20, 100}, // the floor equals the heap
		{32 << 20, 50},  // half of it is the floor
		{200 << 20, 50}, // half of it
		{20 << 20, 80},  // 16 of 20 MiB
		{1 << 30, 50},   // large clusters: half
	} {
		if got := gcPercentFor(tc.live); got != tc.want {
			t.Errorf("gcPercentFor(%d MiB) = %d, want %d", tc.live>>20, got, tc.want)
		}
	}
}
