package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/e2e/internal/promtext"
)

// dnsPeer is a DNS server under test.
type dnsPeer struct {
	name string
	// argv runs the server with a Corefile.
	argv func(corefile string) []string
}

// corefile is the kubeadm Corefile with loopback addresses and a kubeconfig:
// the same text for both servers.
func corefile(dnsPort, healthPort, readyPort, metricsPort int, upstream, source, extra string) string {
	return fmt.Sprintf(`.:%d {%s
    bind 127.0.0.1
    errors
    health 127.0.0.1:%d {
       lameduck 5s
    }
    ready 127.0.0.1:%d
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       %s
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus 127.0.0.1:%d
    forward . %s {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
`, dnsPort, extra, healthPort, readyPort, source, metricsPort, upstream)
}

// runningDNS is a started DNS peer.
type runningDNS struct {
	proc   *Process
	server string // 127.0.0.1:PORT
	ready  time.Duration
	rss    int64
	// heap is the Go heap in use (go_memstats_heap_inuse_bytes) when RSS
	// was read: what the process holds live, as against what it has not
	// given back.
	heap int64
	// rss samples the process's RSS from its start.
	rss0 *RSSSampler
	// pprof is the base URL of the peer's pprof listener, empty without
	// -profile.
	pprof string
}

// saveProfile writes the peer's pprof profile kind (with query, e.g.
// "?seconds=5") to the -profile folder as name; without -profile it does
// nothing.
func saveProfile(t *testing.T, ctx context.Context, r *runningDNS, kind, query, name string) {
	t.Helper()
	if r.pprof == "" {
		return
	}
	// A CPU profile takes its seconds to answer.
	client := HTTPGetter(nil)
	client.Timeout = time.Minute
	_, body, err := Get(ctx, client, r.pprof+"/debug/pprof/"+kind+query)
	if err != nil {
		t.Errorf("profile %s: %v", kind, err)
		return
	}
	if err := os.WriteFile(filepath.Join(*flagProfile, name), body, 0o644); err != nil {
		t.Error(err)
	}
}

// rssInterval is how often a DNS peer's RSS is sampled for the time series.
const rssInterval = 250 * time.Millisecond

// afterLoad records RSS and peak RSS right after the saturation runs, and
// for the first round the RSS series up to then.
func (e *env) afterLoad(t *testing.T, peer string, r *runningDNS, size, round int) {
	t.Helper()
	rss, err := r.proc.RSS()
	if err != nil {
		t.Fatal(err)
	}
	peak, err := r.proc.PeakRSS()
	if err != nil {
		t.Fatal(err)
	}
	e.res.Add(peer, MetricRSSLoad, size, round, float64(rss)/(1<<20))
	e.res.Add(peer, MetricPeakRSS, size, round, float64(peak)/(1<<20))
	if pts := r.rss0.Stop(); round == 0 {
		e.res.RSSSeries[peer] = pts
	}
	t.Logf("%s round %d after the load: RSS %.1f MiB, peak %.1f MiB", peer, round, float64(rss)/(1<<20), float64(peak)/(1<<20))
}

