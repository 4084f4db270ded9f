package resolver

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func newTestForward(t *testing.T, opts ForwardOptions) *Forward {
	t.Helper()
	f, err := NewForward(opts, marker)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

func forwardQuery(f Handler, name string, qtype uint16, tcp bool) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.Id = 4242
	return f.Resolve(context.Background(), NewRequest(q, netip.MustParseAddrPort("127.0.0.1:5353"), tcp))
}

func TestForwardAnswersAndReusesConnections(t *testing.T) {
	up := startUpstream(t, answerA("192.0.2.1"))
	f := newTestForward(t, ForwardOptions{Upstreams: []string{up.addr}})
	for i := 0; i < 20; i++ {
		m, err := forwardQuery(f, "example.com.", dns.TypeA, false)
		if err != nil {
			t.Fatal(err)
		}
		if m.Id != 4242 || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
			t.Fatalf("reply %v", m)
		}
	}
	if n := up.sources(); n != 1 {
		t.Fatalf("20 sequential queries used %d sockets; want 1 reused", n)
	}
}

func TestForwardExceptAndOutsideZoneGoToNext(t *testing.T) {
	up := startUpstream(t, answerA("192.0.2.1"))
	f := newTestForward(t, ForwardOptions{From: "example.", Except: []string{"internal.example."}, Upstreams: []string{up.addr}})
	for name, wantNext := range map[string]bool{
		"www.example.":         false,
		"a.internal.example.":  true,
		"internal.example.":    true,
		"www.elsewhere.":       true,
		"notinternal.example.": false,
	} {
		m, err := forwardQuery(f, name, dns.TypeA, false)
		if err != nil {
			t.Fatal(err)
		}
		gotNext := len(m.Answer) == 1 && m.Answer[0].Header().Rrtype == dns.TypeTXT
		if gotNext != wantNext {
			t.Errorf("%s: went to next %t, want %t", name, gotNext, wantNext)
		}
	}
}

func TestForwardRetriesTruncatedOverTCP(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if w.RemoteAddr().Network() == "udp" {
			m.Truncated = true
		} else {
			rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A 192.0.2.7")
			m.Answer = []dns.RR{rr}
		}
		_ = w.WriteMsg(m)
	})
	f := newTestForward(t, ForwardOptions{Upstreams: []string{up.addr}})
	m, err := forwardQuery(f, "big.example.", dns.TypeA, false)
	if err != nil {
		t.Fatal(err)
	}
	if m.Truncated || len(m.Answer) != 1 {
		t.Fatalf("reply %v; want the full TCP answer", m)
	}
}

func TestForwardTransport(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{w.RemoteAddr().Network()}}}
		_ = w.WriteMsg(m)
	})
	tests := []struct {
		name      string
		opts      ForwardOptions
		clientTCP bool
		want      string
	}{
		{"udp client", ForwardOptions{}, false, "udp"},
		{"tcp client", ForwardOptions{}, true, "tcp"},
		{"force_tcp", ForwardOptions{ForceTCP: true}, false, "tcp"},
		{"prefer_udp", ForwardOptions{PreferUDP: true}, true, "udp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Upstreams = []string{up.addr}
			f := newTestForward(t, tc.opts)
			m, err := forwardQuery(f, "proto.example.", dns.TypeTXT, tc.clientTCP)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Answer[0].(*dns.TXT).Txt[0]; got != tc.want {
				t.Fatalf("upstream saw %s, want %s", got, tc.want)
			}
		})
	}
}

// deadAddr returns a loopback address where nothing listens.
// deadAddr returns a loopback address nothing listens on, over UDP or TCP. The
// port was free in both protocols a moment ago, so a test can later start an
// upstream there (startUpstreamAt); checking UDP alone let the TCP bind of
// such a restart fail now and then.
func deadAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := pc.LocalAddr().String()
		ln, err := net.Listen("tcp", addr)
		pc.Close()
		if err != nil {
			continue // the TCP port is taken: try another
		}
		ln.Close()
		return addr
	}
	t.Fatal("no loopback port free in both UDP and TCP")
	return ""
}

