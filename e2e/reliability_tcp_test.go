package e2e

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// blackHole is a UDP socket on loopback that reads queries and never
// answers: an upstream that has gone silent.
func blackHole(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

// writeTCPQuery sends one length-prefixed query on c.
func writeTCPQuery(t *testing.T, c net.Conn, name string, qtype, id uint16) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.Id = id
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	out := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
	if _, err := c.Write(append(out, b...)); err != nil {
		t.Fatal(err)
	}
}

// readTCPReply reads one length-prefixed reply, waiting at most timeout.
func readTCPReply(c net.Conn, timeout time.Duration) (*dns.Msg, error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint16(hdr[:]))
	if _, err := io.ReadFull(c, b); err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	return m, m.Unpack(b)
}

const tcpCorefile = `.:{PORT} {
    bind 127.0.0.1
    prometheus {METRICS}
    timeouts {
        read 1s
        idle 60s
    }
    kubernetes cluster.local {
        manifests {MANIFESTS}
    }
    forward . {UP}
}
`

// Queries pipelined on one TCP connection are answered as each is ready: a
// query forwarded to an upstream that never answers does not hold up the
// cluster-zone answers sent after it, and gets its own reply (SERVFAIL) on
// the same connection once the forwarder gives up.
func TestReliabilityTCPPipelinedPastASilentUpstream(t *testing.T) {
	s := serveCorefile(t, tcpCorefile, "{UP}", blackHole(t))
	c, err := net.Dial("tcp", s.dns)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	writeTCPQuery(t, c, "silent.example.com", dns.TypeA, 1)
	for id := uint16(2); id <= 4; id++ {
		writeTCPQuery(t, c, "service-clusterip.dev.svc.cluster.local", dns.TypeA, id)
	}
	var order []uint16
	for range 4 {
		m, err := readTCPReply(c, 15*time.Second)
		if err != nil {
			t.Fatalf("after replies %v: %v", order, err)
		}
		order = append(order, m.Id)
		switch m.Id {
		case 1:
			if m.Rcode != dns.RcodeServerFailure {
				t.Fatalf("silent upstream: rcode %s; want SERVFAIL", dns.RcodeToString[m.Rcode])
			}
		default:
			if !slices.Equal(answers(m), []string{"A 10.10.97.97"}) {
				t.Fatalf("reply %d: %v", m.Id, answers(m))
			}
		}
	}
	if order[3] != 1 {
		t.Fatalf("replies in order %v; want the cluster answers before the forwarded query's", order)
	}
}

// raiseNoFile lifts the process's open-file limit to its hard limit, which
// the server started afterwards inherits, and says how many it may use.
func raiseNoFile(t *testing.T) uint64 {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	return lim.Cur
}

