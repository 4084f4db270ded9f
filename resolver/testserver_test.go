package resolver

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// testUpstream is a real DNS server on loopback (UDP and TCP on one port)
// whose answers a test chooses.
type testUpstream struct {
	addr    string
	udp     *dns.Server
	tcp     *dns.Server
	queries atomic.Int64
	mu      sync.Mutex // protects ports
	ports   map[string]bool
}

// startUpstream serves handle on 127.0.0.1; it stops when the test ends.
func startUpstream(t testing.TB, handle func(w dns.ResponseWriter, r *dns.Msg)) *testUpstream {
	t.Helper()
	// The UDP port the kernel picks may be taken for TCP: try a few.
	for i := 0; ; i++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			if i < 20 {
				continue
			}
			t.Fatal(err)
		}
		return serveUpstream(t, pc, ln, handle)
	}
}

// startUpstreamAt serves on a given loopback address (to bring a dead
// upstream back).
func startUpstreamAt(t testing.TB, addr string, handle func(w dns.ResponseWriter, r *dns.Msg)) *testUpstream {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	return serveUpstream(t, pc, ln, handle)
}

func serveUpstream(t testing.TB, pc net.PacketConn, ln net.Listener, handle func(w dns.ResponseWriter, r *dns.Msg)) *testUpstream {
	u := &testUpstream{addr: pc.LocalAddr().String(), ports: make(map[string]bool)}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		u.queries.Add(1)
		u.mu.Lock()
		u.ports[w.RemoteAddr().Network()+" "+w.RemoteAddr().String()] = true
		u.mu.Unlock()
		handle(w, r)
	})
	started := make(chan struct{}, 2)
	u.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: func() { started <- struct{}{} }}
	u.tcp = &dns.Server{Listener: ln, Handler: h, NotifyStartedFunc: func() { started <- struct{}{} }}
	go func() { _ = u.udp.ActivateAndServe() }()
	go func() { _ = u.tcp.ActivateAndServe() }()
	<-started
	<-started
	t.Cleanup(u.stop)
	return u
}

func (u *testUpstream) stop() {
	_ = u.udp.Shutdown()
	_ = u.tcp.Shutdown()
}

// sources is how many distinct client sockets the upstream has seen.
func (u *testUpstream) sources() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.ports)
}

// answerA answers every A question with addr.
func answerA(addr string) func(w dns.ResponseWriter, r *dns.Msg) {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A " + addr)
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	}
}

// startEchoUpstream answers every UDP query with one A record by rewriting
// the query in place: no parsing, so it costs next to nothing.
func startEchoUpstream(t testing.TB) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		// The A record, with a compression pointer to the question name.
		rr := []byte{0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1}
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			buf[2] |= 0x80          // QR
			buf[6], buf[7] = 0, 1   // ANCOUNT
			buf[10], buf[11] = 0, 0 // ARCOUNT: drop any OPT
			end := 12
			for end < n && buf[end] != 0 { // skip the question name
				end += int(buf[end]) + 1
			}
			end += 5 // root label, type, class
			out := append(buf[:end:end], rr...)
			_, _ = pc.WriteTo(out, from)
		}
	}()
	return pc.LocalAddr().String()
}
