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
type WaitBudget struct {
	max     int64
	waiting atomic.Int64
}

// NewWaitBudget returns a budget of max waiting queries.
func NewWaitBudget(max int) *WaitBudget { return &WaitBudget{max: int64(max)} }

// Waiting is the number of queries waiting now.
func (b *WaitBudget) Waiting() int64 { return b.waiting.Load() }

// take reserves a place, or says there is none. A nil budget is unbounded.
func (b *WaitBudget) take() bool {
	if b == nil {
		return true
	}
	if b.waiting.Add(1) > b.max {
		b.waiting.Add(-1)
		return false
	}
	return true
}

// give returns a place taken.
func (b *WaitBudget) give() {
	if b != nil {
		b.waiting.Add(-1)
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
