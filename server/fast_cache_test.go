package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/resolver"
)

// cacheHitUpstream answers as the upstreams behind NodeLocal's cache do,
// with a reply of each shape a cache keeps: one address, several, a CNAME
// chain, glue, NXDOMAIN and NODATA with a SOA, an authoritative and
// validated answer, one too large for a 512-byte buffer, and for
// loadbalance several addresses after a CNAME, several AAAA, and A and
// AAAA records of different lengths mixed with others.
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
	case req.Name == "three.example." && req.Type == dns.TypeAAAA:
		for i := range 4 {
			m.Answer = append(m.Answer, rr(fmt.Sprintf("%s 300 IN AAAA 2001:db8::%d", name, i+1)))
		}
	case req.Name == "chain.example." && req.Type == dns.TypeA:
		m.Answer = []dns.RR{rr(name + " 300 IN CNAME lb.target.example.")}
		for i := range 5 {
			m.Answer = append(m.Answer, rr(fmt.Sprintf("lb.target.example. 60 IN A 192.0.2.%d", 10+i)))
		}
	case req.Name == "mixed.example." && req.Type == dns.TypeA:
		m.Answer = []dns.RR{rr(name + " 300 IN A 192.0.2.30"), rr(name + ` 300 IN TXT "between"`),
			rr("other.example. 300 IN AAAA 2001:db8::30"), rr(name + " 300 IN A 192.0.2.31"),
			rr("a.much.longer.owner.example. 300 IN A 192.0.2.32"), rr(name + " 300 IN CNAME x.example.")}
		m.Extra = []dns.RR{rr("x.example. 300 IN A 192.0.2.33"), rr("y.example. 300 IN A 192.0.2.34")}
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
var cacheHitNames = []string{"one.example.", "three.example.", "chain.example.", "mixed.example.", "cname.example.",
	"mx.example.", "signed.example.", "big.example.", "nx.example.", "nodata.example.", "www.cluster.local."}