func TestForwardNoUpstreamIsAnError(t *testing.T) {
	f := newTestForward(t, ForwardOptions{Upstreams: []string{deadAddr(t), deadAddr(t)}})
	_, err := forwardQuery(f, "example.com.", dns.TypeA, false)
	if err == nil {
		t.Fatalf("err = %v, want a failure", err)
	}
}

func TestForwardSilentUpstreamTimesOut(t *testing.T) {
	// A socket that reads and never answers: the query must still end.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	f := newTestForward(t, ForwardOptions{Upstreams: []string{pc.LocalAddr().String()}, MaxFails: 0})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	q := new(dns.Msg)
	q.SetQuestion("slow.example.", dns.TypeA)
	if _, err := f.Resolve(ctx, NewRequest(q, netip.AddrPort{}, false)); err == nil {
		t.Fatal("a silent upstream gave an answer")
	}
}

func TestForwardHealthCheckSkipsAndRestoresUpstream(t *testing.T) {
	dead := deadAddr(t)
	good := startUpstream(t, answerA("192.0.2.2"))
	f := newTestForward(t, ForwardOptions{
		Upstreams: []string{dead, good.addr}, Policy: PolicySequential,
		MaxFails: 2, HealthInterval: 10 * time.Millisecond,
	})
	// The first query fails over to the second upstream.
	m, err := forwardQuery(f, "a.example.", dns.TypeA, false)
	if err != nil || len(m.Answer) != 1 {
		t.Fatalf("failover: %v %v", m, err)
	}
	// Health checks mark the first one down: queries stop trying it.
	waitFor(t, func() bool { return f.upstreams[0].down(2) })
	// It comes back: the health check sees it and sequential order uses it again.
	back := startUpstreamAt(t, dead, answerA("192.0.2.1"))
	waitFor(t, func() bool { return !f.upstreams[0].down(2) })
	m, err = forwardQuery(f, "b.example.", dns.TypeA, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Answer[0].(*dns.A).A.String(); got != "192.0.2.1" {
		t.Fatalf("answer from %s; want the restored first upstream", got)
	}
	if back.queries.Load() < 2 {
		t.Fatalf("restored upstream saw %d queries; want the health check and the query", back.queries.Load())
	}
}

func TestForwardMaxConcurrentRefuses(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 8)
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		entered <- struct{}{}
		<-release
		answerA("192.0.2.3")(w, r)
	})
	f := newTestForward(t, ForwardOptions{Upstreams: []string{up.addr}, MaxConcurrent: 2})
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = forwardQuery(f, "slow.example.", dns.TypeA, false)
		}()
	}
	<-entered
	<-entered
	m, err := forwardQuery(f, "third.example.", dns.TypeA, false)
	close(release)
	wg.Wait()
	if err != nil || m.Rcode != dns.RcodeRefused {
		t.Fatalf("third concurrent query: %v %v; want REFUSED", m, err)
	}
	m, err = forwardQuery(f, "after.example.", dns.TypeA, false)
	if err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("after the burst: %v %v", m, err)
	}
}

func TestForwardPolicies(t *testing.T) {
	a := startUpstream(t, answerA("192.0.2.1"))
	b := startUpstream(t, answerA("192.0.2.2"))
	for _, tc := range []struct {
		policy     Policy
		wantA      int64 // queries out of 10 that reach a
		atLeastOne bool
	}{
		{PolicySequential, 10, false},
		{PolicyRoundRobin, 5, false},
		{PolicyRandom, 0, true},
	} {
		a.queries.Store(0)
		b.queries.Store(0)
		f := newTestForward(t, ForwardOptions{Upstreams: []string{a.addr, b.addr}, Policy: tc.policy})
		for i := 0; i < 10; i++ {
			if _, err := forwardQuery(f, "p.example.", dns.TypeA, false); err != nil {
				t.Fatal(err)
			}
		}
		if tc.atLeastOne {
			if a.queries.Load()+b.queries.Load() != 10 {
				t.Errorf("policy %d: %d+%d queries, want 10", tc.policy, a.queries.Load(), b.queries.Load())
			}
			continue
		}
		if a.queries.Load() != tc.wantA {
			t.Errorf("policy %d: first upstream got %d of 10, want %d", tc.policy, a.queries.Load(), tc.wantA)
		}
	}
}

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A configuration being replaced closes its forwarder while queries may still
// be in flight: they must neither panic nor leave probes or sockets behind.
func TestForwardAfterClose(t *testing.T) {
	up := startUpstream(t, answerA("192.0.2.1"))
	f, err := NewForward(ForwardOptions{Upstreams: []string{up.addr, deadAddr(t)}, Policy: PolicySequential, HealthInterval: time.Millisecond, MaxFails: 1}, marker)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if m, err := forwardQuery(f, "late.example.", dns.TypeA, false); err != nil || len(m.Answer) != 1 {
		t.Fatalf("query after Close: %v %v", m, err)
	}
	f.healthcheck(f.upstreams[1])
	if f.upstreams[1].probing.Load() {
		t.Fatal("a health probe started after Close")
	}
	if n := len(f.upstreams[0].udp.idle); n != 0 {
		t.Fatalf("%d connections pooled after Close", n)
	}
}

