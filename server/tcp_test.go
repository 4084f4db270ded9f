package server

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// testTCP is a tcpServer on a loopback port, stopped when the test ends.
type testTCP struct {
	*tcpServer
	addr string
}

func startTCP(t *testing.T, lim tcpLimits, answer func(context.Context, *dns.Msg, netip.AddrPort) *dns.Msg) *testTCP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newTCPServer(ln, answer, slog.New(slog.DiscardHandler), newTCPMetrics(prometheus.NewRegistry()))
	s.setLimits(lim)
	done := make(chan struct{})
	go func() {
		if err := s.serve(); err != nil {
			t.Error(err)
		}
		close(done)
	}()
	t.Cleanup(func() { s.shutdown(time.Second); <-done })
	return &testTCP{s, ln.Addr().String()}
}

// testLimits are short enough for tests to wait out.
func testLimits() tcpLimits {
	return tcpLimits{read: 300 * time.Millisecond, write: 300 * time.Millisecond, idle: 300 * time.Millisecond, maxConns: 100}
}

func dialTCP(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

// frame prefixes a message with its length.
func frame(b []byte) []byte {
	out := make([]byte, 2+len(b))
	binary.BigEndian.PutUint16(out, uint16(len(b)))
	copy(out[2:], b)
	return out
}

func send(t *testing.T, c net.Conn, b ...[]byte) {
	t.Helper()
	for _, m := range b {
		if _, err := c.Write(m); err != nil {
			t.Fatal(err)
		}
	}
}

// readReply reads one framed reply within 5 seconds.
func readReply(c net.Conn) (*dns.Msg, error) {
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
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

func mustReply(t *testing.T, c net.Conn) *dns.Msg {
	t.Helper()
	m, err := readReply(c)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	return m
}

// waitClosed waits (at most 5 s) for the server to close c: a read returns
// EOF or a reset, not a timeout.
func waitClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	for {
		_, err := c.Read(buf)
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			return
		}
		t.Fatalf("connection not closed by the server: %v", err)
	}
}

// eventually polls cond for up to 5 seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *testTCP) idleConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := s.idle.front(); c != nil; c = c.next {
		n++
	}
	return n
}

func (s *testTCP) closedFor(reason string) float64 {
	return value(s.metrics.closed.WithLabelValues(reason))
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		panic(err)
	}
	if c := out.GetCounter(); c != nil {
		return c.GetValue()
	}
	return out.GetGauge().GetValue()
}

// gate is an answer function that holds queries for names under "slow."
// until released, and echoes the rest at once.
type gate struct {
	release chan struct{}
	held    atomic.Int32
}

func newGate() *gate { return &gate{release: make(chan struct{})} }

func (g *gate) answer(_ context.Context, r *dns.Msg, _ netip.AddrPort) *dns.Msg {
	if strings.HasPrefix(r.Question[0].Name, "slow.") {
		g.held.Add(1)
		<-g.release
	}
	m := new(dns.Msg)
	m.SetReply(r)
	return m
}

func (g *gate) open() {
	select {
	case <-g.release:
	default:
		close(g.release)
	}
}

// A slow query does not hold up the ones sent behind it on the same
// connection: their replies come first, matched by ID.
func TestTCPPipelinedRepliesOutOfOrder(t *testing.T) {
	g := newGate()
	defer g.open()
	s := startTCP(t, testLimits(), g.answer)
	c := dialTCP(t, s.addr)
	send(t, c, frame(query("slow.example.", 1)))
	for id := uint16(2); id <= 5; id++ {
		send(t, c, frame(query("fast.example.", id)))
	}
	seen := map[uint16]bool{}
	for range 4 {
		m := mustReply(t, c)
		if m.Id == 1 {
			t.Fatal("the slow query was answered before it was released")
		}
		seen[m.Id] = true
	}
	if len(seen) != 4 {
		t.Fatalf("fast replies %v; want IDs 2 to 5 once each", seen)
	}
	g.open()
	if m := mustReply(t, c); m.Id != 1 || m.Question[0].Name != "slow.example." {
		t.Fatalf("last reply %v; want the slow query's", m)
	}
}

