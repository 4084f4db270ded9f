package server

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coredns/caddy/caddyfile"
	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/resolver"
)

// Loop detection, as CoreDNS's loop directive: at start the server asks
// itself for a random name no one else would ask. The loop link counts that
// name passing through the chain while one of our probes is waiting for its
// answer; seeing it more than loopThreshold times within one exchange means
// a forwarder sent it back to us, and serving would turn every forwarded
// query into a storm, so the server stops with an error.
//
// Only a probe seen again while it is in flight counts. An upstream that
// never answers (a dropped packet, a dead resolver) makes the exchange time
// out with the probe seen once: that says nothing about a loop, so the count
// starts again and the probe is retried later, with a growing pause. An
// upstream that answers anything, SERVFAIL included, ends the check.
const (
	loopThreshold    = 2
	loopWindow       = 30 * time.Second // probing stops after this, loop or not
	loopFirstBackoff = time.Second      // pause after a probe that got no answer
	loopMaxBackoff   = 8 * time.Second
	loopTimeout      = 2 * time.Second // wait for one probe's answer
	loopStartWait    = 50 * time.Millisecond
)

// setupLoop reads "loop".
func setupLoop(b *Block, d *caddyfile.Dispenser) error {
	const name = "loop"
	uses := 0
	for {
		ok, err := nextOnce(d, name, &uses)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if args := d.RemainingArgs(); len(args) > 0 {
			return errAt(d, name, "unexpected argument %q", args[0])
		}
		for d.NextBlock() {
			return errAt(d, name, "unknown property %q", d.Val())
		}
	}
	zone := "."
	if len(b.Zones) > 0 {
		zone = b.Zones[0]
	}
	l := newLoopDetector(zone, selfAddr(b))
	b.links[name] = func(_ *Env, next resolver.Handler) resolver.Handler { return l.link(next) }
	b.services = append(b.services, ServiceFunc(l.run))
	return nil
}

func trimDot(zone string) string {
	if zone == "." {
		return ""
	}
	return zone
}

// selfAddr is an address of this block's listener that the server can send
// a query to.
func selfAddr(b *Block) string {
	host := "127.0.0.1"
	if len(b.Bind) > 0 {
		host = b.Bind[0]
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			host = "127.0.0.1"
			if ip.To4() == nil {
				host = "::1"
			}
		}
	}
	return net.JoinHostPort(host, b.Port)
}

type loopDetector struct {
	zone, probe, addr string
	// exchange sends one probe and waits for its answer's rcode; tests
	// replace it.
	exchange func(ctx context.Context) (rcode int, err error)
	// window, firstBackoff and maxBackoff pace the probes.
	window, firstBackoff, maxBackoff time.Duration

	inFlight atomic.Bool  // a probe is waiting for its answer
	seen     atomic.Int32 // sightings of the probe during this exchange
	detected atomic.Bool
}

func newLoopDetector(zone, addr string) *loopDetector {
	l := &loopDetector{
		zone:         zone,
		probe:        dns.Fqdn(strconv.FormatUint(rand.Uint64(), 10) + "." + strconv.FormatUint(rand.Uint64(), 10) + "." + trimDot(zone)),
		addr:         addr,
		window:       loopWindow,
		firstBackoff: loopFirstBackoff,
		maxBackoff:   loopMaxBackoff,
	}
	c := &dns.Client{Net: "udp", Timeout: loopTimeout}
	l.exchange = func(ctx context.Context) (int, error) {
		q := new(dns.Msg)
		q.SetQuestion(l.probe, dns.TypeHINFO)
		m, _, err := c.ExchangeContext(ctx, q, l.addr)
		if err != nil {
			return 0, err
		}
		return m.Rcode, nil
	}
	return l
}

// link counts the probe name while a probe is in flight; once a loop is
// found it stops passing the probe on, so that the loop drains.
func (l *loopDetector) link(next resolver.Handler) resolver.Handler {
	return resolver.HandlerFunc(func(ctx context.Context, req *resolver.Request) (*dns.Msg, error) {
		if req.Type != dns.TypeHINFO || req.Name != l.probe {
			return next.Resolve(ctx, req)
		}
		if l.detected.Load() {
			resolver.Answered(ctx, "loop")
			return resolver.Reply(req, dns.RcodeServerFailure), nil
		}
		if l.inFlight.Load() && l.seen.Add(1) > loopThreshold {
			l.detected.Store(true)
			resolver.Answered(ctx, "loop")
			return resolver.Reply(req, dns.RcodeServerFailure), nil
		}
		return next.Resolve(ctx, req)
	})
}

// run sends probes until one is answered without a loop, a loop shows, or
// the window closes. Finding a loop is an error that stops the server; no
// other outcome is. Any answer but REFUSED ends the check. An answer counts only once the probe has passed this
// chain: after a reload the previous configuration may still be answering
// for a moment.
func (l *loopDetector) run(ctx context.Context) error {
	if !sleepCtx(ctx, loopStartWait) {
		return nil
	}
	deadline := time.Now().Add(l.window)
	backoff := l.firstBackoff
	for time.Now().Before(deadline) {
		l.seen.Store(0)
		l.inFlight.Store(true)
		rcode, err := l.exchange(ctx)
		l.inFlight.Store(false)
		seen := l.seen.Load()
		if l.detected.Load() {
			return fmt.Errorf("loop: a forwarding loop sends queries for zone %q back to this server (%s): probe \"HINFO %s\" came back %d times while one probe was in flight; point forward at a resolver that does not lead here (a node's /etc/resolv.conf naming 127.0.0.x is the usual cause)",
				l.zone, l.addr, l.probe, seen)
		}
		// REFUSED says only that a forward shed the probe (its wait
		// budget or max_concurrent was full, as a loop with client traffic
		// would make it): the probe went no further, so try again.
		if err == nil && seen > 0 && rcode != dns.RcodeRefused {
			return nil
		}
		if !sleepCtx(ctx, backoff) {
			return nil
		}
		backoff = min(2*backoff, l.maxBackoff)
	}
	return nil
}

// sleepCtx waits for d; it reports false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