// A UDP reply larger than the read buffer (the client allowed it with EDNS0)
// is not taken cut: it is asked again over TCP, and the socket stays pooled.
func TestForwardOversizedUDPReplyGoesOverTCP(t *testing.T) {
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for i := range 400 { // about 6.4 KB
			rr, _ := dns.NewRR(fmt.Sprintf("%s 60 IN A 192.0.%d.%d", r.Question[0].Name, i/250, i%250+1))
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})
	f := newTestForward(t, ForwardOptions{Upstreams: []string{up.addr}})
	q := new(dns.Msg)
	q.SetQuestion("big.example.", dns.TypeA)
	q.SetEdns0(dns.MaxMsgSize, false)
	m, err := f.Resolve(context.Background(), NewRequest(q, netip.MustParseAddrPort("127.0.0.1:5353"), false))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Answer) != 400 {
		t.Fatalf("%d answers; want all 400 from the TCP retry", len(m.Answer))
	}
	if n := len(f.upstreams[0].udp.idle); n != 1 {
		t.Fatalf("%d idle UDP sockets after the oversized reply; want it pooled", n)
	}
}

type countingWaiter struct{ waits, done int }

func (w *countingWaiter) Wait()        { w.waits++ }
func (w *countingWaiter) DoneWaiting() { w.done++ }

type shedStats struct {
	noStats
	shed int
}

func (s *shedStats) Shed() { s.shed++ }

// The wait budget is shared: queries beyond it, whichever handler they
// reach, are refused at once and counted, without reaching the upstream or
// telling the Waiter they wait. Queries within it tell the Waiter.
func TestForwardWaitBudget(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 8)
	up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if r.Question[0].Name == "slow.example." {
			entered <- struct{}{}
			<-release
		}
		answerA("192.0.2.3")(w, r)
	})
	budget := NewWaitBudget(2, 0)
	stats := &shedStats{}
	f1 := newTestForward(t, ForwardOptions{Upstreams: []string{up.addr}, Budget: budget, Stats: stats})
	f2 := newTestForward(t, ForwardOptions{Upstreams: []string{up.addr}, Budget: budget, Stats: stats})
	var wg sync.WaitGroup
	for _, f := range []*Forward{f1, f2} {
		wg.Go(func() { _, _ = forwardQuery(f, "slow.example.", dns.TypeA, false) })
	}
	<-entered
	<-entered
	before := up.queries.Load()
	w := &countingWaiter{}
	q := new(dns.Msg)
	q.SetQuestion("third.example.", dns.TypeA)
	m, err := f2.Resolve(WithWaiter(context.Background(), w), NewRequest(q, netip.MustParseAddrPort("127.0.0.1:5353"), false))
	if err != nil || m.Rcode != dns.RcodeRefused {
		t.Fatalf("third query: %v %v; want REFUSED", m, err)
	}
	if stats.shed != 1 || w.waits != 0 || up.queries.Load() != before || budget.Waiting() != 2 {
		t.Fatalf("shed %d, waits %d, upstream saw %d more, %d waiting; want 1, 0, 0, 2",
			stats.shed, w.waits, up.queries.Load()-before, budget.Waiting())
	}
	close(release)
	wg.Wait()
	m, err = f1.Resolve(WithWaiter(context.Background(), w), NewRequest(q, netip.MustParseAddrPort("127.0.0.1:5353"), false))
	if err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("after the burst: %v %v", m, err)
	}
	if w.waits != 1 || w.done != 1 || budget.Waiting() != 0 {
		t.Fatalf("waits %d, done %d, %d waiting; want 1, 1, 0", w.waits, w.done, budget.Waiting())
	}
}