// Thousands of idle connections, three times the default limit of 1000,
// neither keep a new client from being answered nor stay behind: the
// server holds at most the limit, evicting the longest idle, and once the
// clients close, its goroutines return to where they were.
func TestReliabilityTCPThousandsOfIdleConnections(t *testing.T) {
	const idle, limit = 3000, 1000
	if n := raiseNoFile(t); n < idle+limit+200 {
		t.Fatalf("open-file limit %d; this test needs %d", n, idle+limit+200)
	}
	s := serveCorefile(t, `.:{PORT} {
    bind 127.0.0.1
    prometheus {METRICS}
    timeouts {
        idle 60s
    }
    kubernetes cluster.local {
        manifests {MANIFESTS}
    }
}
`)
	ask := func() {
		t.Helper()
		m, err := query(s.dns, "tcp", "service-clusterip.dev.svc.cluster.local", dns.TypeA)
		if err != nil || !slices.Equal(answers(m), []string{"A 10.10.97.97"}) {
			t.Fatalf("new connection: %v %v", m, err)
		}
	}
	ask()
	time.Sleep(time.Second) // let start-up's goroutines settle
	body := s.metricsBody(t)
	base := metricValue(body, "go_goroutines")
	baseRSS, baseHeap := metricValue(body, "process_resident_memory_bytes"), metricValue(body, "go_memstats_heap_inuse_bytes")

	conns := make([]net.Conn, 0, idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idle {
		c, err := net.DialTimeout("tcp", s.dns, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns)+1, err)
		}
		conns = append(conns, c)
	}
	ask()
	body = s.metricsBody(t)
	open := metricValue(body, "clusterdns_tcp_connections")
	evicted := metricValue(body, "clusterdns_tcp_connections_closed_total", `reason="evicted"`)
	peak := metricValue(body, "go_goroutines")
	peakRSS, peakHeap := metricValue(body, "process_resident_memory_bytes"), metricValue(body, "go_memstats_heap_inuse_bytes")
	if open > limit || evicted < idle-limit {
		t.Fatalf("%v connections open, %v evicted; want at most %d open and %d evicted", open, evicted, limit, idle-limit)
	}
	// The newest connections are the ones kept and each still answers.
	for _, c := range conns[len(conns)-10:] {
		writeTCPQuery(t, c, "service-clusterip.dev.svc.cluster.local", dns.TypeA, 77)
		if m, err := readTCPReply(c, 5*time.Second); err != nil || m.Id != 77 {
			t.Fatalf("a kept connection: %v %v", m, err)
		}
	}
	// The evicted ones were closed by the server.
	if _, err := readTCPReply(conns[0], 5*time.Second); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the oldest connection: %v; want it closed", err)
	}

	for _, c := range conns {
		c.Close()
	}
	conns = conns[:0]
	var after, afterRSS, afterHeap float64
	deadline := time.Now().Add(15 * time.Second)
	for {
		body := s.metricsBody(t)
		after = metricValue(body, "go_goroutines")
		afterRSS, afterHeap = metricValue(body, "process_resident_memory_bytes"), metricValue(body, "go_memstats_heap_inuse_bytes")
		if metricValue(body, "clusterdns_tcp_connections") == 0 && after <= base+5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines %v after the clients closed; baseline %v, peak %v", after, base, peak)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ask()
	t.Logf("goroutines: baseline %v, with %d idle clients %v, after %v; heap in use MiB: %.1f, %.1f, %.1f; RSS MiB: %.1f, %.1f, %.1f",
		base, idle, peak, after, baseHeap/(1<<20), peakHeap/(1<<20), afterHeap/(1<<20), baseRSS/(1<<20), peakRSS/(1<<20), afterRSS/(1<<20))
}

// A client that starts a message and does not finish it within the read
// timeout is disconnected, and the server answers others meanwhile.
func TestReliabilityTCPSlowSenderDisconnected(t *testing.T) {
	s := serveCorefile(t, tcpCorefile, "{UP}", blackHole(t))
	for name, part := range map[string][]byte{
		"half a length prefix": {0},
		"half a message":       {0, 40, 0xab, 0xcd, 1, 0},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := net.Dial("tcp", s.dns)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(part); err != nil {
				t.Fatal(err)
			}
			m, err := query(s.dns, "tcp", "service-clusterip.dev.svc.cluster.local", dns.TypeA)
			if err != nil || !slices.Equal(answers(m), []string{"A 10.10.97.97"}) {
				t.Fatalf("another client meanwhile: %v %v", m, err)
			}
			// The read timeout is 1s; give it ten.
			if _, err := readTCPReply(c, 10*time.Second); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("slow sender: %v; want the server to close the connection", err)
			}
		})
	}
	if v := metricValue(s.metricsBody(t), "clusterdns_tcp_connections_closed_total", `reason="read_timeout"`); v != 2 {
		t.Fatalf("%v connections closed for the read timeout; want 2", v)
	}
}

// SIGTERM closes idle TCP connections at once, and a query in flight on
// another connection still gets its reply before the process exits 0.
func TestReliabilityTCPShutdownFinishesQueriesInFlight(t *testing.T) {
	up := startUpstream(t, "127.0.0.1:0", func(w dns.ResponseWriter, r *dns.Msg) {
		time.Sleep(1500 * time.Millisecond)
		answerWith("192.0.2.77")(w, r)
	})
	s := serveCorefile(t, `.:{PORT} {
    bind 127.0.0.1
    kubernetes cluster.local {
        manifests {MANIFESTS}
    }
    forward . {UP}
}
`, "{UP}", up.addr)
	idle, err := net.Dial("tcp", s.dns)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("tcp", s.dns)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	writeTCPQuery(t, busy, "slow.example.com", dns.TypeA, 5)
	deadline := time.Now().Add(5 * time.Second)
	for up.asked("slow.example.com") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the slow query never reached the upstream")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := readTCPReply(idle, 5*time.Second); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("idle connection: %v; want it closed at shutdown", err)
	}
	m, err := readTCPReply(busy, 5*time.Second)
	if err != nil || m.Id != 5 || !slices.Equal(answers(m), []string{"A 192.0.2.77"}) {
		t.Fatalf("in-flight query: %v %v; want its answer", m, err)
	}
	if code := s.p.exited(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d; want 0", code)
	}
}
