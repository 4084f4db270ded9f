package bench

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"

	"github.com/miekg/dns"
)

// Upstream is the DNS server both peers forward names outside the cluster
// to: it answers every A question with one address and a long TTL, so after
// the first question the peers answer from their caches. It listens on
// loopback only, over UDP and TCP on one port: the node cache's Corefile
// forwards the cluster zone with force_tcp.
type Upstream struct {
	Addr string
	// Queries counts what reached it, to check the cache did its work.
	Queries  atomic.Int64
	udp, tcp *dns.Server
}

// StartUpstream listens on a free loopback port, UDP and TCP.
func StartUpstream() (*Upstream, error) {
	port, err := FreePort()
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return nil, fmt.Errorf("upstream: %w", err)
	}
	u := &Upstream{Addr: addr}
	u.udp = u.start(&dns.Server{PacketConn: pc})
	u.tcp = u.start(&dns.Server{Listener: ln})
	return u, nil
}

// start serves s and returns it once it runs.
func (u *Upstream) start(s *dns.Server) *dns.Server {
	started := make(chan struct{})
	s.Handler = dns.HandlerFunc(u.serve)
	s.NotifyStartedFunc = func() { close(started) }
	go func() { _ = s.ActivateAndServe() }()
	<-started
	return s
}

func (u *Upstream) serve(w dns.ResponseWriter, q *dns.Msg) {
	u.Queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeA {
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
			A:   net.IPv4(192, 0, 2, 1),
		})
	}
	_ = w.WriteMsg(m)
}

// Close stops the server.
func (u *Upstream) Close() error { return errors.Join(u.udp.Shutdown(), u.tcp.Shutdown()) }
