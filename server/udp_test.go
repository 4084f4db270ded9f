package server

import (
	"context"
	"encoding/binary"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/clusterdns/clusterdns/resolver"
)

// startUDP serves answer on addr with one base reader until the test ends.
func startUDP(t *testing.T, addr string, answer func(context.Context, *dns.Msg, netip.AddrPort) *dns.Msg) *net.UDPAddr {
	t.Helper()
	a, _ := startUDPServer(t, addr, answer)
	return a
}

func startUDPServer(t *testing.T, addr string, answer func(context.Context, *dns.Msg, netip.AddrPort) *dns.Msg) (*net.UDPAddr, *udpServer) {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s, err := newUDPServer(pc.(*net.UDPConn), answer, slog.New(slog.DiscardHandler), 1)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.serve(); close(done) }()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().(*net.UDPAddr), s
}

func echoAnswer(_ context.Context, r *dns.Msg, _ netip.AddrPort) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	return m
}

// exchange sends datagrams on a socket connected to server, which only
// accepts datagrams from exactly that address, and returns the first reply.
func exchange(t *testing.T, server netip.AddrPort, datagrams ...[]byte) *dns.Msg {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, d := range datagrams {
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no reply from %s: %v", server, err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	return m
}

func query(name string, id uint16) []byte {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.Id = id
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// On a wildcard socket the reply comes from the address the client asked,
// not from whatever address the kernel would pick: 127.0.0.2 is local, but
// the route to it prefers 127.0.0.1 as source.
func TestUDPRepliesFromTheAddressAsked(t *testing.T) {
	for _, tc := range []struct{ listen, ask string }{
		{"0.0.0.0:0", "127.0.0.2"},
		{"[::]:0", "127.0.0.3"},
		{"[::]:0", "::1"},
	} {
		t.Run(tc.listen+"→"+tc.ask, func(t *testing.T) {
			a := startUDP(t, tc.listen, echoAnswer)
			server := netip.AddrPortFrom(netip.MustParseAddr(tc.ask), uint16(a.Port))
			if m := exchange(t, server, query("a.example.", 7)); m.Id != 7 || !m.Response {
				t.Fatalf("reply %v, want the echo of query 7", m)
			}
		})
	}
}

func TestUDPMalformedDatagrams(t *testing.T) {
	header := func(id, bits, qd uint16) []byte {
		b := make([]byte, 12)
		binary.BigEndian.PutUint16(b, id)
		binary.BigEndian.PutUint16(b[2:], bits)
		binary.BigEndian.PutUint16(b[4:], qd)
		return b
	}
	response := query("a.example.", 2)
	response[2] |= 0x80
	tests := []struct {
		name      string
		datagram  []byte
		wantID    uint16 // 100: no reply, the following good query's answer comes first
		wantRcode int
	}{
		{"short", []byte{1, 2, 3}, 100, dns.RcodeSuccess},
		{"response", response, 100, dns.RcodeSuccess},
		{"truncated question", header(3, 0, 1), 3, dns.RcodeFormatError},
		{"update opcode", header(4, uint16(dns.OpcodeUpdate)<<11, 1), 4, dns.RcodeNotImplemented},
		{"garbage after header", append(header(5, 0, 1), 0xff, 0xff, 0xff), 5, dns.RcodeFormatError},
	}
	a := startUDP(t, "127.0.0.1:0", echoAnswer)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := []uint16{100}
			if tc.wantID != 100 {
				want = append(want, tc.wantID)
			}
			got := exchangeUntil(t, a.AddrPort(), want, tc.datagram, query("good.example.", 100))
			if len(got) != len(want) {
				t.Errorf("replies to ids %v, want only to %v", slices.Sorted(maps.Keys(got)), want)
			}
			if m := got[tc.wantID]; m.Rcode != tc.wantRcode || !m.Response {
				t.Errorf("reply to id %d: rcode %s, want %s", tc.wantID, dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.wantRcode])
			}
		})
	}
}

// exchangeUntil sends datagrams as exchange does and reads replies until one
// for each of ids has come, returning every reply read by then by id. They
// may come in any order: readers answer concurrently.
func exchangeUntil(t *testing.T, server netip.AddrPort, ids []uint16, datagrams ...[]byte) map[uint16]*dns.Msg {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, d := range datagrams {
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := map[uint16]*dns.Msg{}
	buf := make([]byte, 1500)
	for !allIn(ids, got) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("replies to ids %v, want %v: %v", slices.Sorted(maps.Keys(got)), ids, err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatal(err)
		}
		got[m.Id] = m
	}
	return got
}

func allIn(ids []uint16, got map[uint16]*dns.Msg) bool {
	for _, id := range ids {
		if got[id] == nil {
			return false
		}
	}
	return true
}

