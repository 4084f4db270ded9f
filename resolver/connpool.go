package resolver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// maxIdleConns caps the idle connections kept per upstream and transport;
// more are closed when returned, so a burst does not leave sockets behind.
const maxIdleConns = 64

// connPool keeps idle connections to one upstream over one transport. A query
// takes a connection for itself and gives it back when the reply is in, so a
// socket never carries two queries at once.
type connPool struct {
	network, addr string
	expire        time.Duration

	mu     sync.Mutex // protects idle and closed
	idle   []*upConn  // most recently used last
	closed bool       // set by closeAll: returned connections are closed
}

// upConn is a connection with the time it was last returned.
type upConn struct {
	net.Conn
	used time.Time
	// raw reads UDP replies: it waits for a datagram before a buffer is
	// taken for it. Nil over TCP.
	raw syscall.RawConn
	// readFn is readOnce, bound once per connection rather than per read;
	// it leaves its results in the fields below. A connection carries one
	// query at a time.
	readFn  func(fd uintptr) bool
	readBuf *[]byte
	readN   int
	readErr error
}

// get returns an idle connection, or dials a new one; reused says which.
func (p *connPool) get(deadline time.Time) (c *upConn, reused bool, err error) {
	now := time.Now()
	p.mu.Lock()
	for len(p.idle) > 0 {
		c = p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		if now.Sub(c.used) < p.expire {
			p.mu.Unlock()
			return c, true, nil
		}
		c.Close()
	}
	p.mu.Unlock()
	d := net.Dialer{Deadline: deadline, Timeout: dialTimeout}
	conn, err := d.Dial(p.network, p.addr)
	if err != nil {
		return nil, false, err
	}
	c = &upConn{Conn: conn}
	if sc, ok := conn.(*net.UDPConn); ok {
		if c.raw, err = sc.SyscallConn(); err != nil {
			conn.Close()
			return nil, false, err
		}
		c.readFn = c.readOnce
	}
	return c, false, nil
}

