package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/clusterdns/clusterdns/e2e/internal/kubeapi"
	"github.com/clusterdns/clusterdns/e2e/vm"
	"github.com/clusterdns/clusterdns/internal/testenv"
)

var (
	flagFull         = flag.Bool("full", false, "measure at the published size (10,000 ClusterIP + 1,000 headless Services, 3 rounds) and write the results folder")
	flagOut          = flag.String("out", "", "folder for results.md, results.json and the charts (default: ./results with -full, a temporary folder otherwise)")
	flagRounds       = flag.Int("rounds", 0, "runs of each peer, alternated (default 3 with -full, 1 otherwise)")
	flagParts        = flag.String("parts", "", "comparisons to run, comma-separated: dns, rules, ipvs, nodecache (default dns,rules,ipvs,nodecache; dns,rules,nodecache with -full, where ipvs is a run of its own)")
	flagSizes        = flag.String("rule-sizes", "", "ClusterIP Service counts to compare the rule peers at, comma-separated, ascending (default 1000,10000 with -full)")
	flagIPVSOursOnly = flag.String("ipvs-ours-only", "", "ClusterIP Service counts, comma-separated, at which the IPVS part runs clusterdns proxy alone (kube-proxy would take hours there under emulation)")
	flagIPVSSizes    = flag.String("ipvs-sizes", "", "ClusterIP Service counts to compare the IPVS peers at, in the VM, comma-separated, ascending (default 50; with -full 1000,3000 and clusterdns proxy alone at 10000)")
	// Debian's default iptables, nft, takes minutes to restore the 230,000
	// rules of 10,000 Services; legacy takes seconds.
	flagIPTables = flag.String("iptables", "legacy", "iptables variant both rule peers program: legacy or nft")
	flagRuleMode = flag.String("rules-mode", "", "backends the rules part runs both peers with, comma-separated: iptables, nftables (default iptables with -full, both in the smoke run)")
	// A peer can be left out while the other one's mode is being built.
	flagRulePeers = flag.String("rule-peers", "", "rule peers to run, comma-separated: clusterdns-proxy, kube-proxy (default both)")
	// kube-proxy reads only the API: with a folder clusterdns proxy runs alone.
	flagChanges = flag.Int("changes", 0, "endpoint changes timed per rule peer run (default 5 with -full, 2 otherwise)")
	// kube-proxy's full sync grows past the harness's patience first (16
	// minutes at 44,000 Services, kubernetes#139513).
	flagKubeProxyMax = flag.Int("kube-proxy-max", 0, "largest rule size (ClusterIP Services) kube-proxy runs at; above it clusterdns proxy runs alone (default: no limit)")
	flagRulesSource  = flag.String("rules-source", "api", "where clusterdns proxy reads the cluster in the rules part: api, or manifests (a folder it watches; kube-proxy is then left out)")
	// Profiles are for finding where bytes and time go; a pprof listener
	// costs a little memory, so runs whose figures are published leave it out.
	flagProfile = flag.String("profile", "", "folder for clusterdns's pprof profiles in the first round of the DNS part: heap after sync and after the load, CPU over the first fixed-load run")
)

// config is the size and length of one benchmark run.
type config struct {
	spec Spec
	// ruleSizes are the ClusterIP Service counts the rule peers are
	// measured at, ascending; the cluster grows from one to the next.
	ruleSizes []int
	// ipvsSizes are the same for the IPVS peers.
	ipvsSizes []int
	// ipvsOursOnly are the IPVS sizes where only clusterdns proxy runs.
	ipvsOursOnly []int
	// ruleModes are the backends the rules part runs in, each a table of
	// its own; rulePeers the peers it runs, by their iptables-mode names.
	ruleModes, rulePeers []string
	rounds               int
	// perf is the length of one dnsperf measurement, warmup of the run
	// before it that fills caches and wakes the peer up.
	perf, warmup time.Duration
	// settle is the pause between ready and reading RSS.
	settle time.Duration
	// changes is the number of endpoint changes timed per rule peer run.
	changes int
	// queryLines is the length of each dnsperf data file.
	queryLines       int
	dns, rules, ipvs bool
	// nodecache compares `clusterdns nodecache` with CoreDNS on
	// NodeLocal DNSCache's stock Corefile.
	nodecache bool
}

