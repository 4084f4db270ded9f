package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/clusterdns/clusterdns/resolver"
)

// udpServer answers DNS over one UDP socket.
//
// A few readers each read a datagram, answer it and write the reply before
// reading again, reusing their buffers: no goroutine, session or buffer is
// made per query. A query about to wait on an upstream says so (through the
// resolver.Waiter in its context), and if no other reader is then blocked
// reading the socket, its reader starts another before waiting: a slow
// upstream never holds up the cluster zone's answers. Readers beyond the base
// set retire once others are idle again. Readers are never added because
// answering is slow for want of CPU: more of them would only hold more
// queries in the process; under overload the datagrams the readers do not
// get to are dropped by the kernel when the socket's buffer is full.
//
// On a wildcard address the socket reports each datagram's destination and
// the reply is sent from it, so clients on hosts with several addresses get
// their answer from the address they asked.
type udpServer struct {
	conn   *net.UDPConn
	answer func(ctx context.Context, r *dns.Msg, client netip.AddrPort) *dns.Msg
	// fast, when set, answers a datagram on the wire-level fast path into
	// its second argument and returns the reply, or nil for the full path.
	fast    func(in, out []byte, client netip.AddrPort) []byte
	log     *slog.Logger
	pktinfo bool      // the socket reports destinations; replies carry them as source
	buffers sync.Pool // *udpBuffers of readers gone or waiting

	base, max int32
	readers   atomic.Int32 // running
	stopping  atomic.Bool
	idle      atomic.Int32 // blocked in a read
	wg        sync.WaitGroup
}

// udpBufferSize is what a reader keeps for a query and for a reply. Queries
// are far smaller; a reply larger than this (the client allowed it with
// EDNS0) is packed into a buffer of its own. Small buffers keep thousands of
// readers, when upstreams are slow, to a few megabytes.
const udpBufferSize = dns.DefaultMsgSize

// udpMaxReaders bounds the readers of an address, most of them waiting on
// upstreams, across its sockets.
const udpMaxReaders = 4096

// listenUDP binds n UDP sockets to addr in one SO_REUSEPORT group, so that
// the kernel spreads datagrams over them by flow and each reader has a
// socket of its own instead of all contending for one. A port of 0 is
// chosen by the first bind and taken by the rest.
func listenUDP(addr string, n int) ([]*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	var conns []*net.UDPConn
	for range n {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, err
		}
		conns = append(conns, pc.(*net.UDPConn))
		addr = pc.LocalAddr().String()
	}
	return conns, nil
}

// oobSize holds one IPv4 or IPv6 packet-info control message.
var oobSize = max(unix.CmsgSpace(unix.SizeofInet4Pktinfo), unix.CmsgSpace(unix.SizeofInet6Pktinfo))

func newUDPServer(conn *net.UDPConn, answer func(context.Context, *dns.Msg, netip.AddrPort) *dns.Msg, log *slog.Logger, readers int) (*udpServer, error) {
	s := &udpServer{conn: conn, answer: answer, log: log, base: int32(readers), max: udpMaxReaders}
	if err := enlargeReceiveBuffer(conn); err != nil {
		log.Debug("udp receive buffer", "addr", conn.LocalAddr().String(), "err", err)
	}
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok && a.IP.IsUnspecified() {
		if err := enablePktinfo(conn); err != nil {
			return nil, fmt.Errorf("udp %s: %w", a, err)
		}
		s.pktinfo = true
	}
	return s, nil
}

// udpReceiveBuffer is the socket receive buffer asked for: about a thousand
// queries, so that a pause of a few tens of milliseconds (the process not
// scheduled on a busy node, a wave of upstream timeouts answered at once)
// does not drop queries, while under sustained overload the queue it adds
// stays a matter of milliseconds. Over the kernel's limit (rmem_max) it is
// granted only with CAP_NET_ADMIN; otherwise the limit is what we get.
const udpReceiveBuffer = 1 << 20

// enlargeReceiveBuffer asks for udpReceiveBuffer, beyond rmem_max if the
// process may, else up to it.
func enlargeReceiveBuffer(conn *net.UDPConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, udpReceiveBuffer) == nil {
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, udpReceiveBuffer)
	}); err != nil {
		return err
	}
	return serr
}