// put returns a healthy connection to the pool.
func (p *connPool) put(c *upConn) {
	c.used = time.Now()
	p.mu.Lock()
	if !p.closed && len(p.idle) < maxIdleConns {
		p.idle = append(p.idle, c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

func (p *connPool) closeAll() {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

var (
	errShortReply  = errors.New("reply shorter than a DNS header")
	errNotResponse = errors.New("reply without the QR bit")
	// errReplyTooLarge is a UDP reply that filled the read buffer and may
	// have been cut: it is asked again over TCP, like a truncated one.
	errReplyTooLarge = errors.New("UDP reply larger than the read buffer")
)

// udpReplySize is the buffer a UDP reply is read into. Every query waiting
// on an upstream holds one, so it is kept to what replies are in practice
// (EDNS0 sizes are 1232 to 4096); a larger one is fetched over TCP.
const udpReplySize = dns.DefaultMsgSize

var udpReplyBuffers = sync.Pool{New: func() any { b := make([]byte, udpReplySize); return &b }}

// roundTrip writes one query and reads the reply with the same ID, skipping
// stray replies (a late answer to a query that timed out earlier).
func (c *upConn) roundTrip(wire []byte, id uint16, tcp bool, deadline time.Time) (*dns.Msg, error) {
	if err := c.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if tcp {
		var l [2]byte
		binary.BigEndian.PutUint16(l[:], uint16(len(wire)))
		if _, err := (&net.Buffers{l[:], wire}).WriteTo(c.Conn); err != nil {
			return nil, err
		}
	} else if _, err := c.Write(wire); err != nil {
		return nil, err
	}
	for {
		m, err := c.readReply(wire, id, tcp)
		if m != nil || err != nil {
			return m, err
		}
	}
}

// readReply reads one message and returns it if it answers the query; a nil
// message and error means it was a stray to skip. While the reply is awaited
// over TCP no buffer is held: the message's length comes first.
func (c *upConn) readReply(wire []byte, id uint16, tcp bool) (*dns.Msg, error) {
	var buf []byte
	var n int
	if tcp {
		var l [2]byte
		if _, err := io.ReadFull(c.Conn, l[:]); err != nil {
			return nil, err
		}
		n = int(binary.BigEndian.Uint16(l[:]))
		bufp := readBuffers.Get().(*[]byte)
		defer readBuffers.Put(bufp)
		buf = *bufp
		if _, err := io.ReadFull(c.Conn, buf[:n]); err != nil {
			return nil, err
		}
		if n < 12 {
			return nil, errShortReply
		}
	} else {
		bufp, got, err := c.readDatagram()
		if err != nil {
			return nil, err
		}
		defer udpReplyBuffers.Put(bufp)
		buf, n = *bufp, got
		if n < 12 {
			return nil, nil
		}
	}
	if binary.BigEndian.Uint16(buf) != id || !sameQuestion(buf[:n], wire) {
		return nil, nil
	}
	// A message that is not a response (our query reflected back, a broken
	// upstream) must not be passed on as the answer.
	if buf[2]&0x80 == 0 {
		return nil, errNotResponse
	}
	if !tcp && n == len(buf) {
		return nil, errReplyTooLarge
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		return nil, fmt.Errorf("unpack reply: %w", err)
	}
	return m, nil
}

// readDatagram waits (until the connection's deadline) for a datagram and
// reads it into a pooled buffer, which is taken only once there is one to
// read: a query waiting on an upstream holds no buffer.
func (c *upConn) readDatagram() (bufp *[]byte, n int, err error) {
	if c.raw == nil {
		// Not a socket of ours (a test's connection): an ordinary read.
		bufp = udpReplyBuffers.Get().(*[]byte)
		if n, err = c.Read(*bufp); err != nil {
			udpReplyBuffers.Put(bufp)
			return nil, 0, err
		}
		return bufp, n, nil
	}
	c.readBuf, c.readErr = nil, nil
	err = c.raw.Read(c.readFn)
	if err == nil && c.readErr != nil {
		err = os.NewSyscallError("read", c.readErr)
	}
	if err != nil {
		return nil, 0, err
	}
	return c.readBuf, c.readN, nil
}

// readOnce reads a datagram if one is there; it returns false to wait for
// one.
func (c *upConn) readOnce(fd uintptr) bool {
	b := udpReplyBuffers.Get().(*[]byte)
	for {
		c.readN, c.readErr = unix.Read(int(fd), *b)
		if c.readErr != unix.EINTR {
			break
		}
	}
	if c.readErr == nil {
		c.readBuf = b
		return true
	}
	udpReplyBuffers.Put(b)
	return c.readErr != unix.EAGAIN
}

// sameQuestion checks on the wire that a reply answers the query's question:
// the same name (in any case), type and class. The question is the first name
// of a message, so it is never compressed and the bytes compare directly. A
// reply without a question (some servers' FORMERR) is accepted only when it
// has no answer or authority records: nothing then says which name they
// are for.
func sameQuestion(reply, query []byte) bool {
	if binary.BigEndian.Uint16(reply[4:]) == 0 {
		return binary.BigEndian.Uint16(reply[6:]) == 0 && binary.BigEndian.Uint16(reply[8:]) == 0
	}
	end := questionEnd(query)
	if end < 0 || end > len(reply) {
		return false
	}
	return equalFold(reply[12:end], query[12:end])
}

// questionEnd returns the offset just past the first question, or -1.
func questionEnd(msg []byte) int {
	off := 12
	for off < len(msg) {
		l := int(msg[off])
		if l == 0 {
			off += 5 // root label, type, class
			if off > len(msg) {
				return -1
			}
			return off
		}
		if l&0xc0 != 0 {
			return -1
		}
		off += l + 1
	}
	return -1
}

func equalFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
