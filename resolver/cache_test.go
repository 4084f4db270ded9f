package resolver

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fakeClock is a settable clock.
type fakeClock struct{ now atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.now.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.now.Add(int64(d)) }

// scripted answers each query with what reply builds and counts the calls.
type scripted struct {
	calls atomic.Int64
	reply func(req *Request) (*dns.Msg, error)
}

func (s *scripted) Resolve(_ context.Context, req *Request) (*dns.Msg, error) {
	s.calls.Add(1)
	return s.reply(req)
}

func aReply(ttl uint32, authoritative bool) func(*Request) (*dns.Msg, error) {
	return func(req *Request) (*dns.Msg, error) {
		m := Reply(req, dns.RcodeSuccess)
		m.Authoritative = authoritative
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: req.QName(), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl}, A: []byte{192, 0, 2, 1}}}
		return m, nil
	}
}

func negReply(rcode int, soaTTL, minimum uint32) func(*Request) (*dns.Msg, error) {
	return func(req *Request) (*dns.Msg, error) {
		m := Reply(req, rcode)
		m.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: soaTTL},
			Ns: "ns.example.", Mbox: "h.example.", Minttl: minimum}}
		return m, nil
	}
}

func newTestCache(t testing.TB, opts CacheOptions, next Handler) (*Cache, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	opts.Now = clock.Now
	if opts.Success.MinTTL == 0 {
		opts.Success.MinTTL = DefaultCacheMinTTL
	}
	if opts.Denial.MinTTL == 0 {
		opts.Denial.MinTTL = DefaultCacheMinTTL
	}
	c, err := NewCache(opts, next)
	if err != nil {
		t.Fatal(err)
	}
	return c, clock
}

func cacheAsk(t *testing.T, c Handler, name string) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	m, err := c.Resolve(context.Background(), NewRequest(q, netip.MustParseAddrPort("127.0.0.1:1"), false))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestCacheTTLCountsDown(t *testing.T) {
	next := &scripted{reply: aReply(60, false)}
	c, clock := newTestCache(t, CacheOptions{}, next)
	cacheAsk(t, c, "www.example.")
	clock.Advance(10 * time.Second)
	m := cacheAsk(t, c, "www.example.")
	if next.calls.Load() != 1 {
		t.Fatalf("next asked %d times; want 1 (second answer from cache)", next.calls.Load())
	}
	if ttl := m.Answer[0].Header().Ttl; ttl != 50 {
		t.Fatalf("ttl %d after 10s of 60; want 50", ttl)
	}
	// The stored record is untouched: a later view counts from the original.
	clock.Advance(30 * time.Second)
	if ttl := cacheAsk(t, c, "www.example.").Answer[0].Header().Ttl; ttl != 20 {
		t.Fatalf("ttl %d after 40s of 60; want 20", ttl)
	}
	clock.Advance(21 * time.Second)
	cacheAsk(t, c, "www.example.")
	if next.calls.Load() != 2 {
		t.Fatalf("next asked %d times; want a second ask after expiry", next.calls.Load())
	}
}

func TestCacheNegativeUsesSOA(t *testing.T) {
	tests := []struct {
		name        string
		reply       func(*Request) (*dns.Msg, error)
		fresh, gone time.Duration
	}{
		// RFC 2308: the lesser of the SOA's TTL and its MINIMUM.
		{"nxdomain minimum", negReply(dns.RcodeNameError, 300, 30), 29 * time.Second, 31 * time.Second},
		{"nxdomain soa ttl", negReply(dns.RcodeNameError, 20, 3600), 19 * time.Second, 21 * time.Second},
		{"nodata", negReply(dns.RcodeSuccess, 300, 40), 39 * time.Second, 41 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			next := &scripted{reply: tc.reply}
			c, clock := newTestCache(t, CacheOptions{}, next)
			first := cacheAsk(t, c, "missing.example.")
			clock.Advance(tc.fresh)
			m := cacheAsk(t, c, "missing.example.")
			if next.calls.Load() != 1 || m.Rcode != first.Rcode || len(m.Ns) != 1 {
				t.Fatalf("within the negative TTL: %d asks, reply %v", next.calls.Load(), m)
			}
			clock.Advance(tc.gone - tc.fresh)
			cacheAsk(t, c, "missing.example.")
			if next.calls.Load() != 2 {
				t.Fatalf("after the negative TTL: %d asks; want 2", next.calls.Load())
			}
		})
	}
}

