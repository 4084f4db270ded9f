package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// tcpLimits bound what one client may hold of a TCP listener. A reload
// replaces them; open connections follow the new values from their next
// message on.
type tcpLimits struct {
	// read bounds the time from a message's first byte to its last.
	read time.Duration
	// write bounds the time one reply may take to leave.
	write time.Duration
	// idle is how long a connection stays open after its last message once
	// none of its queries is being answered.
	idle time.Duration
	// maxConns bounds the open connections (see tcpServer).
	maxConns int
	// maxQueries closes a connection after that many queries (0: never),
	// CoreDNS's maxtcpqueries: clients behind a connection-based load
	// balancer then spread over replicas again.
	maxQueries int
}

// Defaults of the timeouts directive. The idle timeout is CoreDNS's and the
// previous server's; read and write are generous for a query of a few
// hundred bytes and a reply of at most 64 KiB on any network a cluster has.
const (
	defaultTCPRead     = 3 * time.Second
	defaultTCPWrite    = 5 * time.Second
	defaultTCPIdle     = 10 * time.Second
	defaultTCPMaxConns = 1000
)

func defaultTCPLimits() tcpLimits {
	return tcpLimits{read: defaultTCPRead, write: defaultTCPWrite, idle: defaultTCPIdle, maxConns: defaultTCPMaxConns}
}

// tcpPipeline bounds the queries of one connection being answered at once
// (RFC 7766 §6.2.1.1). Beyond it the reader stops reading and TCP's flow
// control holds the client back; it keeps one client from turning into
// thousands of goroutines waiting on an upstream.
const tcpPipeline = 16

// tcpReadBuffer is each connection's read buffer: a burst of pipelined
// queries is read with one system call and parsed in place. A larger
// message is read into a buffer of its own.
const tcpReadBuffer = 1024

// Why connections end, the reason label of
// clusterdns_tcp_connections_closed_total.
const (
	closeClient      = "client"       // the client closed or reset it
	closeIdle        = "idle"         // idle timeout
	closeEvicted     = "evicted"      // the oldest idle one, for a new one at the limit
	closeReadTimeout = "read_timeout" // a message begun and not finished in time
	closeWrite       = "write"        // a reply could not be written in time
	closeMalformed   = "malformed"    // a length that cannot frame a DNS message
	closeMaxQueries  = "max_queries"  // maxtcpqueries reached
	closeShutdown    = "shutdown"     // the listener closed
)

// tcpServer answers DNS over TCP on one listening socket (RFC 7766).
//
// Each connection has one reader goroutine. It reads and parses a message,
// then hands the query to a goroutine of its own and reads on, so that
// pipelined queries are answered concurrently and a query waiting on an
// upstream never holds up the ones behind it; replies go out in the order
// they are ready, each written whole under the connection's write lock.
//
// Connections are counted against a limit. At the limit, a new connection
// closes the one that has been idle longest and takes its place; if none is
// idle the new one is closed at once. A connection is idle while none of its
// queries is being answered, and its age counts from its last complete
// message: a client holding a connection open without asking, or dribbling
// a message it never finishes, ages, while one that asks stays young.
// Clients at work keep their connections, and clients that merely hold them
// cannot lock out one that asks: the idle pay for the newcomer, least
// recently used first, as a cache evicts.
type tcpServer struct {
	ln      net.Listener
	answer  func(ctx context.Context, r *dns.Msg, client netip.AddrPort) *dns.Msg
	log     *slog.Logger
	metrics *tcpMetrics
	limits  atomic.Pointer[tcpLimits]
	stopped chan struct{} // closed by shutdown
	wg      sync.WaitGroup

	mu      sync.Mutex // protects the fields below and every tcpConn's state
	conns   map[*tcpConn]struct{}
	live    int      // conns not evicted
	idle    connList // idle connections, longest idle first
	closing bool
}

// tcpConn is one client connection.
type tcpConn struct {
	s      *tcpServer
	nc     *net.TCPConn
	client netip.AddrPort
	slots  chan struct{} // one token per query in flight
	wmu    sync.Mutex    // serialises replies

	// The fields below are protected by s.mu.
	prev, next *tcpConn // neighbours in s.idle
	inIdle     bool
	idleSince  time.Time
	inflight   int // queries being answered
	readerDone bool
	evicted    bool
	released   bool
	reason     string // why it closed; the first cause wins
}

