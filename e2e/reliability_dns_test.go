package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/internal/testenv"
	"github.com/miekg/dns"
)

// These tests load the real server far past what it can answer, or send half
// of its queries to an upstream that never replies, and check what the issue
// asks of it afterwards: it lives, its memory stayed bounded, it answers at
// once when the load stops, and the cluster zone never went unanswered.

// loadServices is the size of the cluster the load tests serve.
const loadServices = 300

// loadCorefile serves a cluster of loadServices Services and forwards the
// rest to {UP}; {FORWARD} holds extra forward options.
const loadCorefile = `.:{PORT} {
    bind 127.0.0.1
    prometheus {METRICS}
    kubernetes cluster.local {
        manifests {LOAD}
    }
    forward . {UP} {
        {FORWARD}
    }
    cache 30
}
`

// TestReliabilityOverloadOneCore pins the server to one core and sends it
// thousands of outstanding queries for cluster names, many more than it can
// answer. What it cannot answer must be dropped, not queued: memory stays
// within twice its size before the load, goroutines come back to where they
// were, and a query right after the load is answered within a second.
func TestReliabilityOverloadOneCore(t *testing.T) {
	testenv.Require(t, testenv.Tools("dnsperf", "taskset"))
	up := startStuckUpstream(t, 0)
	s := serveLoad(t, up, "")
	pin(t, s.p, serverCPU())
	names := writeQueries(t, s.dir, "cluster.txt", clusterNames(loadServices))

	// Warm up at a rate it answers, so that the baseline is a server that
	// has been serving, not one that just started.
	runDNSPerf(t, s.dns, names, "-c", "16", "-q", "100", "-Q", "2000", "-l", "2")
	base := settle(t, s, 0)
	t.Logf("before: rss %d KiB, %d goroutines", base.rss, base.goroutines)
	resetPeak(t, s.p)

	most := watchGoroutines(t, s)
	perf := runDNSPerf(t, s.dns, names, "-c", "64", "-q", "10000", "-l", "10")
	stopped := time.Now()
	t.Logf("overload: %+v", perf)
	aliveAndAnswering(t, s, stopped)
	peak := procStatus(t, s.p)
	during := most()
	after := settle(t, s, base.goroutines)
	t.Logf("after: peak rss %d KiB, rss %d KiB, %d goroutines (at most %d during the load)", peak.hwm, after.rss, after.goroutines, during)

	if perf.completed == 0 || perf.rcodes["NOERROR"] != perf.completed {
		t.Errorf("overload answers: %+v; want only NOERROR for the cluster names", perf)
	}
	if peak.hwm > 2*base.rss {
		t.Errorf("peak RSS under load %d KiB > twice the %d KiB before it", peak.hwm, base.rss)
	}
	// Queries the server has no CPU for wait in the kernel, not in
	// goroutines of their own.
	if during > base.goroutines+goroutineMargin {
		t.Errorf("%d goroutines during the load, %d before it: queries piled up in the process", during, base.goroutines)
	}
}