// A query waiting on an upstream does not hold up the next one, even with a
// single base reader: it hands the socket to a new reader, which retires
// once the wait is over.
func TestUDPWaitingAnswerDoesNotBlockOthers(t *testing.T) {
	release := make(chan struct{})
	a, s := startUDPServer(t, "127.0.0.1:0", func(ctx context.Context, r *dns.Msg, c netip.AddrPort) *dns.Msg {
		if r.Question[0].Name == "slow.example." {
			w := resolver.WaiterOf(ctx)
			w.Wait()
			<-release
			w.DoneWaiting()
		}
		return echoAnswer(ctx, r, c)
	})
	if m := exchange(t, a.AddrPort(), query("slow.example.", 1), query("fast.example.", 2)); m.Id != 2 {
		t.Fatalf("first reply is for query %d, want the fast query 2", m.Id)
	}
	if n := s.readers.Load(); n != 2 {
		t.Fatalf("%d readers while one waits, want 2", n)
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for s.readers.Load() != 1 {
		// The extra reader retires after a query once another is idle.
		exchange(t, a.AddrPort(), query("fast.example.", 3))
		if time.Now().After(deadline) {
			t.Fatalf("%d readers after the wait, want back to 1", s.readers.Load())
		}
	}
}

// Answers slow for want of CPU add no readers: a burst far beyond what the
// readers answer stays in the socket's buffer (or is dropped by the kernel),
// not in goroutines.
func TestUDPBusyAnswersAddNoReaders(t *testing.T) {
	var most atomic.Int32
	var s *udpServer
	ready := make(chan struct{})
	a, srv := startUDPServer(t, "127.0.0.1:0", func(ctx context.Context, r *dns.Msg, c netip.AddrPort) *dns.Msg {
		<-ready
		for end := time.Now().Add(time.Millisecond); time.Now().Before(end); {
		}
		if n := s.readers.Load(); n > most.Load() {
			most.Store(n)
		}
		return echoAnswer(ctx, r, c)
	})
	s = srv
	close(ready)
	c, err := net.DialUDP("udp", nil, a)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const burst = 100
	for i := range burst {
		if _, err := c.Write(query("busy.example.", uint16(i))); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	for range burst {
		if _, err := c.Read(buf); err != nil {
			break // the kernel may have dropped some of the burst
		}
	}
	if n := most.Load(); n != 1 {
		t.Fatalf("%d readers answered the burst, want the single base reader", n)
	}
}

// The socket asks for a receive buffer that absorbs a pause of the process:
// beyond the kernel's limit when it may (as root), up to it otherwise.
func TestUDPReceiveBuffer(t *testing.T) {
	_, s := startUDPServer(t, "127.0.0.1:0", echoAnswer)
	b, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Fatal(err)
	}
	limit, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	want := min(udpReceiveBuffer, limit)
	if os.Geteuid() == 0 {
		want = udpReceiveBuffer
	}
	raw, err := s.conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	if err := raw.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF) }); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	// The kernel doubles what it grants, for its bookkeeping.
	if got != 2*want {
		t.Fatalf("SO_RCVBUF %d, want %d", got, 2*want)
	}
}

// A reply that cannot be packed reaches the client as a header-only SERVFAIL
// with its ID, not as silence.
func TestPackReplyFallsBackToServfail(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("example.com.", dns.TypeA)
	good := new(dns.Msg)
	good.SetReply(q)
	bad := new(dns.Msg)
	bad.SetReply(q)
	bad.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "not-qualified", Rrtype: dns.TypeA, Class: dns.ClassINET}}}
	for _, tc := range []struct {
		name  string
		m     *dns.Msg
		rcode int
	}{
		{"packs", good, dns.RcodeSuccess},
		{"does not pack", bad, dns.RcodeServerFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := packReply(tc.m, make([]byte, 512), slog.New(slog.DiscardHandler), netip.AddrPort{})
			if err != nil {
				t.Fatal(err)
			}
			got := new(dns.Msg)
			if err := got.Unpack(b); err != nil {
				t.Fatal(err)
			}
			if got.Id != q.Id || !got.Response || got.Rcode != tc.rcode {
				t.Fatalf("id %d response %v rcode %s; want id %d, a response, %s", got.Id, got.Response, dns.RcodeToString[got.Rcode], q.Id, dns.RcodeToString[tc.rcode])
			}
		})
	}
}

// listenUDP binds every socket of the group to the one port, the first
// choosing it when the address asks for port 0, and a port another socket
// holds without SO_REUSEPORT stays busy: start-up must fail there rather
// than share the port.
func TestListenUDPGroup(t *testing.T) {
	conns, err := listenUDP("127.0.0.1:0", 3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if len(conns) != 3 {
		t.Fatalf("%d sockets, want 3", len(conns))
	}
	addr := conns[0].LocalAddr().String()
	for _, c := range conns[1:] {
		if got := c.LocalAddr().String(); got != addr {
			t.Errorf("socket bound to %s, want %s", got, addr)
		}
	}

	plain, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if extra, err := listenUDP(plain.LocalAddr().String(), 2); err == nil {
		for _, c := range extra {
			c.Close()
		}
		t.Errorf("listenUDP took %s, which a socket without SO_REUSEPORT holds", plain.LocalAddr())
	}
}

// Every socket of a listener's group answers: the kernel hands each
// client's flow to one of them, by its addresses and ports.
func TestListenerAnswersOnEverySocket(t *testing.T) {
	l, err := listen("127.0.0.1:0", slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.udp) < 2 {
		t.Fatalf("%d UDP sockets, want at least 2", len(l.udp))
	}
	for i, u := range l.udp {
		u.fast = nil
		u.answer = func(_ context.Context, r *dns.Msg, _ netip.AddrPort) *dns.Msg {
			m := new(dns.Msg)
			m.SetReply(r)
			m.Id = uint16(i)
			return m
		}
		go u.serve()
	}
	defer func() {
		for _, u := range l.udp {
			u.shutdown(time.Second)
		}
		l.tcp.ln.Close()
	}()
	server := l.udp[0].conn.LocalAddr().(*net.UDPAddr).AddrPort()
	seen := make(map[uint16]bool)
	// Each client is a new source port, hashed afresh; a few hundred make
	// missing a socket out of a handful practically impossible.
	for range 300 {
		seen[exchange(t, server, query("a.example.", 9999)).Id] = true
		if len(seen) == len(l.udp) {
			return
		}
	}
	t.Errorf("answers came from sockets %v of %d", seen, len(l.udp))
}