func newTCPServer(ln net.Listener, answer func(context.Context, *dns.Msg, netip.AddrPort) *dns.Msg, log *slog.Logger, metrics *tcpMetrics) *tcpServer {
	s := &tcpServer{
		ln:      ln,
		answer:  answer,
		log:     log,
		metrics: metrics,
		stopped: make(chan struct{}),
		conns:   make(map[*tcpConn]struct{}),
	}
	d := defaultTCPLimits()
	s.limits.Store(&d)
	return s
}

func (s *tcpServer) setLimits(l tcpLimits) { s.limits.Store(&l) }

// serve accepts connections until the listener closes.
func (s *tcpServer) serve() error {
	var backoff time.Duration
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors: an idle connection gives one back,
			// else wait for one to close. Nothing else is worth stopping for.
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				if s.evictOldest() {
					continue
				}
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("tcp accept", "addr", s.ln.Addr().String(), "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.admit(nc.(*net.TCPConn))
	}
}

// admit starts serving a new connection, making room for it at the limit.
func (s *tcpServer) admit(nc *net.TCPConn) {
	lim := s.limits.Load()
	var client netip.AddrPort
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		client = a.AddrPort()
	}
	c := &tcpConn{s: s, nc: nc, client: client, slots: make(chan struct{}, tcpPipeline)}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	var victim *tcpConn
	if s.live >= lim.maxConns {
		victim = s.evictLocked()
		if victim == nil {
			s.mu.Unlock()
			s.metrics.rejected.Inc()
			nc.Close()
			return
		}
	}
	s.conns[c] = struct{}{}
	s.live++
	c.enterIdle()
	s.metrics.open.Inc()
	s.wg.Add(1)
	s.mu.Unlock()
	if victim != nil {
		victim.nc.Close()
	}
	go c.read()
}

// evictLocked marks the longest idle connection evicted and returns it for
// its socket to be closed, or returns nil when none is idle.
func (s *tcpServer) evictLocked() *tcpConn {
	c := s.idle.front()
	if c == nil {
		return nil
	}
	s.idle.remove(c)
	c.inIdle = false
	c.evicted = true
	c.setReason(closeEvicted)
	s.live--
	return c
}

func (s *tcpServer) evictOldest() bool {
	s.mu.Lock()
	c := s.evictLocked()
	s.mu.Unlock()
	if c == nil {
		return false
	}
	c.nc.Close()
	return true
}

// shutdown stops accepting and reading, lets the queries in flight send
// their replies for up to grace, then closes every connection.
func (s *tcpServer) shutdown(grace time.Duration) {
	s.ln.Close()
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.stopped)
	}
	conns := make([]*tcpConn, 0, len(s.conns))
	for c := range s.conns {
		c.setReason(closeShutdown)
		conns = append(conns, c)
	}
	s.mu.Unlock()
	// Closing the read side ends every reader at once, even one waiting in
	// a read; replies can still be written.
	for _, c := range conns {
		_ = c.nc.CloseRead()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(grace):
	}
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
}

// connections counts the open connections (for tests).
func (s *tcpServer) connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// read is the connection's reader: it frames, parses and dispatches
// messages until the connection ends, then releases it once the last reply
// is written.
func (c *tcpConn) read() {
	defer c.s.wg.Done()
	reason := c.readLoop()
	c.s.mu.Lock()
	c.setReason(reason)
	c.readerDone = true
	c.leaveIdle()
	release := c.inflight == 0
	c.s.mu.Unlock()
	if release {
		c.release()
	}
}

// tcpReaders are the connections' read buffers, reused: clients that open
// a connection per query then cost no buffer each.
var tcpReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, tcpReadBuffer) }}

func (c *tcpConn) readLoop() string {
	br := tcpReaders.Get().(*bufio.Reader)
	br.Reset(c.nc)
	defer func() {
		br.Reset(nil)
		tcpReaders.Put(br)
	}()
	var hdr [2]byte
	for served := 0; ; served++ {
		lim := c.s.limits.Load()
		if lim.maxQueries > 0 && served >= lim.maxQueries {
			return closeMaxQueries
		}
		select {
		case c.slots <- struct{}{}:
		case <-c.s.stopped:
			return closeShutdown
		}
		if br.Buffered() == 0 {
			if reason := c.await(br, lim.idle); reason != "" {
				<-c.slots
				return reason
			}
		}
		r, reason := c.readMessage(br, hdr[:], lim.read)
		if reason == "" && !c.received(r != nil) {
			reason = closeEvicted
		}
		if reason != "" || r == nil {
			<-c.slots
			if reason != "" {
				return reason
			}
			continue
		}
		c.s.wg.Add(1)
		go c.serve(r)
	}
}

