package server

import (
	"context"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/resolver"
)

// BenchmarkServeDNSCachedAnswer is a whole query as the listener handles it
// for a name in the cache: routing, metrics, cache hit, fitting and packing
// the reply.
func BenchmarkServeDNSCachedAnswer(b *testing.B) {
	shared := testShared()
	upstream := resolver.HandlerFunc(func(_ context.Context, req *resolver.Request) (*dns.Msg, error) {
		m := resolver.Reply(req, dns.RcodeSuccess)
		rr, _ := dns.NewRR(req.QName() + " 300 IN A 192.0.2.1")
		m.Answer = []dns.RR{rr}
		return m, nil
	})
	cache, err := resolver.NewCache(resolver.CacheOptions{Stats: shared.Metrics.cacheStats("dns://:53", ".")}, upstream)
	if err != nil {
		b.Fatal(err)
	}
	chain := prometheusLink(newDNSRecorder(shared.Metrics, "dns://:53", []string{"."}), []string{"."}, cache)
	l := &listener{log: shared.Logger, metrics: shared.Metrics}
	l.router.Store(newRouter([]route{{zone: ".", handler: chain}}))
	q := new(dns.Msg)
	q.SetQuestion("www.example.", dns.TypeA)
	q.SetEdns0(1232, false)
	client := netip.MustParseAddrPort("10.0.0.1:40000")
	buf := make([]byte, 1232)
	serve := func() int {
		m, err := packReply(l.answer(context.Background(), q, client, false), buf, shared.Logger, client)
		if err != nil {
			b.Fatal(err)
		}
		return len(m)
	}
	if serve() == 0 {
		b.Fatal("no reply")
	}
	b.ReportAllocs()
	for b.Loop() {
		serve()
	}
}
