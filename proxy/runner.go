package proxy

import (
	"context"
	"time"

	"k8s.io/utils/clock"
)

// boundedRunner calls a sync function when asked, but never more often than
// minInterval (requests in between are batched into one call), at least every
// maxInterval, and as a full one at least every fullInterval. A failed call is
// retried, as a full one, after minInterval. It reads the time and waits
// through clock, so that tests can step through hours at once.
type boundedRunner struct {
	minInterval  time.Duration
	maxInterval  time.Duration
	fullInterval time.Duration
	clock        clock.Clock
	kick         chan struct{}
}

func newBoundedRunner(clk clock.Clock, minInterval, maxInterval, fullInterval time.Duration) *boundedRunner {
	return &boundedRunner{minInterval: minInterval, maxInterval: maxInterval, fullInterval: fullInterval,
		clock: clk, kick: make(chan struct{}, 1)}
}

// Request asks for a sync soon; it never blocks.
func (r *boundedRunner) Request() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Loop runs until ctx ends. The first call is a full one and happens at the
// first Request (the source's first snapshot), not before: a call with
// nothing to program would count as a run and hold the real first sync back
// by minInterval. sync reports whether it succeeded.
func (r *boundedRunner) Loop(ctx context.Context, sync func(full bool) bool) {
	var lastRun, lastFull time.Time
	pending, needFull := false, true
	timer := r.clock.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
			pending = true
		case <-timer.C():
		}
		now := r.clock.Now()
		if !lastFull.IsZero() {
			switch {
			case now.Sub(lastFull) >= r.fullInterval:
				pending, needFull = true, true
			case now.Sub(lastRun) >= r.maxInterval:
				pending = true
			}
		}
		if pending && (lastRun.IsZero() || now.Sub(lastRun) >= r.minInterval) {
			ok := sync(needFull)
			lastRun = r.clock.Now()
			if ok {
				if needFull {
					lastFull = lastRun
				}
				pending, needFull = false, false
			} else {
				pending, needFull = true, true
			}
		}
		if lastRun.IsZero() {
			continue // nothing asked yet; only a Request wakes the loop
		}
		// Wake for the earliest of the next allowed run (if one is pending),
		// the next periodic sync and the next periodic full sync.
		next := lastFull.Add(r.fullInterval)
		if at := lastRun.Add(r.maxInterval); at.Before(next) {
			next = at
		}
		if lastFull.IsZero() {
			next = lastRun.Add(r.minInterval)
		}
		if pending {
			if at := lastRun.Add(r.minInterval); at.Before(next) {
				next = at
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C():
			default:
			}
		}
		timer.Reset(max(next.Sub(r.clock.Now()), time.Millisecond))
	}
}
