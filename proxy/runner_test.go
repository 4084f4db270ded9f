package proxy

import (
	"context"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"
)

func TestRunnerGap(t *testing.T) {
	r := newBoundedRunner(clock.RealClock{}, time.Second, 30*time.Second, time.Hour)
	for failures, want := range map[int]time.Duration{
		0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 5: 16 * time.Second, 6: 30 * time.Second, 60: 30 * time.Second,
	} {
		if got := r.gap(failures); got != want {
			t.Errorf("gap after %d failures: %s, want %s", failures, got, want)
		}
	}
}

// A sync that keeps failing is retried less and less often, however many
// requests come in between, and every retry is a full sync; after a success
// a request brings a partial sync again. On the loop's fake clock the times
// are exact.
func TestRunnerBacksOffWhileSyncsFail(t *testing.T) {
	const minGap, maxGap, failFor = time.Second, 8 * time.Second, 6
	clk := newLoopClock()
	r := newBoundedRunner(clk, minGap, maxGap, time.Hour)
	type call struct {
		at   time.Time
		full bool
	}
	var mu sync.Mutex
	var calls []call
	snapshot := func() []call {
		mu.Lock()
		defer mu.Unlock()
		return append([]call(nil), calls...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Loop(ctx, func(full bool) bool {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, call{clk.Now(), full})
			return len(calls) > failFor
		})
	}()
	defer func() { cancel(); <-done }()

	r.Request()
	due := clk.waitArmed(t) // the first sync failed
	for i := 1; i <= failFor; i++ {
		// A request while the retry waits does not bring it forward.
		clk.Step(due.Sub(clk.Now()) / 2)
		r.Request()
		if again := clk.waitArmed(t); !again.Equal(due) {
			t.Fatalf("a request moved retry %d from %v to %v", i, due, again)
		}
		due = clk.fire(t, due)
	}
	got := snapshot()
	if len(got) != failFor+1 {
		t.Fatalf("%d syncs, want %d", len(got), failFor+1)
	}
	for i := 1; i <= failFor; i++ {
		want := min(minGap<<(i-1), maxGap) // after the i-th failure
		if gap := got[i].at.Sub(got[i-1].at); gap != want {
			t.Errorf("retry %d came %s after failure %d, want %s", i, gap, i, want)
		}
		if !got[i].full {
			t.Errorf("retry %d was not a full sync", i)
		}
	}
	// The last retry succeeded: the next request brings a partial sync,
	// once the minimum gap has passed.
	r.Request()
	due = clk.waitArmed(t)
	if want := got[failFor].at.Add(minGap); !due.Equal(want) {
		t.Errorf("after the success the next sync is due at %v, want %v", due, want)
	}
	clk.fire(t, due)
	if got := snapshot(); len(got) != failFor+2 || got[failFor+1].full {
		t.Errorf("after the success: syncs %+v, want one more, partial", got[failFor:])
	}
}
