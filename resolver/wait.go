package resolver

import (
	"context"
	"sync/atomic"
)

// WaitBudget bounds how many queries may wait on upstreams at once, across
// every forward handler that shares it. A query waiting on an upstream holds
// a goroutine, its buffers and a socket for up to the forwarding timeout; a
// dead upstream and a high query rate would otherwise turn into thousands of
// them and the memory they hold. Beyond the budget a forwarded query is
// refused at once, so that the work shed is forwarded work, never the
// cluster zone's.
//
// Each forward also has a reserve of its own, taken before the shared pool:
// without it a forward whose upstream is dead (the default "." one, say)
// fills the whole pool with queries waiting out their timeout, and a stub
// domain's healthy forward is refused with it.
type WaitBudget struct {
	max, reserve int64
	waiting      atomic.Int64 // in the shared pool
}

// NewWaitBudget returns a budget of max waiting queries shared by every
// forward, plus reserve more for each forward alone.
func NewWaitBudget(max, reserve int) *WaitBudget {
	return &WaitBudget{max: int64(max), reserve: int64(reserve)}
}

// Waiting is the number of queries waiting now in the shared pool.
func (b *WaitBudget) Waiting() int64 { return b.waiting.Load() }

// share returns one forward's part of the budget. A nil budget gives a nil,
// unbounded, share.
func (b *WaitBudget) share() *waitShare {
	if b == nil {
		return nil
	}
	return &waitShare{budget: b}
}

// waitShare is one forward's use of a WaitBudget: its first reserve waiting
// queries are its own, the rest come from the shared pool.
type waitShare struct {
	budget   *WaitBudget
	reserved atomic.Int64 // places of the reserve taken
}

// take reserves a place, or says there is none; pooled says where it came
// from, to be given back there. A nil share is unbounded.
func (s *waitShare) take() (ok, pooled bool) {
	if s == nil {
		return true, false
	}
	if s.reserved.Add(1) <= s.budget.reserve {
		return true, false
	}
	s.reserved.Add(-1)
	if s.budget.waiting.Add(1) > s.budget.max {
		s.budget.waiting.Add(-1)
		return false, false
	}
	return true, true
}

// give returns a place taken, to where take said it came from. Each counter
// gets back exactly what was added to it, so concurrent takes and gives
// never drift the pool's count.
func (s *waitShare) give(pooled bool) {
	switch {
	case s == nil:
	case pooled:
		s.budget.waiting.Add(-1)
	default:
		s.reserved.Add(-1)
	}
}

// Waiter is told when the goroutine answering a query is about to wait on
// something outside the server (an upstream), and when it stops waiting. The
// UDP server hands its socket to another reader then, so that a query
// waiting never keeps the next datagram, a cluster name say, from being read.
// Both are called from the goroutine answering the query, in pairs, and may
// nest.
type Waiter interface {
	Wait()
	DoneWaiting()
}

type waiterKey struct{}

// WithWaiter returns a context whose queries report their waits to w. It is
// made once per reader, not per query.
func WithWaiter(ctx context.Context, w Waiter) context.Context {
	return context.WithValue(ctx, waiterKey{}, w)
}

// WaiterOf returns the context's Waiter, or nil.
func WaiterOf(ctx context.Context) Waiter {
	w, _ := ctx.Value(waiterKey{}).(Waiter)
	return w
}
