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
// name passing through the chain; seeing it more than loopThreshold times
// means a forwarder sent it back to us, and serving would turn every
// forwarded query into a storm, so the server stops with an error.
const (
	loopThreshold = 2
	loopProbes    = 30              // probes sent before giving up
	loopInterval  = time.Second     // between probes that got no answer
	loopTimeout   = 2 * time.Second // wait for one probe's answer
	loopStartWait = 50 * time.Millisecond
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
	l := &loopDetector{
		zone:  zone,
		probe: dns.Fqdn(strconv.FormatUint(rand.Uint64(), 10) + "." + strconv.FormatUint(rand.Uint64(), 10) + "." + trimDot(zone)),
		addr:  selfAddr(b),
	}
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
	seen              atomic.Int32
	detected          atomic.Bool
}

// link counts the probe name; once a loop is found it stops passing the
// probe on, so that the loop drains.
func (l *loopDetector) link(next resolver.Handler) resolver.Handler {
	return resolver.HandlerFunc(func(ctx context.Context, req *resolver.Request) (*dns.Msg, error) {
		if req.Type != dns.TypeHINFO || req.Name != l.probe {
			return next.Resolve(ctx, req)
		}
		if l.seen.Add(1) > loopThreshold {
			l.detected.Store(true)
			resolver.Answered(ctx, "loop")
			return resolver.Reply(req, dns.RcodeServerFailure), nil
		}
		return next.Resolve(ctx, req)
	})
}

// run sends probes until one is answered without a loop, a loop shows, or
// the probes run out. Finding a loop is an error that stops the server. An
// answer counts only once the probe has passed this chain: after a reload the
// previous configuration may still be answering for a moment.
func (l *loopDetector) run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(loopStartWait):
	}
	c := &dns.Client{Net: "udp", Timeout: loopTimeout}
	for i := 0; i < loopProbes; i++ {
		q := new(dns.Msg)
		q.SetQuestion(l.probe, dns.TypeHINFO)
		_, _, err := c.ExchangeContext(ctx, q, l.addr)
		if l.detected.Load() || l.seen.Load() > loopThreshold {
			return fmt.Errorf("loop: a forwarding loop sends queries for zone %q back to this server (%s): probe \"HINFO %s\" came back %d times; point forward at a resolver that does not lead here (a node's /etc/resolv.conf naming 127.0.0.x is the usual cause)",
				l.zone, l.addr, l.probe, l.seen.Load())
		}
		if err == nil && l.seen.Load() > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(loopInterval):
		}
	}
	return nil
}