// At most tcpPipeline queries of one connection are answered at once; the
// rest wait in the socket and are answered as slots free up.
func TestTCPPipelineIsBounded(t *testing.T) {
	g := newGate()
	defer g.open()
	s := startTCP(t, testLimits(), g.answer)
	c := dialTCP(t, s.addr)
	const n = 3 * tcpPipeline
	for id := range uint16(n) {
		send(t, c, frame(query("slow.example.", id)))
	}
	eventually(t, "a full pipeline", func() bool { return g.held.Load() == tcpPipeline })
	time.Sleep(100 * time.Millisecond)
	if h := g.held.Load(); h != tcpPipeline {
		t.Fatalf("%d queries answered at once; want at most %d", h, tcpPipeline)
	}
	g.open()
	for range n {
		mustReply(t, c)
	}
}

// An idle connection is closed after the idle timeout; one whose query is
// still being answered is not idle, whatever the time.
func TestTCPIdleTimeout(t *testing.T) {
	g := newGate()
	defer g.open()
	s := startTCP(t, testLimits(), g.answer)
	idle := dialTCP(t, s.addr)
	busy := dialTCP(t, s.addr)
	send(t, busy, frame(query("slow.example.", 7)))
	waitClosed(t, idle)
	eventually(t, "the idle close counted", func() bool { return s.closedFor(closeIdle) == 1 })
	// The busy connection outlived several idle timeouts and still gets its
	// reply, then goes idle and is closed in turn.
	time.Sleep(2 * testLimits().idle)
	g.open()
	if m := mustReply(t, busy); m.Id != 7 {
		t.Fatalf("reply %d; want 7", m.Id)
	}
	waitClosed(t, busy)
	eventually(t, "every connection released", func() bool { return s.connections() == 0 })
}

// At the limit, a new connection is served and the longest idle one closed.
func TestTCPLimitEvictsTheOldestIdle(t *testing.T) {
	lim := testLimits()
	lim.idle, lim.maxConns = time.Minute, 3
	s := startTCP(t, lim, echoAnswer)
	var conns []*net.TCPConn
	for i := range lim.maxConns {
		c := dialTCP(t, s.addr)
		conns = append(conns, c)
		eventually(t, "the connection idle", func() bool { return s.idleConns() == i+1 })
	}
	// The first becomes the most recently used: the second is now oldest.
	send(t, conns[0], frame(query("a.example.", 1)))
	mustReply(t, conns[0])
	eventually(t, "the first idle again", func() bool { return s.idleConns() == 3 })

	fresh := dialTCP(t, s.addr)
	send(t, fresh, frame(query("b.example.", 2)))
	if m := mustReply(t, fresh); m.Id != 2 {
		t.Fatalf("reply %d; want 2", m.Id)
	}
	waitClosed(t, conns[1])
	for _, c := range []*net.TCPConn{conns[0], conns[2]} {
		send(t, c, frame(query("c.example.", 3)))
		if m := mustReply(t, c); m.Id != 3 {
			t.Fatalf("reply %d; want 3", m.Id)
		}
	}
	if got := s.closedFor(closeEvicted); got != 1 {
		t.Fatalf("%v evictions; want 1", got)
	}
	if n := s.connections(); n != lim.maxConns {
		t.Fatalf("%d connections; want the limit, %d", n, lim.maxConns)
	}
}

// A client dribbling a message it never finishes is no busier than an idle
// one: at the limit it goes before a client that asked since.
func TestTCPLimitEvictsAStalledSender(t *testing.T) {
	lim := testLimits()
	lim.read, lim.idle, lim.maxConns = time.Minute, time.Minute, 2
	s := startTCP(t, lim, echoAnswer)
	active := dialTCP(t, s.addr)
	eventually(t, "the first connection counted", func() bool { return s.connections() == 1 })
	stalled := dialTCP(t, s.addr)
	// Accepted before the active client's query, or it would be the younger
	// idle connection and rightly kept.
	eventually(t, "the second connection counted", func() bool { return s.connections() == 2 })
	q := frame(query("a.example.", 1))
	send(t, stalled, q[:len(q)-1])
	send(t, active, q)
	mustReply(t, active)
	eventually(t, "both idle", func() bool { return s.idleConns() == 2 })

	fresh := dialTCP(t, s.addr)
	send(t, fresh, frame(query("b.example.", 2)))
	if m := mustReply(t, fresh); m.Id != 2 {
		t.Fatalf("reply %d; want 2", m.Id)
	}
	waitClosed(t, stalled)
	send(t, active, frame(query("c.example.", 3)))
	if m := mustReply(t, active); m.Id != 3 {
		t.Fatalf("reply %d; want 3: the active client keeps its connection", m.Id)
	}
}

