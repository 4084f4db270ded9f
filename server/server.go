package server

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterdns/clusterdns/resolver"
)

// advertisedUDPSize is the EDNS0 buffer size we offer: the DNS flag day 2020
// value, which avoids IP fragmentation on every common path.
const advertisedUDPSize = 1232

// Shared is what outlives one configuration.
type Shared struct {
	Logger   *slog.Logger
	Registry *prometheus.Registry
	Metrics  *Metrics
	// Budget bounds the queries waiting on upstreams, for every forward
	// directive together; nil is unbounded.
	Budget *resolver.WaitBudget
	// Memory fits the garbage collector to the live set as snapshots load;
	// nil leaves it alone.
	Memory *memoryTuner
}

// maxWaiting is how many queries may wait on upstreams at once. Each holds a
// goroutine (its stack is most of the cost), a socket and a few kilobytes
// until its upstream answers or the forwarding timeout ends it, about 20 KiB
// of resident memory in all; beyond this forwarded queries are refused at
// once. At 512 the server still forwards 5,000 queries a second to upstreams
// answering in 100 ms (50,000 at 10 ms), and a dead upstream costs about
// 10 MiB.
//
// Each forward directive has waitReserve more of its own, so that one whose
// upstream is dead cannot take every place from the others (a stub domain's
// forward beside the default one, say).
const (
	maxWaiting  = 512
	waitReserve = 32
)

// Server serves a Corefile until its context ends.
type Server struct {
	File   string
	Shared Shared

	mu        sync.Mutex // protects the fields below
	listeners map[string]*listener
	runtime   *Runtime
	stopSvcs  func()
	https     map[string]*httpEndpoint
	errs      chan error
}

// NewServer prepares a server for a Corefile; Run starts it.
func NewServer(file string, logger *slog.Logger) *Server {
	reg := prometheus.NewRegistry()
	return &Server{
		File: file,
		Shared: Shared{
			Logger:   logger,
			Registry: reg,
			Metrics:  NewMetrics(reg),
			Budget:   resolver.NewWaitBudget(maxWaiting, waitReserve),
			Memory:   newMemoryTuner(logger),
		},
		listeners: make(map[string]*listener),
		https:     make(map[string]*httpEndpoint),
		errs:      make(chan error, 16),
	}
}

// Run loads the Corefile, serves it, and on ctx's end shuts down in order:
// lameduck (keep answering), close the listeners, finish queries in flight.
// While it serves, a configuration with the reload directive is checked for
// changes and replaced without dropping queries.
func (s *Server) Run(ctx context.Context) error {
	data, err := os.ReadFile(s.File)
	if err != nil {
		return fmt.Errorf("corefile: %w", err)
	}
	cfg, err := ParseConfig(s.File, data)
	if err != nil {
		return err
	}
	rt, err := Build(cfg, s.Shared)
	if err != nil {
		return err
	}
	// Services (sources, health checks) outlive the signal: queries are still
	// answered during lameduck, and shutdown stops them last.
	svcCtx := context.WithoutCancel(ctx)
	if err := s.apply(svcCtx, rt); err != nil {
		s.shutdown(0)
		return err
	}
	s.Shared.Metrics.configLoaded(data)
	s.Shared.Logger.Info("serving", "corefile", s.File, "listeners", rt.describe())

	watchCtx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		s.watch(watchCtx, svcCtx, sha256.Sum256(data))
	}()

	select {
	case <-ctx.Done():
	case err := <-s.errs:
		stopWatch()
		<-watchDone
		s.shutdown(0)
		return err
	}
	stopWatch()
	<-watchDone
	s.shutdown(s.Runtime().lameduck)
	return nil
}

