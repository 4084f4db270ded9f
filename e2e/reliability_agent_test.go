package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/clusterdns/clusterdns/e2e/internal/kubeapi"
	"github.com/clusterdns/clusterdns/e2e/internal/promtext"
	"github.com/clusterdns/clusterdns/e2e/netns"
)

// The node agent under faults: killed in the middle of a sync, refused by
// the kernel, cut off from the API server. Each test runs the real binary in
// network namespaces of its own and compares what the kernel holds, dumped
// whole, with what a clean full sync makes. IPVS mode is not here: this
// kernel has no IPVS, and the VM tests (proxy_ipvs_test.go) cover its syncs.

const (
	faultMetricQueued  = "clusterdns_proxy_sync_proxy_rules_last_queued_timestamp_seconds"
	faultMetricSuccess = "clusterdns_proxy_last_sync_success_timestamp_seconds"
	faultMetricErrors  = "clusterdns_proxy_sync_errors_total"
	faultPatience      = 3 * time.Minute // bound on one 10,000-Service sync (nft iptables would need far more; legacy is used)
)

// faultFailureMetric is kube-proxy's name for a refused sync in each mode.
var faultFailureMetric = map[string]string{
	"iptables": "clusterdns_proxy_sync_proxy_rules_iptables_restore_failures_total",
	"nftables": "clusterdns_proxy_sync_proxy_rules_nftables_sync_failures_total",
}

// faultAgent is one run of `clusterdns proxy` in a namespace.
type faultAgent struct {
	ns   *netns.NS
	proc *netns.Process
}

// startFaultAgent starts the agent on a manifests folder, or on a kubeconfig
// when manifests is empty, with extra flags.
func startFaultAgent(t *testing.T, ns *netns.NS, mode, source string, extra ...string) *faultAgent {
	t.Helper()
	args := []string{clusterdnsBinary(t), "proxy", "--proxy-mode", mode, "--cluster-cidr", proxyCIDR,
		"--healthz-bind-address", proxyHealthz, "--metrics-bind-address", proxyMetrics,
		"--iptables-variant", proxyIPTablesVariant, "-v", "4"}
	if strings.HasSuffix(source, ".kubeconfig") {
		args = append(args, "--kubeconfig", source)
	} else {
		args = append(args, "--manifests", source)
	}
	a := &faultAgent{ns: ns, proc: ns.Start(append(args, extra...)...)}
	t.Cleanup(func() {
		if t.Failed() {
			out := a.proc.Output()
			if len(out) > 8000 {
				out = "…" + out[len(out)-8000:]
			}
			t.Logf("agent in %s:\n%s", ns.Name, out)
		}
	})
	return a
}

