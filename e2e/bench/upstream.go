package bench

import (
	"fmt"
	"net"
	"sync/atomic"

	"github.com/miekg/dns"
)

// Upstream is the DNS server both peers forward names outside the cluster
// to: it answers every A question with one address and a long TTL, so after
// the first question the peers answer from their caches. It listens on
// loopback only.
type Upstream struct {
	Addr string
	// Queries counts what reached it, to check the cache did its work.
	Queries atomic.Int64
	server  *dns.Server
}

// StartUpstream listens on a free loopback UDP port.
func StartUpstream() (*Upstream, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	u := &Upstream{Addr: pc.LocalAddr().String()}
	started := make(chan struct{})
	u.server = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(u.serve), NotifyStartedFunc: func() { close(started) }}
	go func() { _ = u.server.ActivateAndServe() }()
	<-started
	return u, nil
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
func (u *Upstream) Close() error { return u.server.Shutdown() }
