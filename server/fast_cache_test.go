package server

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/resolver"
)

// cacheHitUpstream answers as the upstreams behind NodeLocal's cache do,
// with a reply of each shape a cache keeps: one address, several, a CNAME
// chain, glue, NXDOMAIN and NODATA with a SOA, an authoritative and
// validated answer, and one too large for a 512-byte buffer.
func cacheHitUpstream(_ context.Context, req *resolver.Request) (*dns.Msg, error) {
	m := resolver.Reply(req, dns.RcodeSuccess)
	m.RecursionAvailable = true
	name := req.QName()
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		return r
	}
	soa := rr("example. 60 IN SOA ns.example. host.example. 1 7200 3600 86400 30")
	switch {
	case req.Name == "nx.example.":
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{soa}
	case req.Name == "nodata.example." && req.Type == dns.TypeAAAA:
		m.Ns = []dns.RR{soa}
	case req.Name == "three.example." && req.Type == dns.TypeA:
		for i := range 3 {
			m.Answer = append(m.Answer, rr(fmt.Sprintf("%s 300 IN A 192.0.2.%d", name, i+1)))
		}
	case req.Name == "cname.example." && req.Type == dns.TypeA:
		m.Answer = []dns.RR{rr(name + " 300 IN CNAME target.example."), rr("target.example. 120 IN A 192.0.2.9")}
	case req.Name == "mx.example." && req.Type == dns.TypeMX:
		m.Answer = []dns.RR{rr(name + " 300 IN MX 10 mail.example.")}
		m.Extra = []dns.RR{rr("mail.example. 300 IN A 192.0.2.25")}
	case req.Name == "signed.example." && req.Type == dns.TypeA:
		m.Authoritative, m.AuthenticatedData = true, true
		m.Answer = []dns.RR{rr(name + " 300 IN A 192.0.2.7")}
	case req.Name == "big.example." && req.Type == dns.TypeTXT:
		for i := range 30 {
			m.Answer = append(m.Answer, rr(fmt.Sprintf(`%s 300 IN TXT "%s-%02d"`, name, strings.Repeat("x", 40), i)))
		}
	case req.Type == dns.TypeA:
		m.Answer = []dns.RR{rr(name + " 300 IN A 192.0.2.1")}
	}
	return m, nil
}

// cacheHitNames are the names cacheHitUpstream answers specially, and one
// it answers like any other.
var cacheHitNames = []string{"one.example.", "three.example.", "cname.example.", "mx.example.", "signed.example.",
	"big.example.", "nx.example.", "nodata.example.", "www.cluster.local."}

// newCacheHitPath is a NodeLocal block's answer path (prometheus, errors,
// cache, forward) over cacheHitUpstream, with a clock the test moves, so
// that both paths see the same time left.
func newCacheHitPath(tb testing.TB, now *time.Time) *answerPath {
	tb.Helper()
	shared := testShared()
	cache, err := resolver.NewCache(resolver.CacheOptions{
		Success: resolver.CachePolicy{MaxTTL: 30 * time.Second},
		Stats:   shared.Metrics.cacheStats("dns://:53", "."),
		Now:     func() time.Time { return *now },
	}, resolver.HandlerFunc(cacheHitUpstream))
	if err != nil {
		tb.Fatal(err)
	}
	rec := newDNSRecorder(shared.Metrics, "dns://:53", []string{"."})
	chain := prometheusLink(rec, []string{"."}, errorsLink(&Env{Logger: shared.Logger}, cache))
	plan := &fastPlan{rec: rec, recZones: []string{"."}, caches: []*resolver.Cache{cache}}
	b := &Block{links: map[string]Link{"prometheus": nil, "errors": nil, "cache": nil, "forward": nil, "loop": nil}}
	fast := plan.chain(b)
	if fast == nil {
		tb.Fatal("a NodeLocal block has no fast path")
	}
	l := &listener{log: shared.Logger, metrics: shared.Metrics}
	l.router.Store(newRouter([]route{{zone: ".", handler: chain, fast: fast}}))
	return &answerPath{
		udp:      &udpServer{answer: func(ctx context.Context, r *dns.Msg, c netip.AddrPort) *dns.Msg { return l.answer(ctx, r, c, false) }},
		listener: l,
		close:    func() {},
	}
}