// With every connection at work, a new one is refused rather than taking a
// busy client's connection.
func TestTCPLimitRefusesWhenNoneIsIdle(t *testing.T) {
	g := newGate()
	defer g.open()
	lim := testLimits()
	lim.maxConns = 2
	s := startTCP(t, lim, g.answer)
	var busy []*net.TCPConn
	for i := range lim.maxConns {
		c := dialTCP(t, s.addr)
		send(t, c, frame(query("slow.example.", uint16(i))))
		busy = append(busy, c)
	}
	eventually(t, "both queries held", func() bool { return g.held.Load() == 2 })
	waitClosed(t, dialTCP(t, s.addr))
	if got := value(s.metrics.rejected); got != 1 {
		t.Fatalf("%v rejected; want 1", got)
	}
	g.open()
	for i, c := range busy {
		if m := mustReply(t, c); m.Id != uint16(i) {
			t.Fatalf("reply %d; want %d", m.Id, i)
		}
	}
}

// A client that begins a message and does not finish it within the read
// timeout is disconnected.
func TestTCPSlowSenderIsClosed(t *testing.T) {
	s := startTCP(t, testLimits(), echoAnswer)
	q := frame(query("a.example.", 1))
	for name, part := range map[string][]byte{
		"half a length": q[:1],
		"half a query":  q[:len(q)-3],
	} {
		t.Run(name, func(t *testing.T) {
			before := s.closedFor(closeReadTimeout)
			c := dialTCP(t, s.addr)
			send(t, c, part)
			waitClosed(t, c)
			eventually(t, "a read timeout counted", func() bool { return s.closedFor(closeReadTimeout) == before+1 })
		})
	}
	// A sender that trickles a query within the timeout is answered.
	c := dialTCP(t, s.addr)
	for i := range q {
		send(t, c, q[i:i+1])
		time.Sleep(time.Millisecond)
	}
	if m := mustReply(t, c); m.Id != 1 {
		t.Fatalf("reply %d; want 1", m.Id)
	}
}

// A client that does not read its replies is disconnected once a reply
// waits longer than the write timeout, and its queries free their slots.
func TestTCPClientNotReadingIsClosed(t *testing.T) {
	big := func(_ context.Context, r *dns.Msg, _ netip.AddrPort) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(r)
		txt := &dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET}}
		for range 200 {
			txt.Txt = append(txt.Txt, strings.Repeat("x", 250))
		}
		m.Answer = []dns.RR{txt}
		return m
	}
	s := startTCP(t, testLimits(), big)
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Enough 50 KB replies to fill any socket buffers; the writes are
	// bounded by the server closing the connection.
	go func() {
		for id := range uint16(400) {
			if _, err := c.Write(frame(query("big.example.", id))); err != nil {
				return
			}
		}
	}()
	eventually(t, "a write timeout counted", func() bool { return s.closedFor(closeWrite) == 1 })
	eventually(t, "the connection released", func() bool { return s.connections() == 0 })
}

