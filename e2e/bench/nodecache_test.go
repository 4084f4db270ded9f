package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// nodecachePorts are the ports the stock Corefile listens on.
var nodecachePorts = struct{ dns, health, metrics int }{53, 8080, 9253}

// nodecacheAddrs finds two loopback addresses, in place of 169.254.20.10
// and the kube-dns ClusterIP, whose ports of the stock Corefile are free.
func nodecacheAddrs() (local, second string, err error) {
	free := func(ip string, tcpPorts ...int) bool {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(nodecachePorts.dns)))
		if err != nil {
			return false
		}
		defer pc.Close()
		for _, p := range append([]int{nodecachePorts.dns}, tcpPorts...) {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(p)))
			if err != nil {
				return false
			}
			ln.Close()
		}
		return true
	}
	for i := 10; i < 250; i += 2 {
		local, second = fmt.Sprintf("127.0.20.%d", i), fmt.Sprintf("127.0.20.%d", i+1)
		if free(local, nodecachePorts.health, nodecachePorts.metrics) && free(second) {
			return local, second, nil
		}
	}
	return "", "", fmt.Errorf("no pair of free loopback addresses in 127.0.20.0/24 for the node cache")
}

// NodecacheMixes are the node cache's query files: A questions for a fixed
// set of cluster-zone names and of external names, each asked in a loop.
func NodecacheMixes(distinct, n int) []Mix {
	cluster := make([]string, n)
	for i := range cluster {
		j := i % max(1, distinct)
		cluster[i] = fmt.Sprintf("svc-%04d.ns-%d.svc.%s. A", j, j%10, ClusterDomain)
	}
	return []Mix{{Name: "cluster", Lines: cluster}, ExternalMix(distinct, n)}
}

// startNodecache starts a node cache peer on the filled stock Corefile and
// waits until it answers on its local address.
func (e *env) startNodecache(t *testing.T, ctx context.Context, peer dnsPeer, corefile, local string, round int) *runningDNS {
	t.Helper()
	argv := append([]string{"taskset", "-c", strconv.Itoa(peerCPU)}, peer.argv(corefile)...)
	p, err := Start(peer.name, filepath.Join(e.work, fmt.Sprintf("%s-%d.log", peer.name, round)), argv...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(time.Second) })
	health := fmt.Sprintf("http://%s/health", net.JoinHostPort(local, strconv.Itoa(nodecachePorts.health)))
	if _, err := WaitHTTP(ctx, p, HTTPGetter(nil), health, 10*time.Millisecond, time.Minute); err != nil {
		t.Fatal(err)
	}
	r := &runningDNS{proc: p, server: net.JoinHostPort(local, strconv.Itoa(nodecachePorts.dns)), rss0: SampleRSS(p, rssInterval)}
	// Health may answer before the DNS listeners are up: ask until one
	// question is answered.
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	q := new(dns.Msg)
	q.SetQuestion("ready-probe.example.net.", dns.TypeA)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if m, _, err := c.Exchange(q, r.server); err == nil && m.Rcode == dns.RcodeSuccess {
			break
		}
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("%s does not answer on %s:\n%s", peer.name, r.server, p.LogTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.ready = time.Since(p.Started)
	return r
}

// warm asks each of the mix's names once, again until answered, so that
// the measurements that follow see only hits even on a machine too busy for
// dnsperf's warm-up run to reach every name.
func warm(t *testing.T, server string, m Mix) {
	t.Helper()
	c := &dns.Client{Timeout: time.Second}
	seen := map[string]bool{}
	for _, line := range m.Lines {
		name, _, _ := strings.Cut(line, " ")
		if seen[name] {
			continue
		}
		seen[name] = true
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		for try := 1; ; try++ {
			r, _, err := c.Exchange(q, server)
			if err == nil && r.Rcode == dns.RcodeSuccess {
				break
			}
			if try == 5 {
				t.Fatalf("warming %s: %s A: %v %v", server, name, err, r)
			}
		}
	}
}