// await waits for the first byte of a message for as long as the
// connection is not idle longer than idle; it returns why it gave up.
func (c *tcpConn) await(br *bufio.Reader, idle time.Duration) string {
	deadline := time.Now().Add(idle)
	for {
		_ = c.nc.SetReadDeadline(deadline)
		_, err := br.Peek(1)
		if err == nil {
			return ""
		}
		if !isTimeout(err) {
			return closeClient
		}
		// The deadline counts from when the connection last became idle:
		// answers that were in flight kept it busy until then.
		c.s.mu.Lock()
		now := time.Now()
		switch {
		case c.inIdle && now.Sub(c.idleSince) >= idle:
			c.s.mu.Unlock()
			return closeIdle
		case c.inIdle:
			deadline = c.idleSince.Add(idle)
		default:
			deadline = now.Add(idle)
		}
		c.s.mu.Unlock()
	}
}

// readMessage reads one length-prefixed message and parses it. It returns
// the query to answer, or nil for a message that got its reply already or
// gets none; or why the connection must close.
func (c *tcpConn) readMessage(br *bufio.Reader, hdr []byte, timeout time.Duration) (*dns.Msg, string) {
	// A message that arrived whole needs no deadline: the usual case, one
	// query in one segment, then costs no timer.
	armed := false
	arm := func() {
		if !armed {
			armed = true
			_ = c.nc.SetReadDeadline(time.Now().Add(timeout))
		}
	}
	if br.Buffered() < len(hdr) {
		arm()
	}
	if _, err := io.ReadFull(br, hdr); err != nil {
		return nil, readFailure(err)
	}
	n := int(binary.BigEndian.Uint16(hdr))
	if n < 12 {
		// Shorter than a DNS header: the stream cannot be trusted to be
		// framed any more.
		return nil, closeMalformed
	}
	if br.Buffered() < n {
		arm()
	}
	var b []byte
	var err error
	if n <= br.Size() {
		b, err = br.Peek(n)
	} else {
		b = make([]byte, n)
		_, err = io.ReadFull(br, b)
	}
	if err != nil {
		return nil, readFailure(err)
	}
	r, early := parseTCPQuery(b)
	if n <= br.Size() {
		_, _ = br.Discard(n)
	}
	if early != nil {
		c.write(early)
		return nil, ""
	}
	return r, ""
}