// enablePktinfo asks the kernel for each datagram's destination address, for
// both families; a socket of one family may refuse the other's option.
func enablePktinfo(conn *net.UDPConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var err4, err6 error
	if err := raw.Control(func(fd uintptr) {
		err4 = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
		err6 = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	}); err != nil {
		return err
	}
	if err4 != nil && err6 != nil {
		return fmt.Errorf("asking for destination addresses: %w", errors.Join(err4, err6))
	}
	return nil
}

// serve runs the base readers and returns when the socket is closed and every
// reader has finished its last query.
func (s *udpServer) serve() {
	for range s.base {
		s.start(true)
	}
	s.wg.Wait()
}

// shutdown stops reading, lets the queries being answered send their replies
// for up to grace, then closes the socket.
func (s *udpServer) shutdown(grace time.Duration) {
	s.stopping.Store(true)
	_ = s.conn.SetReadDeadline(time.Unix(1, 0))
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
	}
	s.conn.Close()
}

// start runs a reader. One started to take over from a waiting reader
// counts as idle from now, not from when it is first scheduled: otherwise,
// on a busy core, every query starting to wait before it runs would start
// one more.
func (s *udpServer) start(permanent bool) {
	s.readers.Add(1)
	s.wg.Add(1)
	r := &udpReader{s: s, permanent: permanent, oob: make([]byte, oobSize), replyOOB: make([]byte, oobSize)}
	if !permanent {
		s.idle.Add(1)
		r.idleCounted = true
	}
	r.ctx = resolver.WithWaiter(context.Background(), r)
	go r.read()
}

// udpBuffers are a reader's query and reply buffers. A reader waiting on an
// upstream needs neither (the query is decoded, the reply not yet made), so
// it lends them to the reader that takes its place: thousands of queries
// waiting cost no buffers.
type udpBuffers struct {
	in, out [udpBufferSize]byte
}

// udpReader is one goroutine reading the socket and answering. Its context
// carries it to the handlers as their resolver.Waiter.
type udpReader struct {
	s         *udpServer
	permanent bool
	ctx       context.Context
	buf       *udpBuffers // nil while waiting
	waits     int         // nested waits of the query being answered
	// idleCounted: the reader was counted idle before its first read.
	idleCounted bool
	oob         []byte
	replyOOB    []byte
}

func (r *udpReader) read() {
	s := r.s
	defer s.wg.Done()
	defer s.readers.Add(-1)
	r.buf = s.getBuffers()
	defer func() { s.buffers.Put(r.buf) }()
	for {
		if !r.idleCounted {
			s.idle.Add(1)
		}
		r.idleCounted = false
		n, oobn, _, client, err := s.conn.ReadMsgUDPAddrPort(r.buf.in[:], r.oob)
		s.idle.Add(-1)
		if err != nil {
			if s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("udp read", "err", err)
			continue
		}
		source := s.source(r.oob[:oobn], r.replyOOB)
		if b := s.fastReply(r.buf.in[:n], r.buf.out[:], client); b != nil {
			s.write(b, client, source)
		} else if m := s.reply(r.ctx, r.buf.in[:n], client); m != nil {
			s.send(m, r.buf.out[:], client, source)
		}
		if !r.permanent && s.idle.Load() > 0 {
			return
		}
	}
}

// Wait is called by a query about to wait on an upstream: the reader lends
// its buffers and, unless another reader is blocked reading the socket,
// starts one to take over.
func (r *udpReader) Wait() {
	r.waits++
	if r.waits > 1 {
		return
	}
	s := r.s
	s.buffers.Put(r.buf)
	r.buf = nil
	if s.idle.Load() == 0 && s.readers.Load() < s.max && !s.stopping.Load() {
		s.start(false)
	}
}

// DoneWaiting takes buffers back when the wait ends.
func (r *udpReader) DoneWaiting() {
	r.waits--
	if r.waits == 0 {
		r.buf = r.s.getBuffers()
	}
}

func (s *udpServer) getBuffers() *udpBuffers {
	if b, ok := s.buffers.Get().(*udpBuffers); ok {
		return b
	}
	return new(udpBuffers)
}