// runNodecache compares `clusterdns nodecache` with CoreDNS, both serving
// NodeLocal DNSCache's stock Corefile, on cache hits: saturation and memory
// first, then CPU and latency at a fixed load below both saturations, each
// peer started afresh every round and the order alternated.
func runNodecache(t *testing.T, ctx context.Context, e *env) {
	cfg := e.cfg
	const size = nodecacheNames
	up, err := StartUpstream()
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	stock, err := StockNodecacheCorefile(filepath.Join(root, "deploy", "nodecache", "configmap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	local, second, err := nodecacheAddrs()
	if err != nil {
		t.Fatal(err)
	}
	text, err := NodecacheCorefile(stock, local, second, up.Addr)
	if err != nil {
		t.Fatal(err)
	}
	corefile := filepath.Join(e.work, "nodecache.Corefile")
	if err := os.WriteFile(corefile, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	mixes := NodecacheMixes(nodecacheNames, cfg.queryLines)
	files := map[string]string{}
	for _, m := range mixes {
		files[m.Name] = filepath.Join(e.work, "nodecache-"+m.Name+".queries")
		if err := m.Write(files[m.Name]); err != nil {
			t.Fatal(err)
		}
	}
	peers := []dnsPeer{
		{PeerNodecache, func(cf string) []string {
			// The Corefile is filled already: no template, no placeholder
			// left for it to fill.
			return []string{e.bins.clusterdns, "nodecache", "-localip", local + "," + second, "-conf", cf,
				"-basecorefile", filepath.Join(e.work, "no-template"), "-setupinterface=false", "-setupiptables=false",
				"-log-level", "warn"}
		}},
		{PeerNodecacheCoreDNS, func(cf string) []string { return []string{e.bins.coredns, "-conf", cf, "-quiet"} }},
	}
	qpsMetric := map[string]string{"cluster": MetricQPSCluster, "external": MetricQPSExternal}
	saturate := func(server, mix string, d time.Duration) Perf {
		t.Helper()
		p, err := RunPerf(ctx, PerfRun{CPU: loadCPU, Server: server, DataFile: files[mix], Clients: 64, Outstanding: 500, Duration: d})
		if err != nil {
			t.Fatal(err)
		}
		checkRcodes(t, mix, p)
		return p
	}
	e.res.Settings["node cache"] = fmt.Sprintf("deploy/nodecache's stock Corefile on %s and %s (for 169.254.20.10 and 10.96.0.10), "+
		"both upstreams a loopback miekg/dns server (cluster zone over TCP); A questions for %d cluster-zone and %d external names, "+
		"warmed for %s before each measurement, so every measured query is a cache hit", local, second, nodecacheNames, nodecacheNames, cfg.warmup)

	for round := range cfg.rounds {
		order := slices.Clone(peers)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, peer := range order {
			r := e.startNodecache(t, ctx, peer, corefile, local, round)
			e.res.Add(peer.name, MetricReady, size, round, r.ready.Seconds())
			for _, m := range mixes {
				warm(t, r.server, m)
				saturate(r.server, m.Name, cfg.warmup)
				before := up.Queries.Load()
				p := saturate(r.server, m.Name, cfg.perf)
				// A hit never reaches the upstream; an entry expiring
				// during the run may, once.
				if misses := up.Queries.Load() - before; misses > nodecacheNames {
					t.Errorf("%s %s: %d of %d queries reached the upstream: not a cache-hit run", peer.name, m.Name, misses, p.Completed)
				}
				e.res.Add(peer.name, qpsMetric[m.Name], size, round, p.QPS)
				t.Logf("%s round %d %s hits: %.0f qps, %d lost", peer.name, round, m.Name, p.QPS, p.Lost)
			}
			e.afterLoad(t, peer.name, r, size, round)
			r.proc.Stop(time.Second)
		}
		// For scale: dnsperf against a responder that does no work.
		bare := e.startBare(t, round)
		for _, m := range mixes {
			saturate(bare.server, m.Name, cfg.warmup)
			p := saturate(bare.server, m.Name, cfg.perf)
			e.res.Add(PeerBareUDP, qpsMetric[m.Name], size, round, p.QPS)
		}
		bare.rss0.Stop()
		bare.proc.Stop(time.Second)
	}

	// The fixed load: half of the lower median saturation of the two.
	rate := map[string]int{}
	for _, m := range mixes {
		q := 0.0
		for i, peer := range peers {
			v, _ := e.res.Median(peer.name, qpsMetric[m.Name], size)
			if i == 0 || v < q {
				q = v
			}
		}
		rate[m.Name] = max(100, int(q/2))
	}
	e.res.Settings["node cache fixed load"] = fmt.Sprintf("half of the lower median saturation of the two: %d qps for cluster-zone names, %d for external names",
		rate["cluster"], rate["external"])
	for round := range cfg.rounds {
		order := slices.Clone(peers)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, peer := range order {
			r := e.startNodecache(t, ctx, peer, corefile, local, cfg.rounds+round)
			for _, m := range mixes {
				warm(t, r.server, m)
				saturate(r.server, m.Name, cfg.warmup)
				e.fixedLoad(t, ctx, peer.name, r, m.Name, files[m.Name], rate[m.Name], size, round)
			}
			r.rss0.Stop()
			r.proc.Stop(time.Second)
		}
	}
}