func TestCacheDoesNotStore(t *testing.T) {
	tests := []struct {
		name  string
		opts  CacheOptions
		reply func(*Request) (*dns.Msg, error)
	}{
		{"servfail", CacheOptions{}, func(req *Request) (*dns.Msg, error) { return Reply(req, dns.RcodeServerFailure), nil }},
		{"nxdomain without soa", CacheOptions{}, func(req *Request) (*dns.Msg, error) { return Reply(req, dns.RcodeNameError), nil }},
		{"truncated", CacheOptions{}, func(req *Request) (*dns.Msg, error) {
			m, _ := aReply(60, false)(req)
			m.Truncated = true
			return m, nil
		}},
		{"disabled success", CacheOptions{Success: CachePolicy{Disabled: []string{"example."}}}, aReply(60, false)},
		{"disabled denial", CacheOptions{Denial: CachePolicy{Disabled: []string{"example."}}}, negReply(dns.RcodeNameError, 60, 60)},
		{"outside zones", CacheOptions{Zones: []string{"other."}}, aReply(60, false)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			next := &scripted{reply: tc.reply}
			c, _ := newTestCache(t, tc.opts, next)
			cacheAsk(t, c, "www.example.")
			cacheAsk(t, c, "www.example.")
			if next.calls.Load() != 2 {
				t.Fatalf("next asked %d times; want 2 (nothing cached)", next.calls.Load())
			}
		})
	}
}

func TestCacheMinTTLNeverStretchesAuthoritativeAnswers(t *testing.T) {
	for _, tc := range []struct {
		authoritative bool
		wantCalls     int64
	}{{true, 2}, {false, 1}} {
		next := &scripted{reply: aReply(2, tc.authoritative)}
		c, clock := newTestCache(t, CacheOptions{}, next)
		cacheAsk(t, c, "short.example.")
		clock.Advance(3 * time.Second)
		cacheAsk(t, c, "short.example.")
		if next.calls.Load() != tc.wantCalls {
			t.Errorf("aa=%t: next asked %d times after 3s of a 2s record; want %d", tc.authoritative, next.calls.Load(), tc.wantCalls)
		}
	}
}

func TestCacheMaxTTL(t *testing.T) {
	next := &scripted{reply: aReply(3600, false)}
	c, clock := newTestCache(t, CacheOptions{Success: CachePolicy{MaxTTL: 30 * time.Second}}, next)
	if ttl := cacheAsk(t, c, "long.example.").Answer[0].Header().Ttl; ttl != 3600 {
		t.Fatalf("first answer ttl %d; the miss passes the upstream's through", ttl)
	}
	if ttl := cacheAsk(t, c, "long.example.").Answer[0].Header().Ttl; ttl != 30 {
		t.Fatalf("cached ttl %d; want capped at 30", ttl)
	}
	clock.Advance(31 * time.Second)
	cacheAsk(t, c, "long.example.")
	if next.calls.Load() != 2 {
		t.Fatalf("next asked %d times; want a refresh after the 30s cap", next.calls.Load())
	}
}

// An expired entry is served while the upstream fails, whether it fails with
// SERVFAIL or with the REFUSED of a forward shedding load; with verify the
// upstream is asked first.
func TestCacheServeStale(t *testing.T) {
	for _, verify := range []bool{false, true} {
		for _, rcode := range []int{dns.RcodeServerFailure, dns.RcodeRefused} {
			name := fmt.Sprintf("verify=%t upstream %s", verify, dns.RcodeToString[rcode])
			next := &scripted{reply: aReply(10, false)}
			c, clock := newTestCache(t, CacheOptions{ServeStale: time.Hour, StaleVerify: verify}, next)
			cacheAsk(t, c, "stale.example.")
			next.reply = func(req *Request) (*dns.Msg, error) { return Reply(req, rcode), nil }
			clock.Advance(time.Minute)
			m := cacheAsk(t, c, "stale.example.")
			if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 || m.Answer[0].Header().Ttl != 0 {
				t.Fatalf("%s: stale reply %v; want the old answer with TTL 0", name, m)
			}
			clock.Advance(2 * time.Hour)
			if m := cacheAsk(t, c, "stale.example."); m.Rcode != rcode {
				t.Fatalf("%s: past serve_stale got %v; want upstream's rcode", name, m)
			}
		}
	}
}

func TestCachePrefetch(t *testing.T) {
	next := &scripted{reply: aReply(100, false)}
	c, clock := newTestCache(t, CacheOptions{Prefetch: 2, PrefetchPercent: 10, PrefetchWindow: 10 * time.Minute}, next)
	cacheAsk(t, c, "hot.example.")
	cacheAsk(t, c, "hot.example.")
	clock.Advance(95 * time.Second)
	cacheAsk(t, c, "hot.example.") // 5% left, asked often: refresh behind the scenes
	waitFor(t, func() bool { return next.calls.Load() == 2 })
	waitFor(t, func() bool {
		e, _ := c.lookup(cacheKey{name: "hot.example.", qtype: dns.TypeA, class: dns.ClassINET})
		return e != nil && e.expires.Sub(clock.Now()) > 90*time.Second
	})
}

