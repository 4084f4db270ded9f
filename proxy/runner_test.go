package proxy

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestRunnerGap(t *testing.T) {
	r := newBoundedRunner(time.Second, 30*time.Second, time.Hour)
	for failures, want := range map[int]time.Duration{
		0: time.Second, 1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 5: 16 * time.Second, 6: 30 * time.Second, 60: 30 * time.Second,
	} {
		if got := r.gap(failures); got != want {
			t.Errorf("gap after %d failures: %s, want %s", failures, got, want)
		}
	}
}

// A sync that keeps failing is retried less and less often, however many
// requests come in between.
func TestRunnerBacksOffWhileSyncsFail(t *testing.T) {
	const minGap, maxGap = 20 * time.Millisecond, 160 * time.Millisecond
	r := newBoundedRunner(minGap, maxGap, time.Hour)
	var mu sync.Mutex
	var calls []time.Time
	var fulls []bool
	failFor := 6
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		defer close(done)
		r.Loop(ctx, func(full bool) bool {
			mu.Lock()
			defer mu.Unlock()
			calls, fulls = append(calls, time.Now()), append(fulls, full)
			return len(calls) > failFor
		})
	}()
	// Requests all along, as a busy cluster sends them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.Request()
		mu.Lock()
		n := len(calls)
		mu.Unlock()
		if n >= failFor+3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d syncs in 10s", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	cancel()
	<-done
	for i := 1; i <= failFor; i++ {
		want := min(minGap<<(i-1), maxGap) // after the i-th failure
		if gap := calls[i].Sub(calls[i-1]); gap < want {
			t.Errorf("retry %d came %s after failure %d, want at least %s", i, gap, i, want)
		}
		if !fulls[i] {
			t.Errorf("retry %d was not a full sync", i)
		}
	}
	// After the success requests bring partial syncs again.
	if fulls[failFor+1] {
		t.Error("the sync after a successful retry was a full one")
	}
}
