package server

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/resolver"
)

// Each case scripts what the network does with every probe: how often the
// probe passes our chain before its exchange ends, and how it ends.
func TestLoopDetector(t *testing.T) {
	errTimeout := errors.New("i/o timeout")
	type exchange struct {
		sightings int
		rcode     int
		err       error
	}
	tests := []struct {
		name      string
		exchanges []exchange // the last one repeats
		wantLoop  bool
		wantTries int // exchanges made before run returned; 0: any
	}{
		{"answered", []exchange{{1, dns.RcodeSuccess, nil}}, false, 1},
		{"answered SERVFAIL", []exchange{{1, dns.RcodeServerFailure, nil}}, false, 1},
		{"black-holed upstream, retried and never counted", []exchange{{1, 0, errTimeout}}, false, 0},
		{"two sightings per timed-out exchange do not add up", []exchange{{2, 0, errTimeout}}, false, 0},
		{"dead at first, then answered", []exchange{{1, 0, errTimeout}, {1, 0, errTimeout}, {1, dns.RcodeNameError, nil}}, false, 3},
		{"answer from a previous configuration does not count", []exchange{{0, dns.RcodeSuccess, nil}, {1, dns.RcodeSuccess, nil}}, false, 2},
		{"shed by a full forward: tried again", []exchange{{1, dns.RcodeRefused, nil}, {1, dns.RcodeRefused, nil}, {1, dns.RcodeSuccess, nil}}, false, 3},
		{"loop behind a shedding forward", []exchange{{1, dns.RcodeRefused, nil}, {3, dns.RcodeRefused, nil}}, true, 2},
		{"loop", []exchange{{3, dns.RcodeSuccess, nil}}, true, 1},
		{"loop whose exchange times out", []exchange{{5, 0, errTimeout}}, true, 1},
		{"loop after a dead start", []exchange{{1, 0, errTimeout}, {4, dns.RcodeServerFailure, nil}}, true, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLoopDetector(".", "127.0.0.1:53")
			l.window, l.firstBackoff, l.maxBackoff = 200*time.Millisecond, time.Millisecond, 4*time.Millisecond
			chain := l.link(resolver.HandlerFunc(func(_ context.Context, req *resolver.Request) (*dns.Msg, error) {
				return resolver.Reply(req, dns.RcodeServerFailure), nil
			}))
			q := new(dns.Msg)
			q.SetQuestion(l.probe, dns.TypeHINFO)
			tries := 0
			l.exchange = func(ctx context.Context) (int, error) {
				e := tt.exchanges[min(tries, len(tt.exchanges)-1)]
				tries++
				for range e.sightings {
					if _, err := chain.Resolve(ctx, resolver.NewRequest(q, netip.AddrPort{}, false)); err != nil {
						t.Fatal(err)
					}
				}
				return e.rcode, e.err
			}
			err := l.run(context.Background())
			if gotLoop := err != nil; gotLoop != tt.wantLoop {
				t.Fatalf("run: %v, want loop %v", err, tt.wantLoop)
			}
			if tt.wantLoop && !strings.Contains(err.Error(), "forwarding loop") {
				t.Errorf("message %q does not name the loop", err)
			}
			if tt.wantTries > 0 && tries != tt.wantTries {
				t.Errorf("%d exchanges, want %d", tries, tt.wantTries)
			}
			if tt.wantTries == 0 && tries < 3 {
				t.Errorf("only %d exchanges: an unanswered probe must be retried", tries)
			}
		})
	}
}

// A probe arriving while none is in flight (a late echo, or a client asking
// the same name) is passed on and never counted.
func TestLoopDetectorIgnoresProbesOutsideAnExchange(t *testing.T) {
	l := newLoopDetector(".", "127.0.0.1:53")
	passed := 0
	chain := l.link(resolver.HandlerFunc(func(_ context.Context, req *resolver.Request) (*dns.Msg, error) {
		passed++
		return resolver.Reply(req, dns.RcodeSuccess), nil
	}))
	q := new(dns.Msg)
	q.SetQuestion(l.probe, dns.TypeHINFO)
	for range 10 {
		if _, err := chain.Resolve(context.Background(), resolver.NewRequest(q, netip.AddrPort{}, false)); err != nil {
			t.Fatal(err)
		}
	}
	if passed != 10 || l.detected.Load() || l.seen.Load() != 0 {
		t.Fatalf("passed %d of 10, detected %v, seen %d", passed, l.detected.Load(), l.seen.Load())
	}
}