func newConfig() config {
	c := config{
		spec:       DefaultSpec().Scaled(200),
		ruleSizes:  []int{50, 200},
		ipvsSizes:  []int{50},
		rounds:     1,
		perf:       time.Second,
		warmup:     500 * time.Millisecond,
		settle:     200 * time.Millisecond,
		changes:    2,
		queryLines: 5000,
		ruleModes:  []string{modeIPTables, modeNFTables},
		rulePeers:  []string{PeerOurProxy, PeerKubeProxy},
	}
	if *flagFull {
		c = config{
			spec:      DefaultSpec(),
			ruleSizes: []int{1000, 10000},
			// Under emulation kube-proxy's first IPVS sync takes about
			// 13 minutes at 3,000 Services and would take over an hour
			// at 10,000; there clusterdns proxy runs alone.
			ipvsSizes:    []int{1000, 3000, 10000},
			ipvsOursOnly: []int{10000},
			rounds:       3,
			perf:         10 * time.Second,
			warmup:       2 * time.Second,
			settle:       2 * time.Second,
			changes:      5,
			queryLines:   100000,
			ruleModes:    []string{modeIPTables},
			rulePeers:    []string{PeerOurProxy, PeerKubeProxy},
		}
	}
	if *flagRuleMode != "" {
		c.ruleModes = parseList("-rules-mode", *flagRuleMode, modeIPTables, modeNFTables)
	}
	if *flagRulePeers != "" {
		c.rulePeers = parseList("-rule-peers", *flagRulePeers, PeerOurProxy, PeerKubeProxy)
	}
	if *flagRounds > 0 {
		c.rounds = *flagRounds
	}
	if *flagChanges > 0 {
		c.changes = *flagChanges
	}
	if *flagSizes != "" {
		c.ruleSizes = parseSizes("-rule-sizes", *flagSizes)
	}
	if *flagIPVSSizes != "" {
		c.ipvsSizes, c.ipvsOursOnly = parseSizes("-ipvs-sizes", *flagIPVSSizes), nil
	}
	if *flagIPVSOursOnly != "" {
		c.ipvsOursOnly = parseSizes("-ipvs-ours-only", *flagIPVSOursOnly)
		c.ipvsSizes = append(c.ipvsSizes, c.ipvsOursOnly...)
		slices.Sort(c.ipvsSizes)
		c.ipvsSizes = slices.Compact(c.ipvsSizes)
	}
	// A size above the smoke cluster's needs a cluster that large.
	if largest := slices.Max(append(slices.Clone(c.ruleSizes), c.ipvsSizes...)); largest > c.spec.ClusterIP {
		c.spec = DefaultSpec().Scaled(largest)
	}
	parts := *flagParts
	if parts == "" {
		parts = "dns,rules,ipvs,nodecache"
		if *flagFull {
			parts = "dns,rules,nodecache"
		}
	}
	for _, part := range strings.Split(parts, ",") {
		switch strings.TrimSpace(part) {
		case "dns":
			c.dns = true
		case "rules":
			c.rules = true
		case "ipvs":
			c.ipvs = true
		case "nodecache":
			c.nodecache = true
		}
	}
	return c
}

func parseSizes(name, list string) []int {
	var sizes []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			panic(fmt.Sprintf("%s %q: %v", name, list, err))
		}
		sizes = append(sizes, n)
	}
	return sizes
}