// watch polls the Corefile while the served configuration asks for reload,
// and applies every new content that sets up cleanly. A file that does not
// is logged with its position and the running configuration stays.
func (s *Server) watch(ctx, svcCtx context.Context, applied [sha256.Size]byte) {
	var rejected [sha256.Size]byte
	for {
		rt := s.Runtime()
		if rt == nil || rt.reload <= 0 {
			return
		}
		wait := rt.reload
		if j := rt.reloadJitter; j > 0 {
			wait += time.Duration(rand.Int64N(int64(2*j))) - j
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		data, err := os.ReadFile(s.File)
		if err != nil {
			s.Shared.Logger.Error("reload: cannot read the Corefile; keeping the running configuration", "err", err)
			continue
		}
		sum := sha256.Sum256(data)
		if sum == applied || sum == rejected {
			continue
		}
		if err := s.reload(svcCtx, data); err != nil {
			rejected = sum
			s.Shared.Metrics.reloadFailed()
			s.Shared.Logger.Error("reload failed; keeping the running configuration", "err", err)
			continue
		}
		applied = sum
		s.Shared.Metrics.configLoaded(data)
		s.Shared.Logger.Info("reloaded", "corefile", s.File, "listeners", s.Runtime().describe())
	}
}

// reload sets up and applies a new Corefile content.
func (s *Server) reload(ctx context.Context, data []byte) error {
	cfg, err := ParseConfig(s.File, data)
	if err != nil {
		return err
	}
	rt, err := Build(cfg, s.Shared)
	if err != nil {
		return err
	}
	return s.apply(ctx, rt)
}

// Runtime returns the configuration being served.
func (s *Server) Runtime() *Runtime {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runtime
}

func (s *Server) report(err error) {
	select {
	case s.errs <- err:
	default:
	}
}

// apply makes rt the served configuration: it opens the DNS and HTTP
// listeners it lacks, starts rt's services and waits (a bounded time) for its
// sources to load, points every listener at rt's routers and handlers, and
// only then stops the previous configuration's services and closes listeners
// rt no longer uses. Queries, probes and scrapes keep being answered
// throughout, by the old configuration until the new one is loaded. If rt
// cannot start, nothing of the running configuration changes.
func (s *Server) apply(ctx context.Context, rt *Runtime) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	opened := make(map[string]*listener)
	openedHTTP := make(map[string]*httpEndpoint)
	closeOpened := func() {
		for _, o := range opened {
			o.close(0)
		}
		for _, e := range openedHTTP {
			e.ln.Close()
		}
	}
	for _, addr := range rt.Addrs() {
		if _, ok := s.listeners[addr]; ok {
			continue
		}
		l, err := listen(addr, s.Shared.Logger, s.Shared.Metrics)
		if err != nil {
			closeOpened()
			return err
		}
		opened[addr] = l
	}
	for addr := range rt.http {
		if _, ok := s.https[addr]; ok {
			continue
		}
		e, err := listenHTTP(addr)
		if err != nil {
			closeOpened()
			return err
		}
		openedHTTP[addr] = e
	}
	for _, hook := range rt.onStart {
		if err := hook(rt); err != nil {
			closeOpened()
			return err
		}
	}
	stopSvcs := rt.runServices(ctx, s.report)
	waitReady(ctx, rt, readyWait)

	for addr, l := range opened {
		l.tcp.setLimits(rt.tcp[addr])
		s.listeners[addr] = l
		l.serve(s.report)
	}
	for addr, l := range s.listeners {
		if r, ok := rt.routers[addr]; ok {
			l.router.Store(r)
			l.tcp.setLimits(rt.tcp[addr])
		}
	}
	for addr, e := range openedHTTP {
		s.https[addr] = e
	}
	for addr, mux := range rt.http {
		s.https[addr].mux.Store(mux)
	}
	for _, e := range openedHTTP {
		e.serve(s.report)
	}
	if s.stopSvcs != nil {
		s.stopSvcs()
	}
	for addr, l := range s.listeners {
		if _, ok := rt.routers[addr]; !ok {
			l.close(time.Second)
			delete(s.listeners, addr)
		}
	}
	for addr, e := range s.https {
		if _, ok := rt.http[addr]; !ok {
			e.close()
			delete(s.https, addr)
		}
	}
	s.runtime, s.stopSvcs = rt, stopSvcs
	return nil
}

// readyWait bounds how long a new configuration may take to load its sources
// before it serves anyway (answering SERVFAIL for what has not loaded), as
// CoreDNS's kubernetes plugin waits for its first sync.
const readyWait = 5 * time.Second

func waitReady(ctx context.Context, rt *Runtime, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for !rt.Ready() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
}