func readFailure(err error) string {
	if isTimeout(err) {
		return closeReadTimeout
	}
	return closeClient
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// parseTCPQuery parses a framed message: the query to answer, or the reply
// to send without answering, or neither for a response (never answered, so
// that we take no part in a loop).
func parseTCPQuery(b []byte) (r, early *dns.Msg) {
	var h dns.MsgHdr
	h.Id = binary.BigEndian.Uint16(b)
	bits := binary.BigEndian.Uint16(b[2:])
	if bits&(1<<15) != 0 {
		return nil, nil
	}
	h.Opcode = int(bits>>11) & 0xF
	if h.Opcode != dns.OpcodeQuery && h.Opcode != dns.OpcodeNotify {
		return nil, headerReply(h, dns.RcodeNotImplemented)
	}
	r = new(dns.Msg)
	if err := r.Unpack(b); err != nil || !plausibleQuery(r) {
		return nil, headerReply(h, dns.RcodeFormatError)
	}
	return r, nil
}

// serve answers one query and writes its reply.
func (c *tcpConn) serve(r *dns.Msg) {
	defer c.s.wg.Done()
	c.write(c.s.answer(context.Background(), r, c.client))
	c.finish()
}

// received notes a complete message: one more query being answered (the
// connection is busy until it is), or else activity that makes the idle
// connection the most recently used. It reports false when the connection
// was evicted meanwhile: the query is dropped with it.
func (c *tcpConn) received(query bool) bool {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.evicted {
		return false
	}
	c.leaveIdle()
	if query {
		c.inflight++
	} else if c.inflight == 0 {
		c.enterIdle()
	}
	return true
}

// finish marks a query answered and returns its slot; the connection turns
// idle if it was the last, or is released if the reader has ended.
func (c *tcpConn) finish() {
	<-c.slots
	c.s.mu.Lock()
	c.inflight--
	release := c.inflight == 0 && c.readerDone
	if c.inflight == 0 {
		c.enterIdle()
	}
	c.s.mu.Unlock()
	if release {
		c.release()
	}
}

// release closes the connection once neither its reader nor any answer
// uses it.
func (c *tcpConn) release() {
	c.s.mu.Lock()
	if c.released {
		c.s.mu.Unlock()
		return
	}
	c.released = true
	delete(c.s.conns, c)
	if !c.evicted {
		c.s.live--
	}
	c.s.metrics.open.Dec()
	c.s.metrics.closed.WithLabelValues(c.reason).Inc()
	c.s.mu.Unlock()
	c.nc.Close()
}

// tcpBufs hold replies being packed: the length prefix and the message.
var tcpBufs = sync.Pool{New: func() any { b := make([]byte, 2+dns.DefaultMsgSize); return &b }}

// write sends one reply. A client that does not take it within the write
// timeout loses the connection: a reader that stops reading must not pin
// the answers queued behind it.
func (c *tcpConn) write(m *dns.Msg) {
	bp := tcpBufs.Get().(*[]byte)
	defer tcpBufs.Put(bp)
	buf := *bp
	b, err := packReply(m, buf[2:], c.s.log, c.client)
	if err != nil {
		c.s.log.Error("packing a header-only reply", "client", c.client.String(), "err", err)
		return
	}
	var out []byte
	if len(b) <= len(buf)-2 && &b[0] == &buf[2] {
		out = buf[:2+len(b)]
	} else {
		// It did not fit; PackBuffer made a buffer of its own.
		out = make([]byte, 2+len(b))
		copy(out[2:], b)
	}
	binary.BigEndian.PutUint16(out, uint16(len(b)))
	timeout := c.s.limits.Load().write
	c.wmu.Lock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(timeout))
	_, err = c.nc.Write(out)
	c.wmu.Unlock()
	if err != nil {
		c.s.log.Debug("tcp write reply", "client", c.client.String(), "err", err)
		c.s.mu.Lock()
		c.setReason(closeWrite)
		c.s.mu.Unlock()
		// The reader wakes from its read and ends the connection.
		c.nc.Close()
	}
}

// setReason records why the connection closes unless a cause is known;
// s.mu must be held.
func (c *tcpConn) setReason(r string) {
	if c.reason == "" {
		c.reason = r
	}
}

// enterIdle and leaveIdle move the connection into and out of the idle
// list; s.mu must be held.
func (c *tcpConn) enterIdle() {
	if !c.inIdle && !c.evicted && !c.readerDone {
		c.inIdle = true
		c.idleSince = time.Now()
		c.s.idle.pushBack(c)
	}
}

func (c *tcpConn) leaveIdle() {
	if c.inIdle {
		c.inIdle = false
		c.s.idle.remove(c)
	}
}

// connList is an intrusive doubly linked list of connections: constant time
// to append, to remove any, and to find the oldest.
type connList struct{ head, tail *tcpConn }

func (l *connList) front() *tcpConn { return l.head }

func (l *connList) pushBack(c *tcpConn) {
	c.prev, c.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = c
	} else {
		l.head = c
	}
	l.tail = c
}

func (l *connList) remove(c *tcpConn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		l.tail = c.prev
	}
	c.prev, c.next = nil, nil
}

// tcpMetrics count the TCP connections of every listener.
type tcpMetrics struct {
	open     prometheus.Gauge
	closed   *prometheus.CounterVec // reason
	rejected prometheus.Counter
}

func newTCPMetrics(reg prometheus.Registerer) *tcpMetrics {
	m := &tcpMetrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "clusterdns", Subsystem: "tcp", Name: "connections",
			Help: "Open DNS-over-TCP connections.",
		}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "clusterdns", Subsystem: "tcp", Name: "connections_closed_total",
			Help: "DNS-over-TCP connections closed, by reason: client, idle, evicted, read_timeout, write, malformed, max_queries, shutdown.",
		}, []string{"reason"}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "clusterdns", Subsystem: "tcp", Name: "connections_rejected_total",
			Help: "DNS-over-TCP connections refused at the limit because no connection was idle.",
		}),
	}
	reg.MustRegister(m.open, m.closed, m.rejected)
	return m
}