// parseList splits a comma-separated flag whose every item must be one of
// allowed.
func parseList(name, list string, allowed ...string) []string {
	var items []string
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(allowed, f) {
			panic(fmt.Sprintf("%s %q: %q is not one of %s", name, list, f, strings.Join(allowed, ", ")))
		}
		if !slices.Contains(items, f) {
			items = append(items, f)
		}
	}
	return items
}

// sizes is every size a rule part runs at, ascending: the cluster grows
// through them.
func (c config) sizes() []int {
	var all []int
	if c.rules {
		all = append(all, c.ruleSizes...)
	}
	if c.ipvs {
		all = append(all, c.ipvsSizes...)
	}
	slices.Sort(all)
	return slices.Compact(all)
}

// CPUs the peers and the load generator are pinned to.
const (
	loadCPU = 0
	peerCPU = 1
)

// env is what every part of the benchmark shares.
type env struct {
	cfg        config
	work       string
	api        *kubeapi.APIServer
	admin      kubernetes.Interface
	kubeconfig string
	bins       binaries
	res        *Results
	// changeSeq numbers endpoint changes so every new address is fresh.
	changeSeq int
	// vm runs the IPVS peers.
	vm vm.Assets
}

// binaries are the peers' executables.
type binaries struct {
	clusterdns, coredns, bareUDP, kubeProxy string
	// ipvsNode drives an IPVS peer inside the VM.
	ipvsNode string
}