// A forward whose upstream never answers fills the shared pool and then its
// own reserve; another forward sharing the budget still answers from its
// reserve, and every place is given back once the waits end.
func TestForwardWaitReserve(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	entered := make(chan struct{}, 16)
	hung := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
		entered <- struct{}{}
		<-release
		answerA("192.0.2.4")(w, r)
	})
	healthy := startUpstream(t, answerA("192.0.2.5"))
	budget := NewWaitBudget(3, 2) // a pool of 3, 2 more for each forward
	stats := &shedStats{}
	dead := newTestForward(t, ForwardOptions{Upstreams: []string{hung.addr}, Budget: budget, Stats: stats})
	stub := newTestForward(t, ForwardOptions{Upstreams: []string{healthy.addr}, Budget: budget, Stats: stats})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer releaseAll() // a failure below must not leave the handlers hanging
	for i := range 5 { // its reserve of 2, then the pool of 3
		wg.Go(func() { _, _ = forwardQuery(dead, fmt.Sprintf("hang%d.example.", i), dns.TypeA, false) })
	}
	for range 5 {
		<-entered
	}
	if m, err := forwardQuery(dead, "sixth.example.", dns.TypeA, false); err != nil || m.Rcode != dns.RcodeRefused {
		t.Fatalf("sixth query to the hung forward: %v %v; want REFUSED", m, err)
	}
	if budget.Waiting() != 3 {
		t.Fatalf("pool holds %d; want 3", budget.Waiting())
	}
	if m, err := forwardQuery(stub, "svc.example.", dns.TypeA, false); err != nil || m.Rcode != dns.RcodeSuccess {
		t.Fatalf("the other forward, pool full: %v %v; want its answer from its reserve", m, err)
	}
	releaseAll()
	wg.Wait()
	if budget.Waiting() != 0 || dead.wait.reserved.Load() != 0 || stub.wait.reserved.Load() != 0 {
		t.Fatalf("after the waits: pool %d, shares %d and %d; want all 0",
			budget.Waiting(), dead.wait.reserved.Load(), stub.wait.reserved.Load())
	}
	if stats.shed != 1 {
		t.Fatalf("shed %d; want 1", stats.shed)
	}
}

// A message without the QR bit is not an answer, even with the query's ID
// and question (a reflected query, a broken upstream): it is never passed on
// as the reply. Found by FuzzAnswer.
func TestForwardRejectsNonResponses(t *testing.T) {
	for _, tcp := range []bool{false, true} {
		up := startUpstream(t, func(w dns.ResponseWriter, r *dns.Msg) {
			m := new(dns.Msg)
			m.SetReply(r)
			m.Response = false
			_ = w.WriteMsg(m)
		})
		f := newTestForward(t, ForwardOptions{Upstreams: []string{up.addr}})
		if m, err := forwardQuery(f, "example.com.", dns.TypeA, tcp); err == nil {
			t.Fatalf("tcp=%t: a reply without QR was passed on: %v", tcp, m)
		}
	}
}

// Takes and gives racing on a full budget leave every counter at zero once
// they are done: a place goes back where it was taken from. (Attributing
// places by count let a failed take and a give race the pool's count down,
// so that more than the budget could wait.)
func TestWaitShareCountsDoNotDrift(t *testing.T) {
	budget := NewWaitBudget(3, 2)
	shares := []*waitShare{budget.share(), budget.share()}
	var wg sync.WaitGroup
	for g := range 8 {
		s := shares[g%len(shares)]
		wg.Go(func() {
			for range 2000 {
				if ok, pooled := s.take(); ok {
					s.give(pooled)
				}
			}
		})
	}
	wg.Wait()
	if budget.Waiting() != 0 || shares[0].reserved.Load() != 0 || shares[1].reserved.Load() != 0 {
		t.Fatalf("after every give: pool %d, reserves %d and %d; want 0",
			budget.Waiting(), shares[0].reserved.Load(), shares[1].reserved.Load())
	}
}