// shutdown keeps answering for lameduck, then closes every listener and waits
// for the queries in flight.
func (s *Server) shutdown(lameduck time.Duration) {
	if lameduck > 0 {
		s.Shared.Logger.Info("lameduck", "duration", lameduck)
		time.Sleep(lameduck)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for addr, l := range s.listeners {
		l.close(5 * time.Second)
		delete(s.listeners, addr)
	}
	if s.stopSvcs != nil {
		s.stopSvcs()
		s.stopSvcs = nil
	}
	for addr, e := range s.https {
		e.close()
		delete(s.https, addr)
	}
}

// listener is one address's UDP and TCP sockets, routed through a swappable
// router.
type listener struct {
	addr     string
	udp      []*udpServer // one per socket of the address's SO_REUSEPORT group
	tcp      *tcpServer
	router   atomic.Pointer[router]
	inflight sync.WaitGroup
	log      *slog.Logger
	metrics  *Metrics
}

// listen binds addr on UDP and TCP now, so that a busy port fails start-up.
// UDP gets one socket per base reader (max(2, GOMAXPROCS)), in one
// SO_REUSEPORT group: readers do not contend for one socket's queue and
// lock, which measured about 5-10% more queries per second on one core
// under dnsperf. A reader's socket is its own: when it waits on an upstream
// its server starts another reader for that socket, as with one socket.
func listen(addr string, log *slog.Logger, metrics *Metrics) (*listener, error) {
	sockets := max(2, runtime.GOMAXPROCS(0))
	conns, err := listenUDP(addr, sockets)
	if err != nil {
		return nil, fmt.Errorf("listen udp %s: %w", addr, err)
	}
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	l := &listener{addr: addr, log: log, metrics: metrics}
	for _, c := range conns {
		udp, err := newUDPServer(c, func(ctx context.Context, r *dns.Msg, client netip.AddrPort) *dns.Msg {
			return l.answer(ctx, r, client, false)
		}, log, 1)
		if err != nil {
			closeAll()
			ln.Close()
			return nil, err
		}
		udp.max = max(1, udpMaxReaders/int32(len(conns)))
		udp.fast = l.fastAnswer
		l.udp = append(l.udp, udp)
	}
	l.tcp = newTCPServer(ln, func(ctx context.Context, r *dns.Msg, client netip.AddrPort) *dns.Msg {
		return l.answer(ctx, r, client, true)
	}, log, metrics.tcpStats())
	return l, nil
}

func (l *listener) serve(report func(error)) {
	for _, u := range l.udp {
		go u.serve()
	}
	go func() {
		if err := l.tcp.serve(); err != nil {
			report(fmt.Errorf("dns %s: %w", l.addr, err))
		}
	}()
}

// close stops accepting queries and waits up to grace for those in flight.
func (l *listener) close(grace time.Duration) {
	var wg sync.WaitGroup
	for _, u := range l.udp {
		wg.Go(func() { u.shutdown(grace) })
	}
	l.tcp.shutdown(grace)
	wg.Wait()
	done := make(chan struct{})
	go func() { l.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
	}
}

// answer checks a query, routes it to its block's chain and returns the
// reply, fitted to the client's buffer.
func (l *listener) answer(ctx context.Context, r *dns.Msg, client netip.AddrPort, tcp bool) (m *dns.Msg) {
	l.inflight.Add(1)
	defer l.inflight.Done()
	defer func() {
		if p := recover(); p != nil {
			l.log.Error("panic answering a query", "panic", p)
			l.metrics.panic()
			m = new(dns.Msg)
			m.SetRcode(r, dns.RcodeServerFailure)
		}
	}()
	if m := checkQuery(r); m != nil {
		return m
	}
	req := resolver.NewRequest(r, client, tcp)
	var err error
	if h := l.router.Load().handler(req.Name); h != nil {
		m, err = h.Resolve(ctx, req)
	}
	switch {
	case err != nil:
		m = resolver.Reply(req, dns.RcodeServerFailure)
	case m == nil:
		m = resolver.Reply(req, dns.RcodeRefused)
	}
	fit(m, r, tcp)
	return m
}

// checkQuery returns the reply for a query we will not answer normally, or nil.
func checkQuery(r *dns.Msg) *dns.Msg {
	switch {
	case r.Response:
		return formErr(r)
	case r.Opcode != dns.OpcodeQuery:
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeNotImplemented)
		return m
	case len(r.Question) != 1:
		return formErr(r)
	}
	if opt := r.IsEdns0(); opt != nil && opt.Version() != 0 {
		m := new(dns.Msg)
		m.SetRcode(r, dns.RcodeBadVers)
		m.SetEdns0(advertisedUDPSize, false)
		return m
	}
	return nil
}

func formErr(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcodeFormatError(r)
	return m
}

// fit adds our OPT record when the client sent one, and truncates a UDP reply
// to the client's buffer size (512 without EDNS0), setting TC.
func fit(m, r *dns.Msg, tcp bool) {
	size := dns.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		if s := int(opt.UDPSize()); s > size {
			size = s
		}
		if m.IsEdns0() == nil {
			m.Extra = append(m.Extra, replyOPT(opt.Do()))
		}
	}
	if tcp {
		size = dns.MaxMsgSize
	}
	m.Truncate(size)
}

// replyOPTs are the two OPT records replies carry (DNSSEC OK clear and set).
// They are shared by every reply and never written: packing and truncating a
// message only read its OPT.
var replyOPTs = [2]*dns.OPT{newReplyOPT(false), newReplyOPT(true)}

func newReplyOPT(do bool) *dns.OPT {
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(advertisedUDPSize)
	if do {
		o.SetDo()
	}
	return o
}

func replyOPT(do bool) *dns.OPT {
	if do {
		return replyOPTs[1]
	}
	return replyOPTs[0]
}
