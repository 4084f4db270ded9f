package resolver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Policy picks the order in which a query tries the upstreams.
type Policy int

// The forward policies, as CoreDNS names them.
const (
	PolicyRandom Policy = iota
	PolicyRoundRobin
	PolicySequential
)

// Defaults of the forward directive, as in CoreDNS.
const (
	DefaultMaxFails       = 2
	DefaultExpire         = 10 * time.Second
	DefaultHealthInterval = 500 * time.Millisecond
	// queryBudget bounds the time one query may spend on all upstreams
	// together; attemptTimeout bounds one upstream's try.
	queryBudget    = 5 * time.Second
	attemptTimeout = 2 * time.Second
	dialTimeout    = time.Second
)

// ErrNoUpstream is returned when no upstream answered a query in time; the
// server turns it into SERVFAIL.
var ErrNoUpstream = errors.New("no upstream answered")

// ForwardOptions configure a Forward handler.
type ForwardOptions struct {
	// From is the zone whose names are forwarded; Except lists zones below it
	// that are not.
	From   string
	Except []string
	// Upstreams are host:port addresses.
	Upstreams []string
	Policy    Policy
	// ForceTCP always uses TCP; PreferUDP uses UDP even for TCP clients.
	// Otherwise the upstream sees the client's transport.
	ForceTCP, PreferUDP bool
	// Expire closes pooled connections idle for longer.
	Expire time.Duration
	// MaxFails is how many failed health checks mark an upstream down; zero
	// never marks one down.
	MaxFails int
	// HealthInterval is the period of health checks while an upstream fails.
	HealthInterval time.Duration
	// HealthRecursion sets RD on health-check queries; HealthDomain is the
	// name they ask for (NS), "." by default.
	HealthRecursion bool
	HealthDomain    string
	// MaxConcurrent refuses queries beyond this many in flight; zero is
	// unlimited.
	MaxConcurrent int64
	// Budget, shared with other handlers, bounds the queries waiting on
	// upstreams; beyond it queries are refused at once. Nil is unbounded.
	Budget *WaitBudget
	// Stats receives the handler's measurements; may be nil.
	Stats ForwardStats
}

// ForwardStats receives a Forward handler's measurements. Implementations
// must not allocate per call: they are on the query path.
type ForwardStats interface {
	// Upstream returns the recorder for one upstream address.
	Upstream(addr string) UpstreamStats
	// MaxConcurrentRejected counts a query refused for max_concurrent.
	MaxConcurrentRejected()
	// Shed counts a query refused because the wait budget was spent.
	Shed()
	// AllUpstreamsDown counts a query that found every upstream marked down.
	AllUpstreamsDown()
}

// UpstreamStats records one upstream's traffic.
type UpstreamStats interface {
	Request()
	Response(rcode int, took time.Duration)
	HealthcheckFailed()
}

type noStats struct{}

func (noStats) Upstream(string) UpstreamStats { return noStats{} }
func (noStats) MaxConcurrentRejected()        {}
func (noStats) Shed()                         {}
func (noStats) AllUpstreamsDown()             {}
func (noStats) Request()                      {}
func (noStats) Response(int, time.Duration)   {}
func (noStats) HealthcheckFailed()            {}

// Forward sends the queries of its zone to upstream servers and returns their
// answers. Connections to the upstreams are pooled and reused. An upstream
// that fails a query is health-checked until it answers again; one that fails
// MaxFails checks in a row is skipped meanwhile.
type Forward struct {
	opts      ForwardOptions
	upstreams []*upstream
	next      Handler
	inflight  atomic.Int64
	rr        atomic.Uint32
	stats     ForwardStats
	wait      *waitShare // this forward's part of opts.Budget

	ctx    context.Context // ends when the handler is closed
	cancel context.CancelFunc
	mu     sync.Mutex     // orders starting probes against Close
	closed bool           // protected by mu
	wg     sync.WaitGroup // health probes
}

