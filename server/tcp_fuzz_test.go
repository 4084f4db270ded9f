package server

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// FuzzTCPStream writes a client's whole byte stream to the TCP server on
// loopback, half-closes, and reads every reply until the server closes.
// The framing reader must answer exactly the queries framed before the
// stream ends: one reply each, a whole response carrying its ID, in any
// order; responses in the stream get none. A length below 12 ends the
// connection: queries before it get at most one reply each (the reset of a
// connection closed with bytes unread may overtake some). Afterwards the
// server holds no connection.
func FuzzTCPStream(f *testing.F) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	s := newTCPServer(ln, echoAnswer, slog.New(slog.DiscardHandler), newTCPMetrics(prometheus.NewRegistry()))
	s.setLimits(tcpLimits{read: time.Second, write: time.Second, idle: time.Second, maxConns: 100})
	done := make(chan struct{})
	go func() { _ = s.serve(); close(done) }()
	f.Cleanup(func() { s.shutdown(time.Second); <-done })

	response := query("loop.example.", 4)
	response[2] |= 0x80
	garbage := []byte{0xbe, 0xef, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff}
	update := []byte{0, 7, byte(dns.OpcodeUpdate) << 3, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, seed := range [][]byte{
		frame(query("a.example.", 1)),
		append(frame(query("a.example.", 1)), frame(query("b.example.", 2))...),
		append(frame(garbage), frame(query("after.example.", 9))...),
		append(frame(response), frame(query("after.example.", 5))...),
		append(frame(update), frame(query("after.example.", 6))...),
		append(frame(query("a.example.", 1)), 0, 3, 1, 2, 3),
		append(frame(query("a.example.", 1)), 0),
		append(frame(query("a.example.", 1)), frame(query("cut.example.", 2))[:10]...),
		{0, 0},
		{},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		// Read while writing: a client that only writes would stall the
		// server's replies and, through them, its reading.
		got := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(c)
			got <- b
		}()
		// Either may fail once the server has closed on a malformed frame.
		_, _ = c.Write(stream)
		_ = c.(*net.TCPConn).CloseWrite()
		replies := <-got

		var want, have []uint16
		malformed := false
		for b := stream; len(b) >= 2; {
			n := int(binary.BigEndian.Uint16(b))
			if n < 12 {
				malformed = true
				break
			}
			if len(b) < 2+n {
				break
			}
			if b[2+2]&0x80 == 0 {
				want = append(want, binary.BigEndian.Uint16(b[2:]))
			}
			b = b[2+n:]
		}
		for b := replies; len(b) > 0; {
			if len(b) < 2 || len(b) < 2+int(binary.BigEndian.Uint16(b)) {
				t.Fatalf("reply stream cut inside a frame: % x", b)
			}
			n := int(binary.BigEndian.Uint16(b))
			m := new(dns.Msg)
			if err := m.Unpack(b[2 : 2+n]); err != nil || !m.Response {
				t.Fatalf("reply %v (unpack: %v) is not a response", m, err)
			}
			have = append(have, m.Id)
			b = b[2+n:]
		}
		slices.Sort(want)
		slices.Sort(have)
		switch {
		case !malformed && !slices.Equal(want, have):
			t.Fatalf("replies to IDs %v, want one to each query %v", have, want)
		case malformed && !subset(have, want):
			// Closing a connection with bytes unread resets it, and the
			// reset may overtake replies already written: some may be lost,
			// none may be extra.
			t.Fatalf("replies to IDs %v, want at most one to each query %v", have, want)
		}
		for deadline := time.Now().Add(5 * time.Second); s.connections() > 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d connections left after the client closed", s.connections())
			}
		}
	})
}

// subset reports whether every element of sorted a is in sorted b, as
// often as it is in a.
func subset(a, b []uint16) bool {
	j := 0
	for _, x := range a {
		for j < len(b) && b[j] < x {
			j++
		}
		if j == len(b) || b[j] != x {
			return false
		}
		j++
	}
	return true
}
