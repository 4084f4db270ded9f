package server

import (
	"context"
	"net"
	"testing"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/resolver"
)

// packingWriter is a ResponseWriter that packs the reply as the real one
// would and keeps nothing.
type packingWriter struct {
	buf    []byte
	n      int
	client *net.UDPAddr
}

func (w *packingWriter) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
}
func (w *packingWriter) RemoteAddr() net.Addr { return w.client }
func (w *packingWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.PackBuffer(w.buf)
	w.n = len(b)
	return err
}
func (w *packingWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *packingWriter) Close() error                { return nil }
func (w *packingWriter) TsigStatus() error           { return nil }
func (w *packingWriter) TsigTimersOnly(bool)         {}
func (w *packingWriter) Hijack()                     {}

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
	w := &packingWriter{buf: make([]byte, 1232), client: &net.UDPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 40000}}
	l.ServeDNS(w, q)
	if w.n == 0 {
		b.Fatal("no reply")
	}
	b.ReportAllocs()
	for b.Loop() {
		l.ServeDNS(w, q)
	}
}