// TestPeers compares clusterdns with CoreDNS and kube-proxy on one machine.
// By default it is a smoke run (a few hundred Services, one round, a second
// per measurement) that keeps the harness working; with -full it takes the
// published figures (about 25 minutes):
//
//	go test -run TestPeers -timeout 90m -v -args -full
func TestPeers(t *testing.T) {
	cfg := newConfig()
	requireTools(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Minute)
	if deadline, ok := t.Deadline(); ok {
		// Room to write the results when the test's own -timeout is near.
		ctx, cancel = context.WithDeadline(context.Background(), deadline.Add(-time.Minute))
	}
	defer cancel()

	out := *flagOut
	if out == "" {
		out = t.TempDir()
		if *flagFull {
			out = "results"
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &env{cfg: cfg, work: t.TempDir(), res: NewResults(cfg.spec)}
	if cfg.ipvs {
		e.vm, cfg.ipvs = ipvsVM(t)
		e.cfg.ipvs = cfg.ipvs
	}
	ours := cfg.dns || cfg.ipvs || cfg.nodecache || slices.Contains(cfg.rulePeers, PeerOurProxy)
	e.bins = buildBinaries(t, e.work, ours, cfg.dns || cfg.nodecache, cfg.rules || cfg.ipvs)
	if cfg.ipvs {
		bins, err := vm.BuildStatic(ctx, e.work, "github.com/clusterdns/clusterdns/e2e/bench/cmd/ipvsnode")
		if err != nil {
			t.Fatal(err)
		}
		e.bins.ipvsNode = bins[0]
	}

	// The node cache part alone needs no API server.
	if cfg.dns || cfg.rules || cfg.ipvs {
		e.api = kubeapi.StartWithOptions(t, kubeapi.Options{ExtraArgs: []string{
			"--max-requests-inflight=2000",
			"--max-mutating-requests-inflight=1000",
		}})
		// The bulk load is bound by the API server's CPU, not by the client:
		// protobuf costs it far less to decode and encode than JSON, and many
		// creates in flight keep it busy (a 50,000-Service cluster took half an
		// hour with JSON and 16 at a time).
		adminCfg := *e.api.AdminConfig
		adminCfg.ContentType = "application/vnd.kubernetes.protobuf"
		adminCfg.QPS = -1 // no client-side limit
		admin, err := kubernetes.NewForConfig(&adminCfg)
		if err != nil {
			t.Fatal(err)
		}
		e.admin = admin
		e.kubeconfig = filepath.Join(e.work, "kubeconfig")
		if err := e.api.WriteKubeconfig(e.kubeconfig, ""); err != nil {
			t.Fatal(err)
		}
	}

	loaded := Spec{}
	const loadWorkers = 64
	grow := func(to Spec) {
		t.Helper()
		began := time.Now()
		objs := to.Objects(loaded)
		if err := objs.Load(ctx, e.admin, loadWorkers); err != nil {
			t.Fatalf("load %d Services: %v", to.Services(), err)
		}
		t.Logf("loaded %d more Services and %d EndpointSlices (%d Services in all) in %s",
			len(objs.Services), len(objs.Slices), to.Services(), time.Since(began).Round(time.Millisecond))
		loaded = to
	}
	if cfg.rules || cfg.ipvs {
		createNode(t, ctx, e.admin)
		for _, size := range cfg.sizes() {
			// A folder-only rules run needs nothing in the API server.
			if *flagRulesSource != "manifests" || cfg.ipvs {
				grow(cfg.spec.Scaled(size))
			}
			if cfg.rules && slices.Contains(cfg.ruleSizes, size) {
				for _, mode := range cfg.ruleModes {
					runRules(t, ctx, e, mode, size)
				}
			}
			if cfg.ipvs && slices.Contains(cfg.ipvsSizes, size) {
				runIPVS(t, ctx, e, size)
			}
		}
	}
	if cfg.dns {
		grow(cfg.spec)
		manifests := filepath.Join(e.work, "manifests")
		if err := cfg.spec.Objects(Spec{}).WriteManifests(manifests); err != nil {
			t.Fatal(err)
		}
		runDNS(t, ctx, e, manifests)
	}
	if cfg.nodecache {
		runNodecache(t, ctx, e)
	}

	e.res.Finished = time.Now().UTC()
	e.res.LoadAvg = append(e.res.LoadAvg, LoadAverage())
	writeResults(t, e.res, out)
	checkResults(t, e)
}

// requireTools skips the run under -short, and otherwise fails it unless
// what the chosen parts need is here (e2e/bench/install-deps.sh installs
// it; the rules comparison needs root, or -parts dns).
func requireTools(t *testing.T, cfg config) {
	t.Helper()
	tools := []string{"taskset", "dnsperf", "etcd"}
	var needs []testenv.Need
	if cfg.nodecache {
		// The stock Corefile's port 53.
		needs = append(needs, testenv.Root())
	}
	if cfg.rules {
		needs = append(needs, testenv.Root())
		tools = append(tools, "ip", "iptables-save", "iptables-restore")
		if slices.Contains(cfg.ruleModes, modeNFTables) {
			tools = append(tools, "nft")
		}
	}
	testenv.Require(t, append(needs, testenv.Tools(tools...))...)
	if runtime.NumCPU() < 2 {
		t.Fatalf("the benchmark pins the peers and dnsperf to separate cores and needs 2, this machine has %d", runtime.NumCPU())
	}
}

// buildBinaries builds clusterdns from this repository (unless no part runs
// it); for the DNS
// comparison CoreDNS from the version pinned in this module's go.mod and the
// bare responder; for the rule comparison kube-proxy with e2e/tools/build.sh.
// Everything is built static (CGO_ENABLED=0), as the peers' releases are.
func buildBinaries(t *testing.T, dir string, ours, dns, kubeProxy bool) binaries {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	b := binaries{
		clusterdns: filepath.Join(dir, "clusterdns"),
		coredns:    filepath.Join(dir, "coredns"),
		bareUDP:    filepath.Join(dir, "bareudp"),
	}
	type build struct{ name, dir, out, pkg string }
	var builds []build
	if ours {
		builds = append(builds, build{"clusterdns", root, b.clusterdns, "./cmd/clusterdns"})
	}
	if dns {
		builds = append(builds, build{"coredns", ".", b.coredns, "github.com/coredns/coredns"},
			build{"bareudp", ".", b.bareUDP, "./cmd/bareudp"})
	}
	for _, bd := range builds {
		began := time.Now()
		cmd := exec.Command("go", "build", "-trimpath", "-o", bd.out, bd.pkg)
		cmd.Dir = bd.dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", bd.name, err, out)
		}
		t.Logf("built %s in %s", bd.name, time.Since(began).Round(time.Millisecond))
	}
	if kubeProxy {
		began := time.Now()
		cmd := exec.Command("bash", filepath.Join(root, "e2e", "tools", "build.sh"), "kube-proxy")
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("build kube-proxy: %v", err)
		}
		b.kubeProxy = strings.TrimSpace(string(out))
		t.Logf("kube-proxy at %s (%s)", b.kubeProxy, time.Since(began).Round(time.Millisecond))
	}
	return b
}

