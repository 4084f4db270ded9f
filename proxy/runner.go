package proxy

import (
	"context"
	"time"

	"k8s.io/utils/clock"
)

// boundedRunner calls a sync function when asked, but never more often than
// minInterval (requests in between are batched into one call), at least every
// maxInterval, and as a full one at least every fullInterval. A failed call is
// retried, as a full one, after minInterval, then after twice as long each
// time it fails again, up to maxInterval: a kernel that keeps refusing (a
// full sync of 10,000 Services costs seconds of CPU) is not hammered, and
// new requests do not bring the retry forward. It reads the time and waits
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
	failures := 0 // in a row
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
		if pending && (lastRun.IsZero() || now.Sub(lastRun) >= r.gap(failures)) {
			ok := sync(needFull)
			lastRun = r.clock.Now()
			if ok {
				if needFull {
					lastFull = lastRun
				}
				pending, needFull, failures = false, false, 0
			} else {
				pending, needFull = true, true
				failures++
			}
		}
		if lastRun.IsZero() {
			continue // nothing asked yet; only a Request wakes the loop
		}
		// Wake for the next allowed run if one is pending (it comes before
		// any periodic one), else for the next periodic sync or periodic
		// full sync, whichever is first.
		next := lastFull.Add(r.fullInterval)
		if at := lastRun.Add(r.maxInterval); at.Before(next) {
			next = at
		}
		if pending || lastFull.IsZero() {
			next = lastRun.Add(r.gap(failures))
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

// gap is how long after the last run the next may start: minInterval, or
// after failures in a row minInterval doubled for each failure past the
// first, at most maxInterval.
func (r *boundedRunner) gap(failures int) time.Duration {
	g := r.minInterval
	for i := 1; i < failures && g < r.maxInterval; i++ {
		g *= 2
	}
	return min(g, max(r.maxInterval, r.minInterval))
}