// reply is the answer to one datagram, or nil when it gets none: datagrams
// too short to be DNS and responses are dropped, so that we never take part
// in a reflection or a loop.
func (s *udpServer) reply(ctx context.Context, b []byte, client netip.AddrPort) *dns.Msg {
	if len(b) < 12 {
		return nil
	}
	var h dns.MsgHdr
	h.Id = binary.BigEndian.Uint16(b)
	bits := binary.BigEndian.Uint16(b[2:])
	if bits&(1<<15) != 0 {
		return nil
	}
	h.Opcode = int(bits>>11) & 0xF
	if h.Opcode != dns.OpcodeQuery && h.Opcode != dns.OpcodeNotify {
		return headerReply(h, dns.RcodeNotImplemented)
	}
	r := new(dns.Msg)
	if err := r.Unpack(b); err != nil || !plausibleQuery(r) {
		return headerReply(h, dns.RcodeFormatError)
	}
	return s.answer(ctx, r, client)
}

// plausibleQuery accepts one question carrying no more records than any query
// needs: one answer (a NOTIFY's SOA), one authority record (an IXFR's SOA)
// and two additional ones (OPT and TSIG).
func plausibleQuery(r *dns.Msg) bool {
	return len(r.Question) == 1 && len(r.Answer) <= 1 && len(r.Ns) <= 1 && len(r.Extra) <= 2
}

// headerReply is a reply carrying nothing but its header and rcode.
func headerReply(h dns.MsgHdr, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.Id, m.Opcode, m.Response, m.Rcode = h.Id, h.Opcode, true, rcode
	return m
}

// packReply packs m into buf; a reply that cannot be packed (a record a
// handler built wrong) becomes a SERVFAIL carrying only the header, so the
// client is told rather than left to time out.
func packReply(m *dns.Msg, buf []byte, log *slog.Logger, client netip.AddrPort) ([]byte, error) {
	b, err := m.PackBuffer(buf)
	if err == nil {
		return b, nil
	}
	log.Error("packing a reply; answering SERVFAIL", "client", client.String(), "err", err)
	return headerReply(m.MsgHdr, dns.RcodeServerFailure).PackBuffer(buf)
}

func (s *udpServer) send(m *dns.Msg, buf []byte, client netip.AddrPort, oob []byte) {
	b, err := packReply(m, buf, s.log, client)
	if err != nil {
		s.log.Error("packing a header-only reply", "client", client.String(), "err", err)
		return
	}
	s.write(b, client, oob)
}

func (s *udpServer) write(b []byte, client netip.AddrPort, oob []byte) {
	if _, _, err := s.conn.WriteMsgUDPAddrPort(b, oob, client); err != nil {
		s.log.Debug("write reply", "client", client.String(), "err", err)
	}
}

func (s *udpServer) fastReply(in, out []byte, client netip.AddrPort) []byte {
	if s.fast == nil {
		return nil
	}
	return s.fast(in, out, client)
}

// source turns the destination the kernel reported for a query into the
// control message that sends its reply from that address. It returns nil
// when there is none, and the kernel picks the source.
func (s *udpServer) source(oob, reply []byte) []byte {
	if !s.pktinfo {
		return nil
	}
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < unix.SizeofCmsghdr || int(h.Len) > len(oob) {
			return nil
		}
		data := oob[unix.CmsgLen(0):h.Len]
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			in := (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0]))
			return pktinfo4(reply, in.Addr)
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			in := (*unix.Inet6Pktinfo)(unsafe.Pointer(&data[0]))
			return pktinfo6(reply, in.Addr)
		}
		next := unix.CmsgSpace(int(h.Len) - unix.CmsgLen(0))
		if next > len(oob) {
			return nil
		}
		oob = oob[next:]
	}
	return nil
}

// pktinfo4 writes an IP_PKTINFO control message choosing src as the source.
func pktinfo4(buf []byte, src [4]byte) []byte {
	buf = buf[:unix.CmsgSpace(unix.SizeofInet4Pktinfo)]
	clear(buf)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&buf[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&buf[unix.CmsgLen(0)]))
	info.Spec_dst = src
	return buf
}

// pktinfo6 writes an IPV6_PKTINFO control message choosing src as the source.
func pktinfo6(buf []byte, src [16]byte) []byte {
	buf = buf[:unix.CmsgSpace(unix.SizeofInet6Pktinfo)]
	clear(buf)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&buf[0]))
	h.Level, h.Type = unix.IPPROTO_IPV6, unix.IPV6_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet6Pktinfo))
	info := (*unix.Inet6Pktinfo)(unsafe.Pointer(&buf[unix.CmsgLen(0)]))
	info.Addr = src
	return buf
}
