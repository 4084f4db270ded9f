package server

import (
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// The TCP benchmarks run our server and miekg/dns's (the one it replaced,
// configured as it was) on loopback with the same trivial answer, so that
// the difference is the transport alone.

type tcpBenchServer func(b *testing.B) string

func benchOurs(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := newTCPServer(ln, echoAnswer, slog.New(slog.DiscardHandler), newTCPMetrics(prometheus.NewRegistry()))
	go func() { _ = s.serve() }()
	b.Cleanup(func() { s.shutdown(time.Second) })
	return ln.Addr().String()
}

func benchMiekg(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		_ = w.WriteMsg(echoAnswer(r, netip.AddrPort{}))
	})
	s := &dns.Server{Listener: ln, Handler: h, ReadTimeout: 10 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }, MaxTCPQueries: -1}
	go func() { _ = s.ActivateAndServe() }()
	b.Cleanup(func() { _ = s.Shutdown() })
	return ln.Addr().String()
}

var tcpBenchServers = []struct {
	name  string
	start tcpBenchServer
}{{"ours", benchOurs}, {"miekg", benchMiekg}}

// BenchmarkTCPSerial is one client asking one query at a time on one
// connection.
func BenchmarkTCPSerial(b *testing.B) {
	q := frame(query("www.example.", 1))
	for _, srv := range tcpBenchServers {
		b.Run(srv.name, func(b *testing.B) {
			c, err := net.Dial("tcp", srv.start(b))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(q); err != nil {
					b.Fatal(err)
				}
				if _, err := readReply(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTCPPipelined is one client keeping up to 64 queries in flight on
// one connection.
func BenchmarkTCPPipelined(b *testing.B) {
	q := frame(query("www.example.", 1))
	const window = 64
	for _, srv := range tcpBenchServers {
		b.Run(srv.name, func(b *testing.B) {
			c, err := net.Dial("tcp", srv.start(b))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.ReportAllocs()
			b.ResetTimer()
			sent, got := 0, 0
			for got < b.N {
				for sent < b.N && sent-got < window {
					if _, err := c.Write(q); err != nil {
						b.Fatal(err)
					}
					sent++
				}
				if _, err := readReply(c); err != nil {
					b.Fatal(err)
				}
				got++
			}
		})
	}
}

// BenchmarkTCPConnectionPerQuery is a client opening a connection for each
// query, as stub resolvers do after a truncated UDP reply.
func BenchmarkTCPConnectionPerQuery(b *testing.B) {
	q := frame(query("www.example.", 1))
	for _, srv := range tcpBenchServers {
		b.Run(srv.name, func(b *testing.B) {
			addr := srv.start(b)
			b.ReportAllocs()
			for b.Loop() {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(q); err != nil {
					b.Fatal(err)
				}
				if _, err := readReply(c); err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
