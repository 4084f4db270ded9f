package resolver

import (
	"context"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkForward measures one forwarded query end to end over loopback:
// pack, send on a pooled socket, the upstream's answer, unpack. The
// upstream's own work (a miekg/dns server in this process) is included.
func BenchmarkForward(b *testing.B) {
	up := startUpstream(b, answerA("192.0.2.1"))
	f, err := NewForward(ForwardOptions{Upstreams: []string{up.addr}}, marker)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	q := new(dns.Msg)
	q.SetQuestion("www.example.", dns.TypeA)
	req := NewRequest(q, netip.MustParseAddrPort("127.0.0.1:1"), false)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		m, err := f.Resolve(ctx, req)
		if err != nil || len(m.Answer) != 1 {
			b.Fatal(m, err)
		}
	}
}

// BenchmarkForwardParallel runs forwarded queries from several goroutines,
// so that pooled connections are taken and returned concurrently.
func BenchmarkForwardParallel(b *testing.B) {
	up := startUpstream(b, answerA("192.0.2.1"))
	f, err := NewForward(ForwardOptions{Upstreams: []string{up.addr}}, marker)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		q := new(dns.Msg)
		q.SetQuestion("www.example.", dns.TypeA)
		req := NewRequest(q, netip.MustParseAddrPort("127.0.0.1:1"), false)
		for pb.Next() {
			m, err := f.Resolve(context.Background(), req)
			if err != nil || len(m.Answer) != 1 {
				b.Fatal(m, err)
			}
		}
	})
}

// BenchmarkForwardClientSide isolates clusterdns's own cost of a forwarded
// query: the upstream is a bare socket loop that echoes a fixed answer,
// so the figure is the forwarder's pack/exchange/unpack, not a server's.
func BenchmarkForwardClientSide(b *testing.B) {
	addr := startEchoUpstream(b)
	f, err := NewForward(ForwardOptions{Upstreams: []string{addr}}, marker)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	q := new(dns.Msg)
	q.SetQuestion("www.example.", dns.TypeA)
	req := NewRequest(q, netip.MustParseAddrPort("127.0.0.1:1"), false)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		m, err := f.Resolve(ctx, req)
		if err != nil || len(m.Answer) != 1 {
			b.Fatal(m, err)
		}
	}
}