// TestReliabilityDeadUpstreamKeepsClusterZone sends half of the queries to
// an upstream that reads them and never replies, thousands outstanding, and
// the other half to cluster names: every cluster name must be answered, and
// the forwarded ones must not pile up in memory or goroutines.
func TestReliabilityDeadUpstreamKeepsClusterZone(t *testing.T) {
	testenv.Require(t, testenv.Tools("dnsperf", "taskset"))
	up := startStuckUpstream(t, 0)
	s := serveLoad(t, up, "")
	pin(t, s.p, serverCPU())
	cluster := clusterNames(loadServices)
	names := writeQueries(t, s.dir, "cluster.txt", cluster)
	dead := writeQueries(t, s.dir, "dead.txt", deadNames(40000))

	runDNSPerf(t, s.dns, names, "-c", "16", "-q", "100", "-Q", "2000", "-l", "2")
	base := settle(t, s, 0)
	t.Logf("before: rss %d KiB, %d goroutines", base.rss, base.goroutines)
	resetPeak(t, s.p)

	// The dead half: up to 5,000 outstanding at 4,000 queries a second, a
	// rate one core answers easily when nothing waits, but at which queries
	// waiting out the forwarding timeout would number thousands. The
	// cluster half: up to 2,000 queries a second from this test, each
	// counted answered or not.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var deadPerf perfResult
	var perfErr error
	perfDone := make(chan struct{})
	go func() {
		defer close(perfDone)
		defer cancel()
		deadPerf, perfErr = dnsperf(s.dns, dead, "-c", "64", "-q", "5000", "-Q", "4000", "-l", "10", "-t", "5")
	}()
	most := watchGoroutines(t, s)
	asked, answered, retried := askCluster(ctx, s.dns, cluster, 8, 2000)
	<-perfDone
	stopped := time.Now()
	if perfErr != nil {
		t.Fatal(perfErr)
	}
	t.Logf("dead upstream half: %+v; cluster half: %d asked, %d answered NOERROR (%d at the second try); the upstream got %d queries",
		deadPerf, asked, answered, retried, up.queries.Load())
	aliveAndAnswering(t, s, stopped)
	peak := procStatus(t, s.p)
	during := most()
	after := settle(t, s, base.goroutines)
	t.Logf("after: peak rss %d KiB, rss %d KiB, %d goroutines (at most %d during the load)", peak.hwm, after.rss, after.goroutines, during)

	// With the load gone, a forwarded query still gets its SERVFAIL when
	// the forwarding timeout ends, well within a stub resolver's patience.
	q := new(dns.Msg)
	q.SetQuestion("after.dead.example.", dns.TypeA)
	if m, _, err := (&dns.Client{Net: "udp", Timeout: 8 * time.Second}).Exchange(q, s.dns); err != nil || m.Rcode != dns.RcodeServerFailure {
		t.Errorf("forwarded query after the load: %v %v; want SERVFAIL", m, err)
	}
	if v := metricValue(s.metricsBody(t), "clusterdns_forward_shed_total"); v <= 0 || int(v) > deadPerf.rcodes["REFUSED"] {
		t.Errorf("clusterdns_forward_shed_total = %v, dnsperf saw %d REFUSED; want some shed, each one a REFUSED", v, deadPerf.rcodes["REFUSED"])
	}
	// Queries waiting on the dead upstream are bounded by the server's wait
	// budget (512 shared, plus the 32 each forward keeps for itself), not by
	// the load.
	if during > base.goroutines+512+32+goroutineMargin {
		t.Errorf("%d goroutines during the load, %d before it", during, base.goroutines)
	}
	if asked == 0 || answered != asked {
		t.Errorf("cluster names: %d of %d answered NOERROR; want every one", answered, asked)
	}
	if deadPerf.rcodes["NOERROR"] != 0 {
		t.Errorf("dead upstream answered: %+v", deadPerf)
	}
	if peak.hwm > 2*base.rss {
		t.Errorf("peak RSS under load %d KiB > twice the %d KiB before it", peak.hwm, base.rss)
	}
}

// TestReliabilityForwardMaxConcurrent checks that max_concurrent bounds what
// the upstream sees at once, over UDP to an upstream that answers late and
// over TCP to one that never answers; queries beyond it are REFUSED at once
// as CoreDNS does, and those that wait end in SERVFAIL or an answer.
func TestReliabilityForwardMaxConcurrent(t *testing.T) {
	testenv.Require(t, testenv.Tools("dnsperf"))
	const limit = 16
	for _, tc := range []struct {
		name    string
		hold    time.Duration // 0: never answers
		options string
	}{
		{"udp slow", 300 * time.Millisecond, ""},
		{"tcp dead", 0, "force_tcp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := startStuckUpstream(t, tc.hold)
			s := serveLoad(t, up, fmt.Sprintf("max_concurrent %d\n        %s", limit, tc.options))
			dead := writeQueries(t, s.dir, "dead.txt", deadNames(5000))
			perf := runDNSPerf(t, s.dns, dead, "-c", "16", "-q", "200", "-l", "5", "-t", "5")
			t.Logf("%+v; the upstream got %d queries, at most %d at once", perf, up.queries.Load(), up.maxHeld())
			if got := up.maxHeld(); got > limit {
				t.Errorf("the upstream held %d queries at once; max_concurrent is %d", got, limit)
			}
			if got := up.maxHeld(); got < limit/2 {
				t.Errorf("the upstream held at most %d queries at once: the test did not load it", got)
			}
			if perf.rcodes["REFUSED"] == 0 {
				t.Errorf("no REFUSED beyond max_concurrent: %+v", perf)
			}
			rejects := metricValue(s.metricsBody(t), "coredns_forward_max_concurrent_rejects_total")
			if int(rejects) < perf.rcodes["REFUSED"] {
				t.Errorf("max_concurrent_rejects_total = %v; dnsperf saw %d REFUSED", rejects, perf.rcodes["REFUSED"])
			}
			want := "SERVFAIL"
			if tc.hold > 0 {
				want = "NOERROR"
			}
			if perf.rcodes[want] == 0 {
				t.Errorf("no %s for the queries that waited: %+v", want, perf)
			}
			aliveAndAnswering(t, s, time.Now())
		})
	}
}