func writeResults(t *testing.T, res *Results, dir string) {
	t.Helper()
	md := res.Markdown()
	charts, err := res.WriteCharts(dir)
	if err != nil {
		t.Errorf("charts: %v", err)
	}
	if len(charts) > 0 {
		md += "\n"
		for _, c := range charts {
			md += fmt.Sprintf("![%s](%s)\n", strings.TrimSuffix(c, ".png"), c)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := res.WriteJSON(filepath.Join(dir, "results.json")); err != nil {
		t.Fatal(err)
	}
	t.Logf("results in %s:\n%s", dir, md)
}

// checkResults fails the run when a measurement is missing or impossible,
// which is what the smoke run is for.
func checkResults(t *testing.T, e *env) {
	t.Helper()
	total := e.cfg.spec.Services()
	type want struct {
		peer, metric string
		size         int
	}
	var wants []want
	if e.cfg.dns {
		for _, peer := range []string{PeerClusterDNS, PeerCoreDNS} {
			for _, m := range []string{MetricQPSCluster, MetricQPSExternal, MetricP50Cluster, MetricP99Cluster,
				MetricP50External, MetricP99External, MetricRSS, MetricReady} {
				wants = append(wants, want{peer, m, total})
			}
		}
		wants = append(wants, want{PeerBareUDP, MetricQPSCluster, total})
	}
	if e.cfg.nodecache {
		for _, peer := range []string{PeerNodecache, PeerNodecacheCoreDNS} {
			for _, m := range []string{MetricQPSCluster, MetricQPSExternal, MetricP50Cluster, MetricP99Cluster,
				MetricP50External, MetricP99External, MetricRSSLoad, MetricPeakRSS, MetricReady} {
				wants = append(wants, want{peer, m, nodecacheNames})
			}
		}
	}
	if e.cfg.rules {
		for _, mode := range e.cfg.ruleModes {
			metrics := []string{MetricChange, MetricSynced, MetricRules}
			if mode == modeNFTables {
				metrics = append(metrics, MetricNFTChains)
			}
			for _, peer := range rulePeersFor(mode) {
				if !slices.Contains(e.cfg.rulePeers, peer.base) {
					continue
				}
				for _, size := range e.cfg.ruleSizes {
					for _, m := range metrics {
						wants = append(wants, want{peer.name, m, size})
					}
				}
			}
		}
	}
	if e.cfg.ipvs {
		for _, size := range e.cfg.ipvsSizes {
			for _, peer := range []string{PeerOurProxyIPVS, PeerKubeProxyIPVS} {
				if peer != PeerOurProxyIPVS && slices.Contains(e.cfg.ipvsOursOnly, size) {
					continue
				}
				for _, m := range []string{MetricChange, MetricSynced, MetricFullSync, MetricVirtualServers, MetricRealServers} {
					wants = append(wants, want{peer, m, size})
				}
			}
		}
	}
	for _, w := range wants {
		v := e.res.Values(w.peer, w.metric, w.size)
		if len(v) == 0 {
			t.Errorf("no %s for %s at %d Services", w.metric, w.peer, w.size)
			continue
		}
		for _, x := range v {
			if !(x > 0) {
				t.Errorf("%s of %s at %d Services is %v", w.metric, w.peer, w.size, x)
			}
		}
	}
}