// cacheHitQueries are fastQueries with the AD bit set on some, which the
// cache's reply depends on.
func cacheHitQueries(name string) [][]byte {
	qs := fastQueries(name)
	for i, q := range qs {
		if i%3 == 0 {
			q = bytes.Clone(q)
			q[3] |= 1 << 5
			qs = append(qs, q)
		}
	}
	return qs
}

// TestFastPathCacheHitsMatchFullPath fills the cache through the full path
// and then asks every query on both paths, at several times left: whatever
// the fast path answers is, byte for byte, what the full path sends. Hits
// for a lower-case query with EDNS0 must be answered on the fast path, and
// nothing once the entry has expired.
func TestFastPathCacheHitsMatchFullPath(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	path := newCacheHitPath(t, &now)
	begin := now
	fast, total := 0, 0
	for _, elapsed := range []time.Duration{0, 1500 * time.Millisecond, 29 * time.Second} {
		now = begin.Add(elapsed)
		for _, name := range cacheHitNames {
			for _, q := range cacheHitQueries(name) {
				fullReply(t, path, q) // fills the cache on the first round
				total++
				got := fastReply(path, q)
				if got == nil {
					continue
				}
				fast++
				if want := fullReply(t, path, q); !bytes.Equal(got, want) {
					t.Fatalf("after %s, query %s:\nfast path %x\nfull path %x\n%v\nwant\n%v", elapsed, describeQuery(q), got, want, unpacked(got), unpacked(want))
				}
			}
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			m.SetEdns0(1232, false)
			q, _ := m.Pack()
			if name != "nodata.example." && fastReply(path, q) == nil {
				t.Errorf("after %s: %s A, cached, not answered on the fast path", elapsed, name)
			}
		}
	}
	now = begin.Add(31 * time.Second)
	for _, name := range cacheHitNames {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		q, _ := m.Pack()
		if got := fastReply(path, q); got != nil {
			t.Errorf("%s A answered on the fast path after its entry expired: %v", name, unpacked(got))
		}
	}
	t.Logf("%d of %d queries answered on the fast path", fast, total)
}

// FuzzFastPathCacheHit sends each datagram through the full path (filling
// the cache) and then both paths: a fast reply must be the full path's.
func FuzzFastPathCacheHit(f *testing.F) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	path := newCacheHitPath(f, &now)
	for _, name := range cacheHitNames {
		for i, q := range cacheHitQueries(name) {
			if i%7 == 0 {
				f.Add(q)
			}
		}
	}
	f.Fuzz(func(t *testing.T, datagram []byte) {
		fullReply(t, path, datagram)
		got := fastReply(path, datagram)
		if got == nil {
			return
		}
		if want := fullReply(t, path, datagram); !bytes.Equal(got, want) {
			t.Fatalf("datagram %x:\nfast path %x\nfull path %x", datagram, got, want)
		}
	})
}

// TestFastPathCacheHitAllocates nothing: a hit is answered from the
// entry's packed records into the reader's buffer.
func TestFastPathCacheHitAllocatesNothing(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	path := newCacheHitPath(t, &now)
	m := new(dns.Msg)
	m.SetQuestion("one.example.", dns.TypeA)
	m.SetEdns0(1232, false)
	q, _ := m.Pack()
	fullReply(t, path, q)
	out := make([]byte, udpBufferSize)
	if path.listener.fastAnswer(q, out, fuzzClient) == nil {
		t.Fatal("a cached name is not answered on the fast path")
	}
	if n := testing.AllocsPerRun(100, func() { path.listener.fastAnswer(q, out, fuzzClient) }); n != 0 {
		t.Errorf("a cache hit on the fast path allocates %.0f times", n)
	}
}

// BenchmarkFastPathCacheHit is a cache hit as a UDP reader answers it on
// the fast path; BenchmarkServeDNSCachedAnswer is the full path's.
func BenchmarkFastPathCacheHit(b *testing.B) {
	now := time.Now()
	path := newCacheHitPath(b, &now)
	m := new(dns.Msg)
	m.SetQuestion("one.example.", dns.TypeA)
	m.SetEdns0(1232, false)
	q, _ := m.Pack()
	fullReply(b, path, q)
	out := make([]byte, udpBufferSize)
	if path.listener.fastAnswer(q, out, fuzzClient) == nil {
		b.Fatal("not answered on the fast path")
	}
	b.ReportAllocs()
	for b.Loop() {
		path.listener.fastAnswer(q, out, fuzzClient)
	}
}