// Framing that cannot be a DNS message closes the connection; a framed
// message that does not parse gets FORMERR and the connection goes on.
func TestTCPFraming(t *testing.T) {
	s := startTCP(t, testLimits(), echoAnswer)
	t.Run("zero length", func(t *testing.T) {
		c := dialTCP(t, s.addr)
		send(t, c, []byte{0, 0})
		waitClosed(t, c)
	})
	t.Run("shorter than a header", func(t *testing.T) {
		c := dialTCP(t, s.addr)
		send(t, c, frame([]byte{1, 2, 3, 4, 5}))
		waitClosed(t, c)
	})
	t.Run("length prefix cut by the client closing", func(t *testing.T) {
		c := dialTCP(t, s.addr)
		send(t, c, []byte{0})
		_ = c.CloseWrite()
		waitClosed(t, c)
	})
	t.Run("garbage after a header", func(t *testing.T) {
		c := dialTCP(t, s.addr)
		garbage := []byte{0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff}
		send(t, c, frame(garbage), frame(query("after.example.", 9)))
		if m := mustReply(t, c); m.Id != 0xbeef || m.Rcode != dns.RcodeFormatError {
			t.Fatalf("reply id %x rcode %d; want FORMERR for beef", m.Id, m.Rcode)
		}
		if m := mustReply(t, c); m.Id != 9 {
			t.Fatalf("reply %d; want 9: the connection goes on", m.Id)
		}
	})
	t.Run("a response is not answered", func(t *testing.T) {
		c := dialTCP(t, s.addr)
		resp := new(dns.Msg)
		resp.SetQuestion("loop.example.", dns.TypeA)
		resp.Response, resp.Id = true, 4
		b, _ := resp.Pack()
		send(t, c, frame(b), frame(query("after.example.", 5)))
		if m := mustReply(t, c); m.Id != 5 {
			t.Fatalf("reply %d; want only the query's, 5", m.Id)
		}
	})
	t.Run("largest message", func(t *testing.T) {
		// 65535 bytes, the most a length prefix can say: a query padded
		// with trailing zeros, which parsing ignores.
		c := dialTCP(t, s.addr)
		b := make([]byte, 65535)
		copy(b, query("max.example.", 11))
		send(t, c, frame(b), frame(query("after.example.", 12)))
		got := map[uint16]bool{mustReply(t, c).Id: true, mustReply(t, c).Id: true}
		if !got[11] || !got[12] {
			t.Fatalf("replies %v; want 11 and 12", got)
		}
	})
	eventually(t, "malformed closes counted", func() bool { return s.closedFor(closeMalformed) == 2 })
}

// maxtcpqueries closes a connection after that many queries, each answered.
func TestTCPMaxQueries(t *testing.T) {
	lim := testLimits()
	lim.maxQueries = 2
	s := startTCP(t, lim, echoAnswer)
	c := dialTCP(t, s.addr)
	send(t, c, frame(query("a.example.", 1)), frame(query("b.example.", 2)), frame(query("c.example.", 3)))
	// Replies come in the order they are ready; the third query is never
	// read.
	var ids []int
	for {
		m, err := readReply(c)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("after %v: %v; want the server to close", ids, err)
			}
			break
		}
		ids = append(ids, int(m.Id))
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []int{1, 2}) {
		t.Fatalf("replies %v; want 1 and 2", ids)
	}
}

// Shutdown stops reading at once, closes idle connections, and lets a
// query in flight send its reply within the grace.
func TestTCPShutdownFinishesQueriesInFlight(t *testing.T) {
	g := newGate()
	defer g.open()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newTCPServer(ln, g.answer, slog.New(slog.DiscardHandler), newTCPMetrics(prometheus.NewRegistry()))
	s.setLimits(testLimits())
	served := make(chan error, 1)
	go func() { served <- s.serve() }()
	addr := ln.Addr().String()
	idle := dialTCP(t, addr)
	busy := dialTCP(t, addr)
	send(t, busy, frame(query("slow.example.", 3)))
	eventually(t, "the slow query held", func() bool { return g.held.Load() == 1 })

	stopped := make(chan struct{})
	go func() { s.shutdown(5 * time.Second); close(stopped) }()
	waitClosed(t, idle)
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	g.open()
	if m := mustReply(t, busy); m.Id != 3 {
		t.Fatalf("reply %d; want 3", m.Id)
	}
	<-stopped
	waitClosed(t, busy)
	if n := s.connections(); n != 0 {
		t.Fatalf("%d connections after shutdown", n)
	}
}

// Goroutines come back to where they were once many connections closed.
func TestTCPConnectionsLeaveNothingBehind(t *testing.T) {
	lim := testLimits()
	lim.maxConns = 1000
	s := startTCP(t, lim, echoAnswer)
	base := runtime.NumGoroutine()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			c, err := net.Dial("tcp", s.addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if _, err := c.Write(frame(query("a.example.", uint16(i)))); err != nil {
				t.Error(err)
				return
			}
			if m, err := readReply(c); err != nil || m.Id != uint16(i) {
				t.Errorf("reply %v %v", m, err)
			}
		})
	}
	wg.Wait()
	eventually(t, "every connection released", func() bool { return s.connections() == 0 })
	eventually(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= base+2 })
	if got := value(s.metrics.open); got != 0 {
		t.Fatalf("open gauge %v; want 0", got)
	}
}