// NewForward returns a forwarding handler; names outside its zone go to next.
// Close releases its connections and stops its health checks.
func NewForward(opts ForwardOptions, next Handler) (*Forward, error) {
	if len(opts.Upstreams) == 0 {
		return nil, errors.New("forward: no upstreams")
	}
	if opts.Expire <= 0 {
		opts.Expire = DefaultExpire
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = DefaultHealthInterval
	}
	if opts.HealthDomain == "" {
		opts.HealthDomain = "."
	}
	if opts.From == "" {
		opts.From = "."
	}
	f := &Forward{opts: opts, next: next, stats: opts.Stats, wait: opts.Budget.share()}
	if f.stats == nil {
		f.stats = noStats{}
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	for _, a := range opts.Upstreams {
		f.upstreams = append(f.upstreams, &upstream{
			addr:  a,
			udp:   connPool{network: "udp", addr: a, expire: opts.Expire},
			tcp:   connPool{network: "tcp", addr: a, expire: opts.Expire},
			stats: f.stats.Upstream(a),
		})
	}
	return f, nil
}

// Close stops health checks and closes pooled connections.
func (f *Forward) Close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
	for _, u := range f.upstreams {
		u.udp.closeAll()
		u.tcp.closeAll()
	}
}

// Upstreams returns the upstream addresses.
func (f *Forward) Upstreams() []string { return f.opts.Upstreams }

// Resolve forwards a query of the handler's zone.
func (f *Forward) Resolve(ctx context.Context, req *Request) (*dns.Msg, error) {
	if !f.match(req.Name) {
		return f.next.Resolve(ctx, req)
	}
	if max := f.opts.MaxConcurrent; max > 0 {
		n := f.inflight.Add(1)
		defer f.inflight.Add(-1)
		if n > max {
			f.stats.MaxConcurrentRejected()
			Answered(ctx, "forward")
			return Reply(req, dns.RcodeRefused), nil
		}
	}
	ok, pooled := f.wait.take()
	if !ok {
		f.stats.Shed()
		Answered(ctx, "forward")
		return Reply(req, dns.RcodeRefused), nil
	}
	defer f.wait.give(pooled)
	if w := WaiterOf(ctx); w != nil {
		w.Wait()
		defer w.DoneWaiting()
	}
	m, err := f.Exchange(ctx, req.Msg, f.opts.ForceTCP || req.TCP && !f.opts.PreferUDP)
	if err != nil {
		return nil, fmt.Errorf("forward %s: %w", req.QName(), err)
	}
	Answered(ctx, "forward")
	return m, nil
}

func (f *Forward) match(name string) bool {
	if !InZone(name, f.opts.From) {
		return false
	}
	return MatchZone(name, f.opts.Except) == ""
}

// Exchange sends q to the upstreams in policy order until one answers. The
// reply carries q's ID. A truncated UDP reply is asked again over TCP.
func (f *Forward) Exchange(ctx context.Context, q *dns.Msg, tcp bool) (*dns.Msg, error) {
	// A deadline rather than a derived context: the query path then creates
	// no timer. Cancellation of ctx is still seen between upstreams.
	deadline := time.Now().Add(queryBudget)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	// The packed query lives as long as the wait on the upstreams; a copy
	// of its own size keeps the pooled buffer out of that wait.
	bufp := packBuffers.Get().(*[]byte)
	packed, err := q.PackBuffer(*bufp)
	wire := append([]byte(nil), packed...)
	packBuffers.Put(bufp)
	if err != nil {
		return nil, fmt.Errorf("pack query: %w", err)
	}
	var order [8]*upstream
	list := f.order(order[:0])
	var lastErr error = ErrNoUpstream
	for _, u := range list {
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			break
		}
		m, err := f.try(u, q, wire, tcp, deadline)
		if err != nil {
			lastErr = fmt.Errorf("%s: %w", u.addr, err)
			f.healthcheck(u)
			continue
		}
		return m, nil
	}
	return nil, lastErr
}

// try asks one upstream, over TCP again if the UDP reply was truncated.
func (f *Forward) try(u *upstream, q *dns.Msg, wire []byte, tcp bool, deadline time.Time) (*dns.Msg, error) {
	start := time.Now()
	u.stats.Request()
	m, err := u.exchange(wire, tcp, deadline)
	if !tcp && (err == nil && m.Truncated || errors.Is(err, errReplyTooLarge)) {
		m, err = u.exchange(wire, true, deadline)
	}
	if err != nil {
		return nil, err
	}
	u.stats.Response(m.Rcode, time.Since(start))
	m.Id = q.Id
	return m, nil
}