// get fetches a path from the agent's healthz or metrics address.
func (a *faultAgent) get(addr, path string) (int, string, error) {
	client := &http.Client{
		Timeout: proxyTimeout,
		Transport: &http.Transport{DialContext: func(_ context.Context, network, address string) (net.Conn, error) {
			return a.ns.Dial(network, address, proxyTimeout)
		}},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String(), err
}

// metric reads one metric; found is false when the page or the series is
// not there (yet).
func (a *faultAgent) metric(name string, labels ...string) (float64, bool) {
	code, body, err := a.get(proxyMetrics, "/metrics")
	if err != nil || code != http.StatusOK {
		return 0, false
	}
	return promtext.Value(body, name, labels...)
}

// waitSynced waits, up to patience, for a successful sync after since (Unix
// seconds) and returns its time.
func (a *faultAgent) waitSynced(t *testing.T, since float64, patience time.Duration) float64 {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		if v, ok := a.metric(faultMetricSuccess); ok && v > since {
			return v
		}
		if exited, err := a.proc.Exited(); exited {
			t.Fatalf("agent exited: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful sync within %s", patience)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill ends the agent as the kernel's OOM killer or a container runtime
// would: SIGKILL to its process group, tools it runs included.
func (a *faultAgent) kill(t *testing.T) {
	t.Helper()
	_ = syscall.Kill(-a.proc.Cmd.Process.Pid, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if exited, _ := a.proc.Exited(); exited {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent outlived SIGKILL by 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kernelDump is everything a namespace's packet filter holds, in a form
// that two namespaces programmed alike print identically: iptables-save of
// every table of both families without counters, and nft's JSON listing of
// the whole ruleset without handles, with set and map elements sorted.
func kernelDump(t *testing.T, ns *netns.NS) string {
	t.Helper()
	var out strings.Builder
	for _, tool := range []string{"iptables-" + proxyIPTablesVariant + "-save", "ip6tables-" + proxyIPTablesVariant + "-save"} {
		out.WriteString("# " + tool + "\n")
		for _, line := range strings.Split(ns.MustRun(tool), "\n") {
			switch {
			case line == "" || strings.HasPrefix(line, "#"):
				continue
			case strings.HasPrefix(line, ":"):
				// ":CHAIN POLICY [packets:bytes]": the counters go.
				if i := strings.LastIndex(line, " ["); i > 0 {
					line = line[:i]
				}
			}
			out.WriteString(line + "\n")
		}
	}
	out.WriteString("# nft\n")
	out.WriteString(nftDump(t, ns))
	return out.String()
}

// nftDump lists the ruleset as sorted lines, one per object: rules keep
// their place in their chain, elements are sorted.
func nftDump(t *testing.T, ns *netns.NS) string {
	t.Helper()
	var doc struct {
		Nftables []map[string]map[string]any `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(ns.MustRun("nft", "-j", "list", "ruleset")), &doc); err != nil {
		t.Fatalf("nft -j list ruleset: %v", err)
	}
	var lines []string
	ruleIndex := map[string]int{}
	for _, item := range doc.Nftables {
		for kind, obj := range item {
			if kind == "metainfo" {
				continue
			}
			delete(obj, "handle")
			key := fmt.Sprintf("%v %v", obj["family"], obj["table"])
			switch kind {
			case "rule":
				chain := key + " " + fmt.Sprint(obj["chain"])
				enc, _ := json.Marshal(obj["expr"])
				lines = append(lines, fmt.Sprintf("rule %s #%04d %s", chain, ruleIndex[chain], enc))
				ruleIndex[chain]++
				continue
			case "set", "map":
				if elems, ok := obj["elem"].([]any); ok {
					for _, e := range elems {
						enc, _ := json.Marshal(e)
						lines = append(lines, fmt.Sprintf("%s %s %v element %s", kind, key, obj["name"], enc))
					}
				}
				delete(obj, "elem")
			}
			enc, _ := json.Marshal(obj)
			lines = append(lines, kind+" "+string(enc))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

// dumpDiff shows the first lines where two dumps differ.
func dumpDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	var b strings.Builder
	fmt.Fprintf(&b, "%d lines against %d\n", len(g), len(w))
	inWant := make(map[string]bool, len(w))
	for _, l := range w {
		inWant[l] = true
	}
	inGot := make(map[string]bool, len(g))
	for _, l := range g {
		inGot[l] = true
	}
	n := 0
	for _, l := range g {
		if !inWant[l] && n < 15 {
			b.WriteString("+ " + l + "\n")
			n++
		}
	}
	n = 0
	for _, l := range w {
		if !inGot[l] && n < 15 {
			b.WriteString("- " + l + "\n")
			n++
		}
	}
	return b.String()
}

// writeBigCluster writes n ClusterIP Services with endpoints endpoints each
// into dir, in files of 1,000 Services. variant moves the endpoints, so
// that two variants differ in every Service's rules; Services at or past
// n are absent.
func writeBigCluster(t *testing.T, dir string, n, endpoints, variant int) {
	t.Helper()
	old, _ := filepath.Glob(filepath.Join(dir, "big-*.yaml"))
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	const perFile = 1000
	for file := 0; file*perFile < n; file++ {
		var b strings.Builder
		if file == 0 {
			b.WriteString("apiVersion: v1\nkind: Namespace\nmetadata: {name: big}\n")
		}
		for i := file * perFile; i < min(n, (file+1)*perFile); i++ {
			fmt.Fprintf(&b, `---
apiVersion: v1
kind: Service
metadata: {name: svc-%d, namespace: big}
spec:
  clusterIP: 10.100.%d.%d
  selector: {app: svc-%d}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: svc-%d-a, namespace: big, labels: {kubernetes.io/service-name: svc-%d}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints:
`, i, i/250, i%250+1, i, i, i)
			for e := range endpoints {
				a := (i*endpoints+e+variant)%(1<<16) + 1
				fmt.Fprintf(&b, "- {addresses: [172.16.%d.%d], conditions: {ready: true}}\n", a/256, a%256)
			}
		}
		tmp := filepath.Join(dir, fmt.Sprintf(".big-%02d.tmp", file))
		if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, fmt.Sprintf("big-%02d.yaml", file))); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAgentKilledMidSyncIPTables(t *testing.T) { testAgentKilledMidSync(t, "iptables") }

func TestAgentKilledMidSyncNFTables(t *testing.T) { testAgentKilledMidSync(t, "nftables") }

// testAgentKilledMidSync kills the agent with SIGKILL while it programs
// 10,000 Services, at a spread of moments through the sync, starts it
// again each time, and checks that after the last start the kernel holds
// exactly what one clean full sync of the same manifests makes in a fresh
// namespace. Between kills the manifests alternate between two clusters,
// so a restart also finds the rules of a different one half-written.
func testAgentKilledMidSync(t *testing.T, mode string) {
	netns.Require(t, "iptables-"+proxyIPTablesVariant+"-save", "ip6tables-"+proxyIPTablesVariant+"-save", "nft")
	const services, endpoints = 10000, 5
	final := t.TempDir()
	writeBigCluster(t, final, services, endpoints, 0)

	// The reference: one clean full sync in a fresh namespace. Its
	// duration places the kills.
	refNS := netns.New(t, "cdns-ref-")
	ref := startFaultAgent(t, refNS, mode, final)
	started := time.Now()
	ref.waitSynced(t, 0, faultPatience)
	syncTook, _ := ref.metric("clusterdns_proxy_sync_duration_seconds_sum", `kind="full"`)
	t.Logf("%s: clean start to first full sync of %d Services: %s (the sync itself %.2fs)", mode, services,
		time.Since(started).Round(time.Millisecond), syncTook)
	if err := ref.proc.Stop(); err != nil {
		t.Fatalf("reference agent: %v", err)
	}
	want := kernelDump(t, refNS)
	if !strings.Contains(want, "10.100.39.250") {
		t.Fatalf("the reference lacks the last Service's cluster IP:\n%.2000s", want)
	}

	ns := netns.New(t, "cdns-kill-")
	manifests := t.TempDir()
	fractions := []float64{0.05, 0.3, 0.55, 0.8, 0.95}
	midSync := 0
	for round, f := range fractions {
		writeBigCluster(t, manifests, services-round*100, endpoints, round%2)
		a := startFaultAgent(t, ns, mode, manifests)
		// The sync starts when the source has loaded (the queued metric
		// appears); kill at a fraction of the reference's sync time.
		deadline := time.Now().Add(faultPatience)
		for {
			if _, ok := a.metric(faultMetricQueued); ok {
				break
			}
			if exited, err := a.proc.Exited(); exited {
				t.Fatalf("round %d: agent exited: %v", round, err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the source never loaded", round)
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Duration(f * syncTook * float64(time.Second)))
		a.kill(t)
		// The debug line "synced" is written after a sync succeeded; without
		// it the kill landed inside the first sync.
		if !strings.Contains(a.proc.Output(), "msg=synced") {
			midSync++
		}
		t.Logf("round %d: killed %.0f%% into the sync; mid-sync: %v; the kernel then held %d lines of rules", round, f*100,
			!strings.Contains(a.proc.Output(), "msg=synced"), strings.Count(kernelDump(t, ns), "\n"))
	}
	if midSync == 0 {
		t.Errorf("no kill of %d landed inside a sync", len(fractions))
	}

	// Last, a kill while a programmed table is rewritten: the agent syncs
	// one cluster fully, the manifests change every Service's endpoints,
	// and the kill lands in the sync of that change.
	writeBigCluster(t, manifests, services-50, endpoints, 1)
	a := startFaultAgent(t, ns, mode, manifests)
	first := a.waitSynced(t, 0, faultPatience)
	writeBigCluster(t, manifests, services, endpoints, 0)
	deadline := time.Now().Add(faultPatience)
	for {
		if v, ok := a.metric(faultMetricQueued); ok && v > first {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the change never reached the agent")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Duration(0.5 * syncTook * float64(time.Second)))
	last, _ := a.metric(faultMetricSuccess)
	a.kill(t)
	if last == first {
		midSync++
	}
	t.Logf("killed while rewriting a programmed table; mid-sync: %v; the kernel then held %d lines of rules",
		last == first, strings.Count(kernelDump(t, ns), "\n"))

	a = startFaultAgent(t, ns, mode, manifests)
	started = time.Now()
	a.waitSynced(t, 0, faultPatience)
	t.Logf("%s: after %d kills (%d of them mid-sync, by the metrics and log), restart to first full sync: %s", mode, len(fractions)+1, midSync, time.Since(started).Round(time.Millisecond))
	if err := a.proc.Stop(); err != nil {
		t.Fatalf("agent: %v", err)
	}
	if got := kernelDump(t, ns); got != want {
		t.Errorf("after kills and a restart the kernel differs from a clean full sync:\n%s", dumpDiff(got, want))
	}
}

func TestAgentRefusedSyncIPTables(t *testing.T) { testAgentRefusedSync(t, "iptables") }

func TestAgentRefusedSyncNFTables(t *testing.T) { testAgentRefusedSync(t, "nftables") }

// testAgentRefusedSync makes the kernel refuse the agent's syncs: someone
// else's rule jumps to the chain of a Service that is then deleted, so the
// transaction that deletes the chain fails (iptables-restore: "line N
// failed" on the -X; nft: EBUSY). The rules stay as they were, the failures are
// counted, and the agent recovers: in iptables mode, where the foreign rule
// keeps every retry failing, /healthz turns 503 once the change has waited
// twice the sync period and 200 again when the rule is gone; in nftables
// mode the retry replaces the table whole (the foreign chain with it) and
// succeeds. Either way the rules end as a clean full sync makes them.
func testAgentRefusedSync(t *testing.T, mode string) {
	netns.Require(t, "iptables-"+proxyIPTablesVariant+"-save", "ip6tables-"+proxyIPTablesVariant+"-save", "nft")
	const syncPeriod = 2 * time.Second // the health timeout is twice this
	manifests := t.TempDir()
	writeBigCluster(t, manifests, 2, 2, 0)
	ns := netns.New(t, "cdns-refuse-")
	a := startFaultAgent(t, ns, mode, manifests, "--iptables-sync-period", syncPeriod.String(), "--iptables-min-sync-period", "200ms")
	first := a.waitSynced(t, 0, proxyPatience)

	// Someone else's rule jumps to big/svc-1's chain.
	var held string
	switch mode {
	case "iptables":
		for _, line := range strings.Split(ns.MustRun("iptables-"+proxyIPTablesVariant+"-save", "-t", "nat"), "\n") {
			if strings.Contains(line, "big/svc-1") && strings.Contains(line, "-j CDNS-SVC-") {
				held = line[strings.LastIndex(line, "-j ")+3:]
			}
		}
	case "nftables":
		for _, line := range strings.Split(ns.MustRun("nft", "list", "chains", "ip"), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "chain" && strings.HasPrefix(f[1], "service-") && strings.Contains(f[1], "svc-1") {
				held = f[1]
			}
		}
	}
	if held == "" {
		t.Fatalf("no chain for big/svc-1 in:\n%s", kernelDump(t, ns))
	}
	foreign := map[string][][]string{
		"iptables": {{"iptables-" + proxyIPTablesVariant, "-t", "nat", "-A", "PREROUTING", "-j", held}},
		"nftables": {{"nft", "add", "chain", "ip", "clusterdns", "intruder"}, {"nft", "add", "rule", "ip", "clusterdns", "intruder", "jump", held}},
	}[mode]
	for _, cmd := range foreign {
		ns.MustRun(cmd...)
	}
	before := kernelDump(t, ns)

	// big/svc-1 goes and big/svc-0's endpoints move: the sync must delete
	// the held chain.
	writeBigCluster(t, manifests, 1, 2, 1)
	changed := time.Now()
	deadline := changed.Add(proxyPatience)
	for {
		if n, _ := a.metric(faultFailureMetric[mode]); n >= 1 {
			break
		}
		if got := kernelDump(t, ns); got != before {
			t.Fatalf("the rules changed although no sync went through:\n%s", dumpDiff(got, before))
		}
		if time.Now().After(deadline) {
			t.Fatalf("no refused sync counted in %s within %s", faultFailureMetric[mode], proxyPatience)
		}
		time.Sleep(50 * time.Millisecond)
	}

	if mode == "iptables" {
		// Every retry is refused: the rules stay, and /healthz turns 503
		// once the change has waited twice the sync period.
		deadline := time.Now().Add(2*syncPeriod + proxyPatience)
		var body string
		for {
			if got := kernelDump(t, ns); got != before {
				t.Fatalf("a refused sync changed the rules:\n%s", dumpDiff(got, before))
			}
			code, b, err := a.get(proxyHealthz, "/healthz")
			if err == nil && code == http.StatusServiceUnavailable {
				body = b
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/healthz still %d %q %v %s after the change", code, b, err, time.Since(changed).Round(time.Millisecond))
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("/healthz 503 %s after the change: %s", time.Since(changed).Round(time.Millisecond), strings.TrimSpace(body))
		if !strings.Contains(body, held) {
			t.Errorf("/healthz does not say which chain the kernel would not delete (%s): %s", held, body)
		}
		if n, _ := a.metric(faultFailureMetric[mode]); n < 2 {
			t.Errorf("%s = %v after repeated refusals", faultFailureMetric[mode], n)
		}
		undo := slices.Clone(foreign[0])
		undo[3] = "-D"
		ns.MustRun(undo...)
	}

	// The agent recovers: a successful sync, /healthz 200, and the rules a
	// clean full sync of the new manifests makes.
	a.waitSynced(t, first, proxyPatience)
	deadline = time.Now().Add(proxyPatience)
	for {
		code, _, err := a.get(proxyHealthz, "/healthz")
		if err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/healthz still %d (%v) after a successful sync", code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	errorsTotal, _ := a.metric(faultMetricErrors)
	failures, _ := a.metric(faultFailureMetric[mode])
	t.Logf("%s: %v refused syncs counted (%s %v)", mode, errorsTotal, faultFailureMetric[mode], failures)
	if errorsTotal < 1 || failures != errorsTotal {
		t.Errorf("%s = %v and %s = %v, want equal and positive", faultMetricErrors, errorsTotal, faultFailureMetric[mode], failures)
	}
	if err := a.proc.Stop(); err != nil {
		t.Fatalf("agent: %v", err)
	}
	refNS := netns.New(t, "cdns-ref-")
	ref := startFaultAgent(t, refNS, mode, manifests)
	ref.waitSynced(t, 0, proxyPatience)
	if err := ref.proc.Stop(); err != nil {
		t.Fatalf("reference agent: %v", err)
	}
	if got, want := kernelDump(t, ns), kernelDump(t, refNS); got != want {
		t.Errorf("after recovery the rules differ from a clean full sync:\n%s", dumpDiff(got, want))
	}
}

// An API server gone for a minute changes no rule: the agents (one per
// mode, each in its own namespace, both through the same outage) keep
// running, keep their rules unchanged and /healthz 200, and once the API
// server is back they program a new endpoint.
func TestAgentRidesOutAPIServerOutage(t *testing.T) {
	netns.Require(t, "iptables-"+proxyIPTablesVariant+"-save", "ip6tables-"+proxyIPTablesVariant+"-save", "nft")
	const (
		outage   = time.Minute
		sampling = 5 * time.Second
		catchUp  = 2 * time.Minute // client-go's watch backoff may hold the first retry
	)
	api := kubeapi.Start(t)
	admin := mustAdmin(t, api)
	ctx := context.Background()
	const space = "outage"
	createNamespace(t, ctx, admin, space, nil)
	for name, ips := range map[string][]string{"web": {"172.16.1.1", "172.16.1.2"}, "db": {"172.16.2.1"}} {
		if _, err := admin.CoreV1().Services(space).Create(ctx, newService(space, name, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.DiscoveryV1().EndpointSlices(space).Create(ctx, newSlice(space, name, name+"-a", nil, ips...), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	type node struct {
		mode   string
		ns     *netns.NS
		agent  *faultAgent
		before string
	}
	var nodes []*node
	for _, mode := range []string{"iptables", "nftables"} {
		n := &node{mode: mode, ns: netns.New(t, "cdns-outage-")}
		n.agent = startFaultAgent(t, n.ns, mode, api.RelayKubeconfig(t, n.ns, t.TempDir()))
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		n.agent.waitSynced(t, 0, proxyPatience)
		n.before = kernelDump(t, n.ns)
		if !strings.Contains(n.before, "172.16.2.1") {
			t.Fatalf("%s: the rules lack db's endpoint:\n%s", n.mode, n.before)
		}
	}

	if err := api.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	samples := 0
	for time.Since(stopped) < outage {
		time.Sleep(sampling)
		for _, n := range nodes {
			if exited, err := n.agent.proc.Exited(); exited {
				t.Fatalf("%s: the agent exited %s into the outage: %v", n.mode, time.Since(stopped).Round(time.Second), err)
			}
			if got := kernelDump(t, n.ns); got != n.before {
				t.Fatalf("%s: the rules changed %s into the outage:\n%s", n.mode, time.Since(stopped).Round(time.Second), dumpDiff(got, n.before))
			}
			if code, body, err := n.agent.get(proxyHealthz, "/healthz"); err != nil || code != http.StatusOK {
				t.Errorf("%s: /healthz %d %q (%v) %s into the outage", n.mode, code, body, err, time.Since(stopped).Round(time.Second))
			}
		}
		samples++
	}
	if err := api.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server down for %s; rules sampled %d times in each mode, unchanged", time.Since(stopped).Round(time.Second), samples)

	// A new endpoint for db, written once the API server is back.
	restarted := time.Now()
	sl, err := admin.DiscoveryV1().EndpointSlices(space).Get(ctx, "db-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sl.Endpoints = append(sl.Endpoints, newSlice(space, "db", "db-a", nil, "172.16.2.2").Endpoints...)
	if _, err := admin.DiscoveryV1().EndpointSlices(space).Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		deadline := time.Now().Add(catchUp)
		for !strings.Contains(kernelDump(t, n.ns), "172.16.2.2") {
			if exited, err := n.agent.proc.Exited(); exited {
				t.Fatalf("%s: the agent exited: %v", n.mode, err)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the new endpoint is not programmed %s after the API server came back", n.mode, catchUp)
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("%s: new endpoint programmed %s after the API server came back", n.mode, time.Since(restarted).Round(time.Millisecond))
	}
}