// serveLoad starts clusterdns on loadCorefile with loadServices Services,
// forwarding to up.
func serveLoad(t *testing.T, up *stuckUpstream, forwardOptions string) *corefileServer {
	t.Helper()
	load := filepath.Join(t.TempDir(), "load")
	if err := os.Mkdir(load, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, load, "services.yaml", loadManifests(loadServices))
	s := serveCorefile(t, loadCorefile, "{LOAD}", load, "{UP}", up.addr, "{FORWARD}", forwardOptions)
	waitAnswer(t, s.dns, "udp", clusterNames(loadServices)[loadServices-1], dns.TypeA, 10*time.Second,
		func(m *dns.Msg) bool { return m.Rcode == dns.RcodeSuccess && len(m.Answer) == 1 })
	return s
}

// loadManifests is n ClusterIP Services in namespace load.
func loadManifests(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata:
  name: svc-%d
  namespace: load
spec:
  type: ClusterIP
  clusterIP: 10.96.%d.%d
  ports:
  - name: http
    port: 80
`, i, i/250, i%250+1)
	}
	return b.String()
}

func clusterNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("svc-%d.load.svc.cluster.local.", i)
	}
	return out
}

// deadNames are names outside the cluster, each asked once, so that no
// cache answers them.
func deadNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("q%d.dead.example.", i)
	}
	return out
}

// writeQueries writes a dnsperf data file asking A for each name.
func writeQueries(t *testing.T, dir, name string, names []string) string {
	t.Helper()
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n + " A\n")
	}
	return writeFile(t, dir, name, b.String())
}

// askCluster asks names in turn from workers goroutines, at most rate
// queries a second in all, until ctx ends. A name gets two tries, as a stub
// resolver gives it: a datagram the kernel drops when the machine is busy is
// not the server starving the cluster zone. It returns how many names it
// asked, how many came back NOERROR with an answer, and how many of those
// needed the second try.
func askCluster(ctx context.Context, server string, names []string, workers, rate int) (asked, answered, retried int64) {
	var nAsked, nAnswered, nRetried atomic.Int64
	var wg sync.WaitGroup
	interval := time.Duration(workers) * time.Second / time.Duration(rate)
	for w := range workers {
		wg.Go(func() {
			c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for i := w; ctx.Err() == nil; i += workers {
				q := new(dns.Msg)
				q.SetQuestion(names[i%len(names)], dns.TypeA)
				nAsked.Add(1)
				for try := range 2 {
					if m, _, err := c.Exchange(q, server); err == nil && m.Rcode == dns.RcodeSuccess && len(m.Answer) == 1 {
						nAnswered.Add(1)
						if try > 0 {
							nRetried.Add(1)
						}
						break
					}
				}
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
			}
		})
	}
	wg.Wait()
	return nAsked.Load(), nAnswered.Load(), nRetried.Load()
}

// aliveAndAnswering checks that the process still runs and answers a
// cluster name within a second of stopped, when the load ended.
func aliveAndAnswering(t *testing.T, s *corefileServer, stopped time.Time) {
	t.Helper()
	select {
	case <-s.p.done:
		t.Fatalf("clusterdns exited under load: %v", s.p.cmd.ProcessState)
	default:
	}
	deadline := stopped.Add(time.Second)
	q := new(dns.Msg)
	q.SetQuestion(clusterNames(1)[0], dns.TypeA)
	var last error
	for time.Now().Before(deadline) {
		c := &dns.Client{Net: "udp", Timeout: time.Until(deadline)}
		m, _, err := c.Exchange(q, s.dns)
		if err == nil && m.Rcode == dns.RcodeSuccess && len(m.Answer) == 1 {
			return
		}
		last = fmt.Errorf("%v %v", m, err)
	}
	t.Fatalf("no answer within a second of the load's end: %v", last)
}

// goroutineMargin is how far the goroutines may be from a baseline: HTTP
// scrapes, health checks, a reader or two finishing.
const goroutineMargin = 20

// watchGoroutines scrapes go_goroutines every 200 ms until the returned
// function is called, which returns the most seen.
func watchGoroutines(t *testing.T, s *corefileServer) func() int {
	ctx, cancel := context.WithCancel(context.Background())
	var most atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, body, err := httpGet("http://" + s.metrics + "/metrics"); err == nil {
				if v := int64(metricValue(body, "go_goroutines")); v > most.Load() {
					most.Store(v)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(cancel)
	return func() int {
		cancel()
		<-done
		return int(most.Load())
	}
}

// usage is what the process holds at one moment.
type usage struct {
	rss, hwm   int64 // KiB: resident now, and the peak since resetPeak
	goroutines int
}

// settle waits (at most 15 s) until the goroutines are no more than want
// plus a margin (any number when want is 0, then for two scrapes that
// agree), and returns the usage then.
func settle(t *testing.T, s *corefileServer, want int) usage {
	t.Helper()
	const margin = goroutineMargin
	deadline := time.Now().Add(15 * time.Second)
	prev := -1
	for {
		g := int(metricValue(s.metricsBody(t), "go_goroutines"))
		u := procStatus(t, s.p)
		u.goroutines = g
		switch {
		case want == 0 && g == prev:
			return u
		case want > 0 && g <= want+margin:
			return u
		case time.Now().After(deadline):
			if want > 0 {
				t.Errorf("goroutines %d did not come back within %d of %d", g, margin, want)
			}
			return u
		}
		prev = g
		time.Sleep(500 * time.Millisecond)
	}
}

// procStatus reads VmRSS and VmHWM from /proc.
func procStatus(t *testing.T, p *process) usage {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var u usage
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			u.rss, _ = strconv.ParseInt(f[1], 10, 64)
		case "VmHWM:":
			u.hwm, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	if u.rss == 0 || u.hwm == 0 {
		t.Fatalf("no VmRSS/VmHWM in /proc status:\n%s", b)
	}
	return u
}

// resetPeak restarts VmHWM from the current RSS (clear_refs 5).
func resetPeak(t *testing.T, p *process) {
	t.Helper()
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.cmd.Process.Pid), []byte("5"), 0); err != nil {
		t.Fatal(err)
	}
}

// serverCPU is the core the server is pinned to; dnsperf runs on another
// when there is one.
func serverCPU() int { return 0 }

func loadCPU() int { return runtime.NumCPU() - 1 }

// pin moves every thread of the process to one core.
func pin(t *testing.T, p *process, cpu int) {
	t.Helper()
	out, err := exec.Command("taskset", "-a", "-p", "-c", strconv.Itoa(cpu), strconv.Itoa(p.cmd.Process.Pid)).CombinedOutput()
	if err != nil {
		t.Fatalf("taskset: %v\n%s", err, out)
	}
}

// perfResult is what dnsperf reported.
type perfResult struct {
	sent, completed, lost int
	qps                   float64
	rcodes                map[string]int
}

// runDNSPerf runs dnsperf against server with the data file and extra
// arguments (which must include -l, so that it stops by itself), pinned to
// loadCPU.
func runDNSPerf(t *testing.T, server, data string, args ...string) perfResult {
	t.Helper()
	r, err := dnsperf(server, data, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// dnsperf is runDNSPerf for a goroutine other than the test's.
func dnsperf(server, data string, args ...string) (perfResult, error) {
	host, port, _ := strings.Cut(server, ":")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full := append([]string{"-c", strconv.Itoa(loadCPU()), "dnsperf", "-s", host, "-p", port, "-d", data}, args...)
	cmd := exec.CommandContext(ctx, "taskset", full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return perfResult{}, fmt.Errorf("dnsperf %v: %v\n%s%s", args, err, out, stderr.String())
	}
	r, err := parseDNSPerf(out)
	if err != nil {
		return r, fmt.Errorf("dnsperf %v: %w", args, err)
	}
	return r, nil
}

// parseDNSPerf reads the statistics dnsperf prints at its end.
func parseDNSPerf(out []byte) (perfResult, error) {
	r := perfResult{rcodes: map[string]int{}}
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		key, value, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		first, _, _ := strings.Cut(strings.TrimSpace(value), " ")
		switch key {
		case "Queries sent":
			r.sent, _ = strconv.Atoi(first)
			seen++
		case "Queries completed":
			r.completed, _ = strconv.Atoi(first)
			seen++
		case "Queries lost":
			r.lost, _ = strconv.Atoi(first)
			seen++
		case "Queries per second":
			r.qps, _ = strconv.ParseFloat(first, 64)
		case "Response codes":
			// NOERROR 65661 (100.00%), NXDOMAIN 12 (0.01%)
			for part := range strings.SplitSeq(value, ",") {
				f := strings.Fields(part)
				if len(f) >= 2 {
					n, err := strconv.Atoi(f[1])
					if err == nil {
						r.rcodes[f[0]] = n
					}
				}
			}
		}
	}
	if seen < 3 {
		return r, fmt.Errorf("no statistics in dnsperf's output:\n%s", out)
	}
	return r, nil
}

// stuckUpstream is an upstream on loopback (UDP and TCP on one port) that
// holds every query for hold before answering it, or never answers when
// hold is 0. It counts the queries it holds at a time; health checks (NS
// for the root) are neither answered nor counted, as max_concurrent does not
// count them either.
type stuckUpstream struct {
	addr    string
	hold    time.Duration
	queries atomic.Int64
	held    atomic.Int64
	peak    atomic.Int64 // the most held for two samples in a row
}

func startStuckUpstream(t *testing.T, hold time.Duration) *stuckUpstream {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	for i := 0; ; i++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if i >= 20 {
			t.Fatal(err)
		}
	}
	u := &stuckUpstream{addr: pc.LocalAddr().String(), hold: hold}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { u.serveUDP(pc) })
	wg.Go(func() { u.serveTCP(ctx, ln, &wg) })
	wg.Go(func() { u.sample(ctx) })
	t.Cleanup(func() {
		cancel()
		pc.Close()
		ln.Close()
		wg.Wait()
	})
	return u
}

// maxHeld is the most queries held at once, ignoring a count that lasted
// less than a sampling period: a connection the server closed before
// sending the next query may still look open here for a moment.
func (u *stuckUpstream) maxHeld() int64 { return u.peak.Load() }

func (u *stuckUpstream) sample(ctx context.Context) {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	prev := int64(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := u.held.Load()
		if m := min(n, prev); m > u.peak.Load() {
			u.peak.Store(m)
		}
		prev = n
	}
}

// counted says whether a query is one the server forwards for a client.
func counted(q []byte) bool {
	var m dns.Msg
	if err := m.Unpack(q); err != nil || len(m.Question) != 1 {
		return false
	}
	return !(m.Question[0].Qtype == dns.TypeNS && m.Question[0].Name == ".")
}

// reply is an answer to q: one A record.
func reply(q []byte) []byte {
	var m dns.Msg
	if err := m.Unpack(q); err != nil {
		return nil
	}
	r := new(dns.Msg)
	r.SetReply(&m)
	rr, _ := dns.NewRR(m.Question[0].Name + " 60 IN A 192.0.2.1")
	r.Answer = []dns.RR{rr}
	b, _ := r.Pack()
	return b
}

func (u *stuckUpstream) serveUDP(pc net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if !counted(buf[:n]) {
			continue
		}
		u.queries.Add(1)
		if u.hold == 0 {
			continue
		}
		u.held.Add(1)
		q := append([]byte(nil), buf[:n]...)
		time.AfterFunc(u.hold, func() {
			u.held.Add(-1)
			_, _ = pc.WriteTo(reply(q), from)
		})
	}
}

func (u *stuckUpstream) serveTCP(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		wg.Go(func() {
			defer stop()
			defer c.Close()
			u.serveConn(c)
		})
	}
}

// serveConn reads queries until the client closes. A query is answered
// after hold, before the next is read (the server sends one query at a time
// on a connection); never-answered queries stop being held at the close.
func (u *stuckUpstream) serveConn(c net.Conn) {
	pending := int64(0)
	defer func() { u.held.Add(-pending) }()
	for {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		if !counted(q) {
			continue
		}
		u.queries.Add(1)
		u.held.Add(1)
		pending++
		if u.hold == 0 {
			continue
		}
		time.Sleep(u.hold)
		u.held.Add(-1)
		pending--
		r := reply(q)
		binary.BigEndian.PutUint16(l[:], uint16(len(r)))
		if _, err := c.Write(append(l[:], r...)); err != nil {
			return
		}
	}
}