// order lists the upstreams to try: the healthy ones in policy order, or, when
// every one is down, one picked at random so that queries still probe.
func (f *Forward) order(buf []*upstream) []*upstream {
	n := len(f.upstreams)
	start := 0
	switch f.opts.Policy {
	case PolicyRandom:
		start = rand.IntN(n)
	case PolicyRoundRobin:
		start = int(f.rr.Add(1)-1) % n
	}
	for i := range n {
		u := f.upstreams[(start+i)%n]
		if !u.down(f.opts.MaxFails) {
			buf = append(buf, u)
		}
	}
	if f.opts.Policy == PolicyRandom && len(buf) > 2 {
		rand.Shuffle(len(buf), func(i, j int) { buf[i], buf[j] = buf[j], buf[i] })
	}
	if len(buf) == 0 {
		f.stats.AllUpstreamsDown()
		buf = append(buf, f.upstreams[rand.IntN(n)])
	}
	return buf
}

// healthcheck starts probing u unless a probe already runs. Probes repeat
// every HealthInterval until the upstream answers; each failure counts
// towards MaxFails.
func (f *Forward) healthcheck(u *upstream) {
	if f.opts.MaxFails == 0 || !u.probing.CompareAndSwap(false, true) {
		return
	}
	// A query of a configuration being replaced may fail after Close.
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		u.probing.Store(false)
		return
	}
	f.wg.Add(1)
	f.mu.Unlock()
	go func() {
		defer f.wg.Done()
		defer u.probing.Store(false)
		probe := new(dns.Msg)
		probe.SetQuestion(f.opts.HealthDomain, dns.TypeNS)
		probe.RecursionDesired = f.opts.HealthRecursion
		wire, err := probe.Pack()
		if err != nil {
			return
		}
		t := time.NewTicker(f.opts.HealthInterval)
		defer t.Stop()
		for {
			_, err := u.exchange(wire, f.opts.ForceTCP, time.Now().Add(f.opts.HealthInterval+time.Second))
			if err == nil {
				u.fails.Store(0)
				return
			}
			u.fails.Add(1)
			u.stats.HealthcheckFailed()
			select {
			case <-f.ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// upstream is one server forwarded to.
type upstream struct {
	addr     string
	udp, tcp connPool
	fails    atomic.Int32
	probing  atomic.Bool
	stats    UpstreamStats
}

func (u *upstream) down(maxFails int) bool {
	return maxFails > 0 && int(u.fails.Load()) > maxFails
}

// exchange sends a packed query on a pooled connection and reads the reply
// that matches it. The query goes out under a fresh ID so that a late reply
// to an earlier query on the same socket is never taken for this one.
func (u *upstream) exchange(wire []byte, tcp bool, limit time.Time) (*dns.Msg, error) {
	pool := &u.udp
	if tcp {
		pool = &u.tcp
	}
	deadline := time.Now().Add(attemptTimeout)
	if limit.Before(deadline) {
		deadline = limit
	}
	id := uint16(rand.Uint32())
	origID := uint16(wire[0])<<8 | uint16(wire[1])
	wire[0], wire[1] = byte(id>>8), byte(id)
	defer func() { wire[0], wire[1] = byte(origID>>8), byte(origID) }()

	// A pooled connection the upstream closed while idle fails at once; one
	// more try on a fresh connection tells that apart from a dead upstream.
	for attempt := 0; ; attempt++ {
		c, reused, err := pool.get(deadline)
		if err != nil {
			return nil, err
		}
		m, err := c.roundTrip(wire, id, tcp, deadline)
		if errors.Is(err, errReplyTooLarge) {
			pool.put(c) // the socket is fine; the caller asks over TCP
			return nil, err
		}
		if err != nil {
			c.Close()
			if reused && attempt == 0 && time.Now().Before(deadline) && !isTimeout(err) {
				continue
			}
			return nil, err
		}
		pool.put(c)
		return m, nil
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

var (
	packBuffers = sync.Pool{New: func() any { b := make([]byte, 2048); return &b }}
	readBuffers = sync.Pool{New: func() any { b := make([]byte, dns.MaxMsgSize); return &b }}
)
