package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/clusterdns/clusterdns/zone"
	"github.com/clusterdns/clusterdns/zone/dnsindex"
)

// answerFixture is the server as a UDP datagram meets it: the Corefile below
// (cluster zone from the example manifests, cache, forward to a fake
// upstream on loopback), set up by ParseConfig and Build as serve does.
type answerFixture struct {
	cfg     *Config
	shared  Shared
	logs    *lockedBuffer
	cluster *zone.Cluster
	// reference answers the same queries through the same chain without a
	// cache: what a cached chain answers must match it in every part that
	// depends on the query's flags.
	reference *answerPath
}

// fuzzCorefile is the configuration fuzzed: every directive on the answer
// path. %[1]s is the manifests folder, %[2]s the upstream, %[3]s "cache 30"
// or nothing.
const fuzzCorefile = `.:53 {
    errors
    log
    prometheus 127.0.0.1:0
    loadbalance
    %[3]s
    autopath @kubernetes
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        manifests %[1]s
        pods verified
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . %[2]s
}
`

// fuzzClient is the address queries come from: a Pod of the example
// cluster (namespace dev), so that autopath applies to its search path.
var fuzzClient = netip.MustParseAddrPort("172.16.69.206:40000")

func newAnswerFixture(tb testing.TB) *answerFixture {
	tb.Helper()
	up := startFakeUpstream(tb)
	manifests, err := filepath.Abs("../deploy/examples")
	if err != nil {
		tb.Fatal(err)
	}
	logs := &lockedBuffer{}
	reg := prometheus.NewRegistry()
	fx := &answerFixture{logs: logs}
	fx.shared = Shared{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelError})), Registry: reg, Metrics: NewMetrics(reg)}
	parse := func(cache string) *Config {
		cfg, err := ParseConfig("Corefile", fmt.Appendf(nil, fuzzCorefile, manifests, up.addr, cache))
		if err != nil {
			tb.Fatal(err)
		}
		return cfg
	}
	fx.cfg = parse("cache 30")
	fx.cluster = loadManifests(tb, manifests)
	fx.reference = fx.build(tb, parse(""))
	tb.Cleanup(fx.reference.close)
	return fx
}

// loadManifests reads the manifests once; every chain built is fed this
// snapshot rather than running a source of its own.
func loadManifests(tb testing.TB, path string) *zone.Cluster {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var once sync.Once
	got := make(chan *zone.Cluster, 1)
	src := &zone.ManifestSource{Path: path, Logger: slog.New(slog.DiscardHandler)}
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, func(c *zone.Cluster) { once.Do(func() { got <- c }) }) }()
	select {
	case c := <-got:
		cancel()
		<-done
		return c
	case err := <-done:
		tb.Fatalf("manifests %s: %v", path, err)
	}
	return nil
}

// answerPath is one built chain behind a listener and the UDP reader's
// datagram handling.
type answerPath struct {
	udp      *udpServer
	listener *listener
	index    *dnsindex.Index
	close    func()
}