// fixedLoad runs dnsperf at a fixed rate against r and records latency and
// the CPU time r's process spent per query answered.
func (e *env) fixedLoad(t *testing.T, ctx context.Context, peer string, r *runningDNS, mix, file string, rate, size, round int) {
	t.Helper()
	latency := map[string][2]string{"cluster": {MetricP50Cluster, MetricP99Cluster}, "external": {MetricP50External, MetricP99External}}
	cpuMetric := map[string]string{"cluster": MetricCPUCluster, "external": MetricCPUExternal}
	before, err := r.proc.CPUTime()
	if err != nil {
		t.Fatal(err)
	}
	profiled := make(chan struct{})
	if seconds := int(e.cfg.perf/time.Second) - 1; seconds > 0 {
		go func() {
			defer close(profiled)
			saveProfile(t, ctx, r, "profile", fmt.Sprintf("?seconds=%d", seconds), "cpu-"+mix+".pprof")
		}()
	} else {
		close(profiled)
	}
	defer func() { <-profiled }()
	p, err := RunPerf(ctx, PerfRun{CPU: loadCPU, Server: r.server, DataFile: file, Clients: 64,
		Outstanding: 1000, Duration: e.cfg.perf, Rate: rate, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	after, err := r.proc.CPUTime()
	if err != nil {
		t.Fatal(err)
	}
	if peer != PeerBareUDP {
		checkRcodes(t, mix, p)
	}
	p50, p99 := p.Percentile(0.50), p.Percentile(0.99)
	e.res.Add(peer, latency[mix][0], size, round, ms(p50))
	e.res.Add(peer, latency[mix][1], size, round, ms(p99))
	cpu := 0.0
	if p.Completed > 0 {
		cpu = float64(after-before) / float64(time.Microsecond) / float64(p.Completed)
		e.res.Add(peer, cpuMetric[mix], size, round, cpu)
	}
	t.Logf("%s round %d %s at %d qps: p50 %s p99 %s, %.1f µs CPU per query (%d answers, %d lost)", peer, round, mix, rate,
		p50, p99, cpu, len(p.Latencies), p.Lost)
}

// startDNS starts a peer reading the API server, or the manifests folder
// when manifests is set (clusterdns only).
func (e *env) startDNS(t *testing.T, ctx context.Context, peer dnsPeer, upstream string, round int, manifests string) *runningDNS {
	t.Helper()
	var ports [5]int
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	path := filepath.Join(e.work, fmt.Sprintf("%s-%d.Corefile", peer.name, round))
	source := "kubeconfig " + e.kubeconfig + " e2e"
	if manifests != "" {
		source = "manifests " + manifests
	}
	extra, pprofURL := "", ""
	if *flagProfile != "" && peer.name == PeerClusterDNS && (round == 0 || round == e.cfg.rounds) {
		extra = fmt.Sprintf("\n    pprof 127.0.0.1:%d", ports[4])
		pprofURL = fmt.Sprintf("http://127.0.0.1:%d", ports[4])
	}
	if err := os.WriteFile(path, []byte(corefile(ports[0], ports[1], ports[2], ports[3], upstream, source, extra)), 0o644); err != nil {
		t.Fatal(err)
	}
	argv := append([]string{"taskset", "-c", strconv.Itoa(peerCPU)}, peer.argv(path)...)
	p, err := Start(peer.name, filepath.Join(e.work, fmt.Sprintf("%s-%d.log", peer.name, round)), argv...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(time.Second) })
	readyAt, err := WaitHTTP(ctx, p, HTTPGetter(nil), fmt.Sprintf("http://127.0.0.1:%d/ready", ports[2]), 10*time.Millisecond, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	r := &runningDNS{proc: p, server: fmt.Sprintf("127.0.0.1:%d", ports[0]), ready: readyAt.Sub(p.Started),
		rss0: SampleRSS(p, rssInterval), pprof: pprofURL}
	time.Sleep(e.cfg.settle)
	if r.rss, err = p.RSS(); err != nil {
		t.Fatal(err)
	}
	_, body, err := Get(ctx, HTTPGetter(nil), fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[3]))
	if err != nil {
		t.Fatalf("%s metrics: %v", peer.name, err)
	}
	heap, _ := promtext.Value(string(body), "go_memstats_heap_inuse_bytes")
	r.heap = int64(heap)
	saveProfile(t, ctx, r, "heap", "", "heap-sync.pprof")
	saveProfile(t, ctx, r, "heap", "?debug=1", "heap-sync.txt")
	return r
}

// runDNS compares the DNS peers: saturation first (which sets the fixed
// load), then latency at that load, each peer started afresh every round
// and the order alternated.
func runDNS(t *testing.T, ctx context.Context, e *env, manifests string) {
	cfg := e.cfg
	total := cfg.spec.Services()
	up, err := StartUpstream()
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()

	mixes := []Mix{ClusterMix(cfg.spec, cfg.queryLines), ExternalMix(1000, cfg.queryLines)}
	files := map[string]string{}
	for _, m := range mixes {
		files[m.Name] = filepath.Join(e.work, m.Name+".queries")
		if err := m.Write(files[m.Name]); err != nil {
			t.Fatal(err)
		}
	}
	qpsMetric := map[string]string{"cluster": MetricQPSCluster, "external": MetricQPSExternal}
	peers := []dnsPeer{
		{PeerClusterDNS, func(cf string) []string {
			return []string{e.bins.clusterdns, "serve", "--conf", cf, "--log-level", "warn"}
		}},
		{PeerCoreDNS, func(cf string) []string { return []string{e.bins.coredns, "-conf", cf, "-quiet"} }},
	}
	saturate := func(server, mix string, d time.Duration) Perf {
		t.Helper()
		p, err := RunPerf(ctx, PerfRun{CPU: loadCPU, Server: server, DataFile: files[mix], Clients: 64, Outstanding: 500, Duration: d})
		if err != nil {
			t.Fatal(err)
		}
		checkRcodes(t, mix, p)
		return p
	}
	e.res.Settings["rss after sync"] = fmt.Sprintf("%s after /ready", cfg.settle)
	e.res.Settings["dnsperf"] = fmt.Sprintf("dnsperf -c 64 (64 flows), pinned to core %d; peers pinned to core %d; %s per measurement, %d rounds alternated",
		loadCPU, peerCPU, cfg.perf, cfg.rounds)

	// Saturation, ready time and memory.
	for round := range cfg.rounds {
		order := slices.Clone(peers)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, peer := range order {
			r := e.startDNS(t, ctx, peer, up.Addr, round, "")
			e.res.Add(peer.name, MetricReady, total, round, r.ready.Seconds())
			e.res.Add(peer.name, MetricRSS, total, round, float64(r.rss)/(1<<20))
			e.res.Add(peer.name, MetricHeap, total, round, float64(r.heap)/(1<<20))
			if round == 0 {
				e.checkAnswers(t, r.server, peer.name)
			}
			for _, m := range mixes {
				saturate(r.server, m.Name, cfg.warmup)
				p := saturate(r.server, m.Name, cfg.perf)
				e.res.Add(peer.name, qpsMetric[m.Name], total, round, p.QPS)
				t.Logf("%s round %d %s: %.0f qps, %d lost, avg %s", peer.name, round, m.Name, p.QPS, p.Lost, p.AverageLatency)
			}
			e.afterLoad(t, peer.name, r, total, round)
			saveProfile(t, ctx, r, "heap", "", "heap-load.pprof")
			saveProfile(t, ctx, r, "allocs", "", "allocs-load.pprof")
			// The text form ends with the runtime's memory statistics:
			// stacks, idle and released heap.
			saveProfile(t, ctx, r, "heap", "?debug=1", "heap-load.txt")
			r.proc.Stop(time.Second)
			t.Logf("%s round %d: ready after %s, RSS %.1f MiB", peer.name, round, r.ready.Round(time.Millisecond), float64(r.rss)/(1<<20))
		}
		// The ceiling: the same load against a responder that does no work.
		bare := e.startBare(t, round)
		for _, m := range mixes {
			saturate(bare.server, m.Name, cfg.warmup)
			p := saturate(bare.server, m.Name, cfg.perf)
			e.res.Add(PeerBareUDP, qpsMetric[m.Name], total, round, p.QPS)
			t.Logf("bare round %d %s: %.0f qps", round, m.Name, p.QPS)
		}
		e.afterLoad(t, PeerBareUDP, bare, total, round)
		bare.proc.Stop(time.Second)
	}

	// Latency at half of CoreDNS's saturation.
	rate := map[string]int{}
	for _, m := range mixes {
		q, _ := e.res.Median(PeerCoreDNS, qpsMetric[m.Name], total)
		rate[m.Name] = max(100, int(q/2))
	}
	e.res.Settings["fixed load"] = fmt.Sprintf("%d", rate["cluster"])
	e.res.Settings["latency"] = fmt.Sprintf("p50/p99 from every answer (dnsperf -v) at half of CoreDNS's median saturation: %d qps for cluster names, %d qps for external names",
		rate["cluster"], rate["external"])
	e.res.Settings["cpu per query"] = "the peer process's utime+stime (/proc/PID/stat, 10 ms ticks) over the queries answered during the fixed-load run, for each peer and the bare responder"
	for round := range cfg.rounds {
		order := slices.Clone(peers)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, peer := range order {
			r := e.startDNS(t, ctx, peer, up.Addr, cfg.rounds+round, "")
			e.res.Add(peer.name, MetricReady, total, cfg.rounds+round, r.ready.Seconds())
			e.res.Add(peer.name, MetricRSS, total, cfg.rounds+round, float64(r.rss)/(1<<20))
			e.res.Add(peer.name, MetricHeap, total, cfg.rounds+round, float64(r.heap)/(1<<20))
			for _, m := range mixes {
				saturate(r.server, m.Name, cfg.warmup)
				e.fixedLoad(t, ctx, peer.name, r, m.Name, files[m.Name], rate[m.Name], total, round)
			}
			r.proc.Stop(time.Second)
		}
		bare := e.startBare(t, cfg.rounds+round)
		for _, m := range mixes {
			saturate(bare.server, m.Name, cfg.warmup)
			e.fixedLoad(t, ctx, PeerBareUDP, bare, m.Name, files[m.Name], rate[m.Name], total, round)
		}
		bare.proc.Stop(time.Second)
	}
	// The manifests folder holds the same cluster: clusterdns serving it
	// must give the same answers. Its start-up and memory are kept in the
	// JSON only.
	r := e.startDNS(t, ctx, peers[0], up.Addr, 2*cfg.rounds, manifests)
	e.checkAnswers(t, r.server, PeerClusterDNS+"-manifests")
	e.res.Add(PeerClusterDNS+"-manifests", MetricReady, total, 0, r.ready.Seconds())
	e.res.Add(PeerClusterDNS+"-manifests", MetricRSS, total, 0, float64(r.rss)/(1<<20))
	t.Logf("clusterdns from manifests: ready after %s, RSS %.1f MiB", r.ready.Round(time.Millisecond), float64(r.rss)/(1<<20))
	r.proc.Stop(time.Second)

	if n := up.Queries.Load(); n == 0 {
		t.Errorf("the upstream got no queries: external names were not forwarded")
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// checkRcodes fails on answers no correct server gives for the mix: the
// figures of a server that fails fast would mean nothing.
func checkRcodes(t *testing.T, mix string, p Perf) {
	t.Helper()
	for rcode, n := range p.Rcodes {
		switch {
		case rcode == "NOERROR":
		case rcode == "NXDOMAIN" && mix == "cluster":
		default:
			t.Fatalf("%s mix: %d answers with %s (of %v)", mix, n, rcode, p.Rcodes)
		}
	}
	if p.Completed == 0 {
		t.Fatalf("%s mix: no answers", mix)
	}
}

func (e *env) startBare(t *testing.T, round int) *runningDNS {
	t.Helper()
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	p, err := Start(PeerBareUDP, filepath.Join(e.work, fmt.Sprintf("bare-%d.log", round)),
		"taskset", "-c", strconv.Itoa(peerCPU), e.bins.bareUDP, "-listen", addr, "-lifetime", "10m")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(time.Second) })
	// It prints its address once it listens.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if data, _ := os.ReadFile(p.LogPath); strings.Contains(string(data), addr) {
			break
		}
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("bare responder did not start:\n%s", p.LogTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &runningDNS{proc: p, server: addr, rss0: SampleRSS(p, rssInterval)}
}

// checkAnswers asks a few questions of each kind in the mixes and compares
// the answers with what the generated cluster says, so both peers are
// measured doing the same, correct work.
func (e *env) checkAnswers(t *testing.T, server, peer string) {
	t.Helper()
	s := e.cfg.spec
	c := &dns.Client{Timeout: 2 * time.Second}
	ask := func(name string, qtype uint16) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		r, _, err := c.Exchange(m, server)
		if err != nil {
			t.Fatalf("%s: %s %s: %v", peer, name, dns.TypeToString[qtype], err)
		}
		return r
	}
	ip := s.Ref(KindClusterIP, 1)
	if r := ask(ip.FQDN(), dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 ||
		r.Answer[0].(*dns.A).A.String() != ClusterIP(1).String() {
		t.Errorf("%s: %s A = %v, want %s", peer, ip.FQDN(), r.Answer, ClusterIP(1))
	}
	if s.Headless > 0 {
		hl := s.Ref(KindHeadless, 0)
		if r := ask(hl.FQDN(), dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != s.Endpoints {
			t.Errorf("%s: %s A has %d answers (rcode %d), want %d", peer, hl.FQDN(), len(r.Answer), r.Rcode, s.Endpoints)
		}
	}
	srv := fmt.Sprintf("_%s._tcp.%s", PortName, ip.FQDN())
	if r := ask(srv, dns.TypeSRV); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.SRV).Port != ServicePort {
		t.Errorf("%s: %s SRV = %v", peer, srv, r.Answer)
	}
	missing := "missing-0." + ip.Namespace + ".svc." + ClusterDomain + "."
	if r := ask(missing, dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("%s: %s rcode %s, want NXDOMAIN", peer, missing, dns.RcodeToString[r.Rcode])
	}
	if r := ask("host-0001.example.net.", dns.TypeA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Errorf("%s: external name: %v", peer, r)
	}
}