// A reload hands a listener that stays open its new limits; connections
// follow them from their next message.
func TestReloadChangesTCPLimits(t *testing.T) {
	s := NewServer("Corefile", slog.New(slog.DiscardHandler))
	ctx := t.Context()
	var first *listener
	for _, idle := range []time.Duration{5 * time.Second, 20 * time.Second} {
		cfg, err := ParseConfig("Corefile", []byte(".:0 {\n bind 127.0.0.1\n timeouts {\n  idle "+idle.String()+"\n }\n}\n"))
		if err != nil {
			t.Fatal(err)
		}
		rt, err := Build(cfg, s.Shared)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.apply(ctx, rt); err != nil {
			t.Fatal(err)
		}
		s.mu.Lock()
		l := s.listeners["127.0.0.1:0"]
		s.mu.Unlock()
		if l == nil || (first != nil && l != first) {
			t.Fatal("want one listener for 127.0.0.1:0, kept across the reload")
		}
		first = l
		if got := l.tcp.limits.Load(); got.idle != idle || got.maxConns != defaultTCPMaxConns {
			t.Fatalf("limits %+v; want idle %v and the default limit", *got, idle)
		}
	}
	s.shutdown(0)
}

// Any framed message either becomes a query, gets an early reply carrying
// its ID, or is dropped as a response; none panics.
func FuzzParseTCPQuery(f *testing.F) {
	f.Add(query("a.example.", 1))
	f.Add([]byte{0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff})
	f.Add([]byte{0, 1, 0x28, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 12 {
			return // the reader closes the connection first
		}
		r, early := parseTCPQuery(b)
		id := binary.BigEndian.Uint16(b)
		switch {
		case r != nil && early != nil:
			t.Fatal("both a query and an early reply")
		case r != nil && (r.Id != id || len(r.Question) != 1):
			t.Fatalf("query %v from ID %d", r, id)
		case early != nil && (early.Id != id || !early.Response):
			t.Fatalf("early reply %v to ID %d", early, id)
		case r == nil && early == nil && b[2]&0x80 == 0:
			t.Fatal("a query dropped without a reply")
		}
	})
}

// Clients churning through connections at the limit, some idle, some busy,
// some cut off mid-message, leave the server's books balanced: nothing
// open, nothing counted, nothing in the idle list.
func TestTCPChurnAtTheLimit(t *testing.T) {
	lim := testLimits()
	lim.maxConns = 8
	s := startTCP(t, lim, func(ctx context.Context, r *dns.Msg, client netip.AddrPort) *dns.Msg {
		if r.Id%3 == 0 {
			time.Sleep(time.Millisecond)
		}
		return echoAnswer(ctx, r, client)
	})
	base := runtime.NumGoroutine()
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			for j := range 30 {
				c, err := net.Dial("tcp", s.addr)
				if err != nil {
					t.Error(err)
					return
				}
				q := frame(query("churn.example.", uint16(i*100+j)))
				switch j % 4 {
				case 0: // idle, then gone
				case 1: // half a message
					_, _ = c.Write(q[:5])
				default: // a few queries; the reply may never come if evicted
					_, _ = c.Write(append(append([]byte{}, q...), q...))
					_, _ = readReply(c)
				}
				c.Close()
			}
		})
	}
	wg.Wait()
	eventually(t, "every connection released", func() bool { return s.connections() == 0 })
	s.mu.Lock()
	live, idleHead := s.live, s.idle.front()
	s.mu.Unlock()
	if live != 0 || idleHead != nil {
		t.Fatalf("live %d, idle list head %v; want none", live, idleHead)
	}
	if got := value(s.metrics.open); got != 0 {
		t.Fatalf("open gauge %v; want 0", got)
	}
	eventually(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= base+2 })
	t.Logf("evicted %v, refused %v, read timeouts %v", s.closedFor(closeEvicted), value(s.metrics.rejected), s.closedFor(closeReadTimeout))
}