// build brings cfg to life without opening a socket: Build, the cluster
// snapshot loaded into its kubernetes handlers, its other services (the
// forwarder's closer) running until close.
func (fx *answerFixture) build(tb testing.TB, cfg *Config) *answerPath {
	tb.Helper()
	rt, err := Build(cfg, fx.shared)
	if err != nil {
		tb.Fatal(err)
	}
	for _, hook := range rt.onStart {
		if err := hook(rt); err != nil {
			tb.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var ix *dnsindex.Index
	for _, s := range rt.services {
		if h, ok := s.(*kubernetesHolder); ok {
			ix = h.handler.Update(fx.cluster)
			continue
		}
		wg.Go(func() { _ = s.Run(ctx) })
	}
	l := &listener{log: fx.shared.Logger, metrics: fx.shared.Metrics}
	l.router.Store(rt.routers[":53"])
	return &answerPath{
		udp:      &udpServer{answer: func(ctx context.Context, r *dns.Msg, c netip.AddrPort) *dns.Msg { return l.answer(ctx, r, c, false) }},
		listener: l,
		index:    ix,
		close:    func() { cancel(); wg.Wait() },
	}
}

// FuzzAnswer sends datagrams through the whole answer path. Whatever the
// datagram, nothing panics (the listener recovers panics and counts them:
// the count must not move); a reply, if any, packs and unpacks, carries the
// datagram's ID, is a response and fits the client's UDP buffer.
//
// A datagram that is a query is then asked again with the flag combinations
// combos picks (AD, CD, DO, EDNS0), in that order, through the cached chain
// and through the reference chain without a cache. The replies must agree
// on everything those flags govern, so that no cached answer leaks the
// flags of the query that filled it (CoreDNS #6186: a CD answer served to a
// non-CD query; #6642: AD lost because the entry came from a non-AD query;
// #4189 and #4736: DNSSEC records and AD to a client that did not ask).
func FuzzAnswer(f *testing.F) {
	fx := newAnswerFixture(f)
	panics := func() float64 {
		var m dto.Metric
		if err := fx.shared.Metrics.panics.Write(&m); err != nil {
			f.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	f.Fuzz(func(t *testing.T, datagram []byte, combos []byte) {
		path := fx.build(t, fx.cfg)
		defer path.close()
		fx.logs.Reset()
		before := panics()
		reply := checkedReply(t, path, datagram)
		if reply == nil || len(combos) == 0 {
			checkNoPanic(t, fx, before, panics())
			return
		}
		q := new(dns.Msg)
		if q.Unpack(datagram) != nil || !plausibleQuery(q) || checkQuery(q) != nil {
			checkNoPanic(t, fx, before, panics())
			return
		}
		for i, c := range combos[:min(len(combos), 6)] {
			v := flagVariant(q, c)
			wire, err := v.Pack()
			if err != nil {
				continue
			}
			got := checkedReply(t, path, wire)
			want := checkedReply(t, fx.reference, wire)
			checkFlagsFollowQuery(t, v, got)
			checkFlagsFollowQuery(t, v, want)
			if g, w := flagParts(got), flagParts(want); g != w {
				t.Errorf("query %d (%s) answered from the cache as %+v, without a cache as %+v", i, describeFlags(v), g, w)
			}
		}
		checkNoPanic(t, fx, before, panics())
	})
}

func checkNoPanic(t *testing.T, fx *answerFixture, before, after float64) {
	t.Helper()
	if after != before {
		t.Fatalf("the listener recovered a panic:\n%s", fx.logs.String())
	}
}

// checkedReply passes a datagram through path and checks the reply, if
// any, as a client would see it after the wire: it carries the query's ID
// and question, and QR.
func checkedReply(t *testing.T, path *answerPath, datagram []byte) *dns.Msg {
	t.Helper()
	m := path.udp.reply(context.Background(), datagram, fuzzClient)
	if m == nil {
		return nil
	}
	wire, err := m.PackBuffer(make([]byte, udpBufferSize))
	if err != nil {
		t.Fatalf("reply does not pack: %v\n%v", err, m)
	}
	got := new(dns.Msg)
	if err := got.Unpack(wire); err != nil {
		t.Fatalf("reply does not unpack: %v\n%v", err, m)
	}
	if id := binary.BigEndian.Uint16(datagram); got.Id != id {
		t.Fatalf("reply ID %d, query ID %d", got.Id, id)
	}
	if !got.Response {
		t.Fatalf("reply without QR:\n%v", got)
	}
	if q := new(dns.Msg); q.Unpack(datagram) == nil && len(q.Question) == 1 && len(got.Question) > 0 &&
		(len(got.Question) != 1 || got.Question[0] != q.Question[0]) {
		t.Fatalf("reply to %v for the question %v", got.Question, q.Question[0])
	}
	if limit := allowedUDPSize(datagram); len(wire) > limit {
		t.Fatalf("reply of %d bytes, the client allows %d over UDP:\n%v", len(wire), limit, got)
	}
	return got
}

// allowedUDPSize is the largest reply the sender of a datagram accepts
// over UDP: its EDNS0 buffer size, at least 512.
func allowedUDPSize(datagram []byte) int {
	q := new(dns.Msg)
	if q.Unpack(datagram) == nil {
		if opt := q.IsEdns0(); opt != nil {
			return max(dns.MinMsgSize, int(opt.UDPSize()))
		}
	}
	return dns.MinMsgSize
}

// flagVariant is q's question asked with the flags one combo byte picks:
// bit 0 AD, bit 1 CD, bit 2 EDNS0, bit 3 DO (with EDNS0), bit 4 RD, bits
// 5-7 a buffer size (512 to 4096).
func flagVariant(q *dns.Msg, combo byte) *dns.Msg {
	v := new(dns.Msg)
	v.Id = uint16(combo)<<8 | 0x5a
	v.Question = []dns.Question{q.Question[0]}
	v.AuthenticatedData = combo&1 != 0
	v.CheckingDisabled = combo&2 != 0
	v.RecursionDesired = combo&16 != 0
	if combo&4 != 0 {
		v.SetEdns0(uint16(512+int(combo>>5)*512), combo&8 != 0)
	}
	return v
}

func describeFlags(q *dns.Msg) string {
	s := fmt.Sprintf("%s %s ad=%t cd=%t", q.Question[0].Name, dns.TypeToString[q.Question[0].Qtype], q.AuthenticatedData, q.CheckingDisabled)
	if opt := q.IsEdns0(); opt != nil {
		s += fmt.Sprintf(" edns0 do=%t size=%d", opt.Do(), opt.UDPSize())
	}
	return s
}

// replyFlags are the parts of a reply that depend on the query's AD, CD
// and DO bits.
type replyFlags struct {
	Rcode      int
	AD, CD, TC bool
	OPT, DO    bool
	RRSIGs     int
	Records    int // answer and authority records, when not truncated
}

func flagParts(m *dns.Msg) replyFlags {
	p := replyFlags{Rcode: m.Rcode, AD: m.AuthenticatedData, CD: m.CheckingDisabled, TC: m.Truncated}
	if opt := m.IsEdns0(); opt != nil {
		p.OPT, p.DO = true, opt.Do()
	}
	for _, s := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range s {
			if rr.Header().Rrtype == dns.TypeRRSIG {
				p.RRSIGs++
			}
		}
	}
	if !m.Truncated {
		p.Records = len(m.Answer) + len(m.Ns)
	}
	return p
}

// checkFlagsFollowQuery checks what a reply must say about the query's own
// flags whatever answered it: CD echoed; an OPT record exactly when the
// query had one, with its DO bit; no DNSSEC records unless DO asked for
// them (or the question asked for that type); AD only when the query set
// AD or DO.
func checkFlagsFollowQuery(t *testing.T, q, m *dns.Msg) {
	t.Helper()
	opt := q.IsEdns0()
	do := opt != nil && opt.Do()
	p := flagParts(m)
	switch {
	case p.CD != q.CheckingDisabled:
		t.Errorf("%s: reply CD=%t", describeFlags(q), p.CD)
	case p.OPT != (opt != nil):
		t.Errorf("%s: reply has OPT=%t", describeFlags(q), p.OPT)
	case p.DO != do:
		t.Errorf("%s: reply DO=%t", describeFlags(q), p.DO)
	case p.RRSIGs > 0 && !do && q.Question[0].Qtype != dns.TypeRRSIG:
		t.Errorf("%s: reply carries %d RRSIGs:\n%v", describeFlags(q), p.RRSIGs, m)
	case p.AD && !q.AuthenticatedData && !do:
		t.Errorf("%s: reply sets AD", describeFlags(q))
	}
}

// lockedBuffer collects the log of the queries one input sends, read when
// a panic was recovered.
type lockedBuffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