func TestCacheRepliesDoNotShareTTLsWithStore(t *testing.T) {
	next := &scripted{reply: aReply(60, false)}
	c, clock := newTestCache(t, CacheOptions{}, next)
	cacheAsk(t, c, "www.example.")
	a := cacheAsk(t, c, "www.example.")
	clock.Advance(5 * time.Second)
	b := cacheAsk(t, c, "www.example.")
	if a.Answer[0].Header().Ttl != 60 || b.Answer[0].Header().Ttl != 55 {
		t.Fatalf("ttls %d then %d; an earlier reply must keep its TTL", a.Answer[0].Header().Ttl, b.Answer[0].Header().Ttl)
	}
}

func BenchmarkCacheHit(b *testing.B) {
	next := &scripted{reply: aReply(3600, false)}
	c, _ := newTestCache(b, CacheOptions{}, next)
	q := new(dns.Msg)
	q.SetQuestion("www.example.", dns.TypeA)
	req := NewRequest(q, netip.MustParseAddrPort("127.0.0.1:1"), false)
	ctx := context.Background()
	if _, err := c.Resolve(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		m, err := c.Resolve(ctx, req)
		if err != nil || len(m.Answer) != 1 {
			b.Fatal(m, err)
		}
	}
	if next.calls.Load() != 1 {
		b.Fatalf("next asked %d times", next.calls.Load())
	}
}

// The DNSSEC flags of the query that filled an entry never reach a query
// asking with others: a validating upstream's AD, its signatures and its
// answer to a CD query (possibly bogus) depend on the query's AD, DO and CD
// bits (CoreDNS #6186, #6642, #4736). Found by FuzzAnswer.
func TestCacheKeepsDNSSECFlagsApart(t *testing.T) {
	type flags struct{ ad, cd, do bool }
	// upstream answers like a validating resolver for a signed name that
	// fails validation: SERVFAIL unless CD; AD only when asked by AD or DO.
	upstream := &scripted{reply: func(req *Request) (*dns.Msg, error) {
		if !req.Msg.CheckingDisabled {
			m, err := aReply(300, false)(req)
			m.AuthenticatedData = req.Msg.AuthenticatedData || req.Msg.IsEdns0() != nil && req.Msg.IsEdns0().Do()
			return m, err
		}
		m, err := aReply(300, false)(req)
		m.Answer[0].(*dns.A).A = []byte{203, 0, 113, 66}
		return m, err
	}}
	ask := func(c Handler, f flags) *dns.Msg {
		q := new(dns.Msg)
		q.SetQuestion("signed.example.", dns.TypeA)
		q.AuthenticatedData, q.CheckingDisabled = f.ad, f.cd
		if f.do {
			q.SetEdns0(1232, true)
		}
		m, err := c.Resolve(context.Background(), NewRequest(q, netip.MustParseAddrPort("127.0.0.1:1"), false))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		name         string
		first, again flags
		// entries: AD alone shares an entry (the cache always asks with AD
		// and derives the reply's bit); DO and CD change the answer itself.
		entries int
	}{
		{"AD then no AD", flags{ad: true}, flags{}, 1},
		{"no AD then AD", flags{}, flags{ad: true}, 1},
		{"AD then DO", flags{ad: true}, flags{do: true}, 2},
		{"DO then neither", flags{do: true}, flags{}, 2},
		{"CD then no CD", flags{cd: true}, flags{}, 2},
		{"no CD then CD", flags{}, flags{cd: true}, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestCache(t, CacheOptions{}, upstream)
			if got, want := ask(c, tc.first), ask(upstream, tc.first); got.AuthenticatedData != want.AuthenticatedData {
				t.Fatalf("a miss: AD=%t; the upstream says AD=%t", got.AuthenticatedData, want.AuthenticatedData)
			}
			got := ask(c, tc.again)
			want := ask(upstream, tc.again)
			if got.AuthenticatedData != want.AuthenticatedData || got.CheckingDisabled != want.CheckingDisabled ||
				got.Answer[0].(*dns.A).A.String() != want.Answer[0].(*dns.A).A.String() {
				t.Fatalf("from the cache: AD=%t CD=%t %v; the upstream says AD=%t CD=%t %v",
					got.AuthenticatedData, got.CheckingDisabled, got.Answer, want.AuthenticatedData, want.CheckingDisabled, want.Answer)
			}
			if n := c.success.Len(); n != tc.entries {
				t.Fatalf("%d entries, want %d", n, tc.entries)
			}
		})
	}
}