// newCacheHitPath is a NodeLocal block's answer path (prometheus, errors,
// cache, forward) over cacheHitUpstream, with a clock the test moves, so
// that both paths see the same time left; with lb, loadbalance sits in
// front of the cache as in the kubeadm Corefile's block.
func newCacheHitPath(tb testing.TB, now *time.Time, lb bool) *answerPath {
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
	var inner resolver.Handler = cache
	plan := &fastPlan{rec: rec, recZones: []string{"."}, caches: []*resolver.Cache{cache}, shuffle: lb}
	b := &Block{links: map[string]Link{"prometheus": nil, "errors": nil, "cache": nil, "forward": nil, "loop": nil}}
	if lb {
		inner = resolver.NewLoadBalance(cache)
		b.links["loadbalance"] = nil
	}
	chain := prometheusLink(rec, []string{"."}, errorsLink(&Env{Logger: shared.Logger}, inner))
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
// the fast path answers is, byte for byte, what the full path sends (with
// loadbalance, once the address records of both are put in one order: the
// two draw from a random source the test cannot share). Hits for a
// lower-case query with EDNS0 must be answered on the fast path, and
// nothing once the entry has expired.
func TestFastPathCacheHitsMatchFullPath(t *testing.T) {
	for _, lb := range []bool{false, true} {
		t.Run(fmt.Sprintf("loadbalance=%v", lb), func(t *testing.T) { testCacheHitsMatchFullPath(t, lb) })
	}
}

func testCacheHitsMatchFullPath(t *testing.T, lb bool) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	path := newCacheHitPath(t, &now, lb)
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
				if want := fullReply(t, path, q); !sameCacheReply(got, want, lb) {
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
// the cache) and then both paths, in a block without and one with
// loadbalance: a fast reply must be the full path's.
func FuzzFastPathCacheHit(f *testing.F) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	path, lbPath := newCacheHitPath(f, &now, false), newCacheHitPath(f, &now, true)
	for _, name := range cacheHitNames {
		for i, q := range cacheHitQueries(name) {
			if i%7 == 0 {
				f.Add(q)
			}
		}
	}
	f.Fuzz(func(t *testing.T, datagram []byte) {
		for _, p := range []struct {
			path *answerPath
			lb   bool
		}{{path, false}, {lbPath, true}} {
			fullReply(t, p.path, datagram)
			got := fastReply(p.path, datagram)
			if got == nil {
				continue
			}
			if want := fullReply(t, p.path, datagram); !sameCacheReply(got, want, p.lb) {
				t.Fatalf("loadbalance %v, datagram %x:\nfast path %x\nfull path %x", p.lb, datagram, got, want)
			}
		}
	})
}

// TestFastPathCacheHitAllocates nothing: a hit is answered from the
// entry's packed records into the reader's buffer.
// With loadbalance, shuffling the addresses allocates nothing either.
func TestFastPathCacheHitAllocatesNothing(t *testing.T) {
	for _, c := range []struct {
		lb   bool
		name string
	}{{false, "one.example."}, {true, "three.example."}, {true, "mixed.example."}} {
		now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
		path := newCacheHitPath(t, &now, c.lb)
		m := new(dns.Msg)
		m.SetQuestion(c.name, dns.TypeA)
		m.SetEdns0(1232, false)
		q, _ := m.Pack()
		fullReply(t, path, q)
		out := make([]byte, udpBufferSize)
		if path.listener.fastAnswer(q, out, fuzzClient) == nil {
			t.Fatalf("loadbalance %v: cached %s not answered on the fast path", c.lb, c.name)
		}
		if n := testing.AllocsPerRun(100, func() { path.listener.fastAnswer(q, out, fuzzClient) }); n != 0 {
			t.Errorf("loadbalance %v: a cache hit for %s on the fast path allocates %.0f times", c.lb, c.name, n)
		}
	}
}

// TestFastPathCacheHitShuffles checks that with loadbalance the fast path
// puts a hit's addresses in every order, as the full path does, and keeps
// the other records where they are (sameCacheReply compares the rest).
func TestFastPathCacheHitShuffles(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	path := newCacheHitPath(t, &now, true)
	m := new(dns.Msg)
	m.SetQuestion("three.example.", dns.TypeA)
	q, _ := m.Pack()
	fullReply(t, path, q)
	fast, full := map[string]bool{}, map[string]bool{}
	for range 300 {
		got := fastReply(path, q)
		if got == nil {
			t.Fatal("three.example. A, cached, not answered on the fast path")
		}
		fast[fmt.Sprint(unpacked(got).Answer)] = true
		full[fmt.Sprint(unpacked(fullReply(t, path, q)).Answer)] = true
	}
	// Three addresses have six orders; 300 draws miss one with
	// probability about 6·(5/6)^300, nil in practice.
	if len(fast) != 6 || len(full) != 6 {
		t.Errorf("three addresses came in %d orders on the fast path, %d on the full path, over 300 answers", len(fast), len(full))
	}
}

// sameCacheReply reports whether the fast path's reply is the full path's
// byte for byte, or with lb, once the A and AAAA records of each answer
// section are sorted among the places they hold.
func sameCacheReply(fast, full []byte, lb bool) bool {
	if lb {
		fast, full = sortedAddresses(fast), sortedAddresses(full)
	}
	return bytes.Equal(fast, full)
}

// sortedAddresses is reply with its answer section's A and AAAA records,
// as bytes, sorted among their places; a reply it cannot read is returned
// as it is.
func sortedAddresses(reply []byte) []byte {
	if len(reply) < 12 {
		return reply
	}
	skipName := func(off int) int {
		for off < len(reply) {
			l := int(reply[off])
			switch {
			case l == 0:
				return off + 1
			case l&0xC0 == 0xC0:
				return off + 2
			}
			off += 1 + l
		}
		return -1
	}
	off := skipName(12)
	if off < 0 || off+4 > len(reply) {
		return reply
	}
	off += 4
	first := off
	var recs, addrs [][]byte
	var isAddr []bool
	for range int(binary.BigEndian.Uint16(reply[6:])) {
		end := skipName(off)
		if end < 0 || end+10 > len(reply) {
			return reply
		}
		t := binary.BigEndian.Uint16(reply[end:])
		end += 10 + int(binary.BigEndian.Uint16(reply[end+8:]))
		if end > len(reply) {
			return reply
		}
		rec := reply[off:end]
		recs = append(recs, rec)
		a := t == dns.TypeA || t == dns.TypeAAAA
		isAddr = append(isAddr, a)
		if a {
			addrs = append(addrs, rec)
		}
		off = end
	}
	slices.SortFunc(addrs, bytes.Compare)
	out := append([]byte(nil), reply[:first]...)
	for i, rec := range recs {
		if isAddr[i] {
			rec, addrs = addrs[0], addrs[1:]
		}
		out = append(out, rec...)
	}
	return append(out, reply[off:]...)
}

// BenchmarkFastPathCacheHit is a cache hit as a UDP reader answers it on
// the fast path, in a block without and one with loadbalance (one address,
// and three shuffled); BenchmarkServeDNSCachedAnswer is the full path's.
func BenchmarkFastPathCacheHit(b *testing.B) {
	for _, c := range []struct {
		bench string
		lb    bool
		name  string
	}{{"plain", false, "one.example."}, {"loadbalance-1", true, "one.example."}, {"loadbalance-3", true, "three.example."}} {
		b.Run(c.bench, func(b *testing.B) {
			now := time.Now()
			path := newCacheHitPath(b, &now, c.lb)
			m := new(dns.Msg)
			m.SetQuestion(c.name, dns.TypeA)
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
		})
	}
}

// TestFastPathKubeadmCacheHits builds the kubeadm Corefile's block, with
// loadbalance, and checks that names outside the cluster zone are answered
// from its cache on the fast path, as the full path answers them (up to the
// addresses' order), shuffled. The cache runs on the real clock: each fast
// reply is taken between two full ones and must match one of them, in case
// a second of TTL ran out in between.
func TestFastPathKubeadmCacheHits(t *testing.T) {
	_, path := newFastFixture(t, true)
	if path.listener.router.Load().routes[0].fast.hits == nil {
		t.Fatal("the kubeadm block with loadbalance answers no cache hits on the fast path")
	}
	fast := 0
	for _, name := range []string{"www.example.", "big.example.", "sig.secure.example.", "nx.example."} {
		for _, q := range cacheHitQueries(name) {
			before := fullReply(t, path, q)
			got := fastReply(path, q)
			if got == nil {
				continue
			}
			fast++
			after := fullReply(t, path, q)
			if !sameCacheReply(got, before, true) && !sameCacheReply(got, after, true) {
				t.Fatalf("query %s:\nfast path %x\nfull path %x\n%v\nwant\n%v", describeQuery(q), got, after, unpacked(got), unpacked(after))
			}
		}
	}
	if fast == 0 {
		t.Fatal("no cache hit answered on the fast path")
	}
	t.Logf("%d cache hits answered on the fast path", fast)
	m := new(dns.Msg)
	m.SetQuestion("big.example.", dns.TypeA)
	m.SetEdns0(1232, false)
	q, _ := m.Pack()
	fullReply(t, path, q)
	orders := map[string]bool{}
	for range 20 {
		got := fastReply(path, q)
		if got == nil {
			t.Fatal("big.example. A, cached, not answered on the fast path")
		}
		orders[fmt.Sprint(unpacked(got).Answer)] = true
	}
	if len(orders) < 2 {
		t.Errorf("forty addresses came in %d order over 20 answers", len(orders))
	}
}
