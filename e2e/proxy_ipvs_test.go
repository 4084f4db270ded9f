package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/e2e/vm"
	"github.com/clusterdns/clusterdns/internal/testenv"
)

// The IPVS e2e cluster: one Service with a TCP and a UDP port behind node
// ports, one with ClientIP affinity, and a LoadBalancer one whose source
// ranges admit only the outside client, over three pods.
var ipvsPodIPs = []string{"10.100.1.2", "10.100.2.2", "10.100.3.2"}

const ipvsServices = `apiVersion: v1
kind: Namespace
metadata: {name: e2e}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: e2e}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, protocol: TCP, port: 80, targetPort: 80, nodePort: 30080}
  - {name: dns, protocol: UDP, port: 53, targetPort: 5353, nodePort: 30053}
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: e2e}
spec:
  clusterIP: 10.96.0.11
  selector: {app: web}
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80, targetPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: ranged, namespace: e2e}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.12
  selector: {app: web}
  loadBalancerSourceRanges: [10.100.9.0/24]
  ports: [{name: http, port: 80, targetPort: 80, nodePort: 30081}]
status:
  loadBalancer:
    ingress: [{ip: 192.0.2.50}]
`

// ipvsPods renders the pods; the unready ones have Ready False.
func ipvsPods(unready ...string) string {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: List\nitems:\n")
	for i, ip := range ipvsPodIPs {
		ready := "True"
		if slices.Contains(unready, ip) {
			ready = "False"
		}
		fmt.Fprintf(&b, `- apiVersion: v1
  kind: Pod
  metadata: {name: web-%d, namespace: e2e, labels: {app: web}}
  spec:
    containers: [{name: web, image: web, ports: [{name: http, containerPort: 80}]}]
  status:
    podIP: %s
    podIPs: [{ip: %s}]
    conditions: [{type: Ready, status: "%s"}]
`, i+1, ip, ip, ready)
	}
	return b.String()
}

// ipvsAssets finds the VM. Under -short the test is skipped; otherwise a
// missing VM fails it: `make test` builds it first.
func ipvsAssets(t *testing.T) vm.Assets {
	t.Helper()
	var a vm.Assets
	testenv.Require(t, testenv.Need{What: "the e2e VM (e2e/vm/build.sh)", Check: func() (err error) {
		a, err = vm.Locate()
		return err
	}})
	return a
}

// TestProxyIPVS runs `clusterdns proxy --proxy-mode ipvs` on a real kernel
// with IPVS, booted under qemu, and checks real packets through it: TCP and
// UDP through a cluster IP and a node port, round robin over every pod,
// ClientIP persistence, hairpin, the filter on service addresses,
// loadBalancerSourceRanges, a pod
// turning unready, cleanup, and the switch to iptables mode.
func TestProxyIPVS(t *testing.T) {
	assets := ipvsAssets(t)
	bins, err := vm.BuildStatic(t.Context(), t.TempDir(),
		"github.com/clusterdns/clusterdns/cmd/clusterdns",
		"github.com/clusterdns/clusterdns/e2e/netns/podserver",
		"github.com/clusterdns/clusterdns/e2e/vm/vmprobe")
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join("testdata", "proxy-ipvs.sh"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := assets.Run(t.Context(), vm.Spec{
		Binaries: bins,
		Files: map[string][]byte{
			"/etc/clusterdns/services.yaml":     []byte(ipvsServices),
			"/etc/clusterdns/pods-ready.yaml":   []byte(ipvsPods()),
			"/etc/clusterdns/pods-unready.yaml": []byte(ipvsPods(ipvsPodIPs[2])),
		},
		Script:    string(script),
		Timeout:   10 * time.Minute,
		MemoryMiB: 1536,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s, boot to power-off %v", assets.Version, out.Elapsed.Round(time.Millisecond))
	if out.ExitCode != 0 || !strings.Contains(out.Result, "== done") {
		t.Fatalf("the VM script failed (exit %d):\n%s", out.ExitCode, out.Result)
	}
	sec := sections(out.Result)
	all, first2 := ipvsPodIPs, ipvsPodIPs[:2]

	t.Run("listing matches ipvsadm", func(t *testing.T) {
		got, want := parseIPVSTable(sec["list"]), parseIPVSTable(sec["ipvsadm"])
		if len(want) == 0 || !equalTables(got, want) {
			t.Errorf("clusterdns proxy --list:\n%s\nipvsadm -Ln:\n%s", sec["list"], sec["ipvsadm"])
		}
		for _, vs := range []string{"TCP  10.96.0.10:80 rr", "UDP  10.96.0.10:53 rr", "TCP  10.100.9.1:30080 rr",
			"UDP  10.100.1.1:30053 rr", "TCP  10.96.0.11:80 rr persistent 10800"} {
			reals := want[vs]
			if len(reals) != 3 {
				t.Errorf("%s has real servers %v, want the three pods", vs, reals)
			}
		}
	})
	t.Run("service addresses on the dummy link and kernel settings", func(t *testing.T) {
		for _, want := range []string{"10.96.0.10/32", "10.96.0.11/32", "net/ipv4/vs/conntrack=1",
			"net/ipv4/vs/expire_nodest_conn=1", "net/ipv4/vs/expire_quiescent_template=1", "net/ipv4/ip_forward=1"} {
			if !strings.Contains(sec["link"]+sec["sysctl"], want) {
				t.Errorf("missing %q in\n%s%s", want, sec["link"], sec["sysctl"])
			}
		}
	})
	spreads := parseSpreads(sec["traffic"])
	t.Run("TCP and UDP through cluster IP and node port reach every pod", func(t *testing.T) {
		for _, key := range []string{"tcp 10.96.0.10:80", "udp 10.96.0.10:53", "tcp 10.100.9.1:30080", "udp 10.100.9.1:30053"} {
			checkSpread(t, key, spreads[key], all, 30)
		}
	})
	t.Run("round robin spreads evenly", func(t *testing.T) {
		// rr over three servers and 30 fresh connections from one client:
		// 10 each, give or take what other clients took in between.
		for pod, n := range spreads["tcp 10.96.0.10:80"] {
			if n < 8 || n > 12 {
				t.Errorf("pod %s got %d of 30 connections, want about 10", pod, n)
			}
		}
	})
	t.Run("ClientIP affinity keeps one client on one pod", func(t *testing.T) {
		got := spreads["tcp 10.96.0.11:80"]
		if len(got) != 1 || got["error"] != 0 {
			t.Errorf("sticky service answered by %v, want one pod for all 20", got)
		}
	})
	t.Run("hairpin: a pod reaches itself through its service", func(t *testing.T) {
		checkSpread(t, "hairpin", parseSpreads(sec["hairpin"])["tcp 10.96.0.10:80"], all, 30)
	})
	t.Run("service address refuses other ports", func(t *testing.T) {
		if !strings.Contains(sec["filter"], "refused") {
			t.Errorf("dial to a non-service port: %s", sec["filter"])
		}
	})
	t.Run("source ranges: the listed client reaches the LB IP, a pod outside them is dropped", func(t *testing.T) {
		if !strings.Contains(sec["source range allowed"], "reply:") {
			t.Errorf("client in the range: %s", sec["source range allowed"])
		}
		// Dropped, so the dial times out: no reply and no refusal.
		denied := sec["source range denied"]
		if strings.Contains(denied, "reply:") || strings.Contains(denied, "refused") || !strings.Contains(denied, "exit 1") {
			t.Errorf("pod outside the range: %s", denied)
		}
	})
	t.Run("unready pod leaves rotation; TCP drains at weight 0, UDP goes", func(t *testing.T) {
		unready := parseSpreads(sec["unready traffic"])
		for _, key := range []string{"tcp 10.96.0.10:80", "udp 10.96.0.10:53", "tcp 10.100.9.1:30080"} {
			checkSpread(t, key, unready[key], first2, 30)
		}
		table := parseIPVSTable(sec["unready list"])
		tcp := table["TCP  10.96.0.10:80 rr"]
		if !slices.ContainsFunc(tcp, func(r string) bool { return strings.HasPrefix(r, "10.100.3.2:80 Masq 0 ") }) {
			t.Errorf("TCP real servers after pod3 turned unready: %v, want pod3 at weight 0", tcp)
		}
		for _, r := range table["UDP  10.96.0.10:53 rr"] {
			if strings.HasPrefix(r, "10.100.3.2:") {
				t.Errorf("UDP real server %s kept after pod3 turned unready", r)
			}
		}
	})
	t.Run("explain reads the IPVS table back", func(t *testing.T) {
		checkIPVSExplain(t, sec["explain"], map[string][]string{"80/TCP": {}, "53/UDP": {}}, 3)
		checkIPVSExplain(t, sec["explain unready"], map[string][]string{"80/TCP": {}, "53/UDP": {}}, 2)
		// After the agent stopped pod3 turned ready again: exactly its two
		// real servers are missing.
		checkIPVSExplain(t, sec["explain stale"], map[string][]string{"80/TCP": {"10.100.3.2:80"}, "53/UDP": {"10.100.3.2:5353"}}, 2)
	})
	t.Run("cleanup leaves nothing", func(t *testing.T) {
		if n, _ := strconv.Atoi(strings.TrimSpace(sec["iptables before cleanup"])); n == 0 {
			t.Errorf("no hooks into CDNS-IPVS- chains before cleanup: %q", sec["iptables before cleanup"])
		}
		after := sec["after cleanup"]
		if len(parseIPVSTable(after)) != 0 || strings.Contains(after, "present") ||
			!strings.Contains(after, "sets: 0") || !strings.Contains(after, "rules: 0") {
			t.Errorf("after cleanup:\n%s", after)
		}
	})
	t.Run("iptables mode removes what IPVS mode left", func(t *testing.T) {
		after := sec["after switch to iptables"]
		if len(parseIPVSTable(after)) != 0 || strings.Contains(after, "present") ||
			!strings.Contains(after, "sets: 0") || !strings.Contains(after, "ipvs rules: 0") ||
			strings.Contains(after, "iptables rules: 0") {
			t.Errorf("after switching to iptables mode:\n%s", after)
		}
		if !strings.Contains(sec["after second cleanup"], "rules: 0") {
			t.Errorf("after the second cleanup:\n%s", sec["after second cleanup"])
		}
	})
	if t.Failed() {
		t.Logf("VM output:\n%s", out.Result)
	}
}

// sections splits the script's output at its "== name" lines.
func sections(out string) map[string]string {
	sec := map[string]string{}
	name := ""
	for _, line := range strings.SplitAfter(out, "\n") {
		if n, ok := strings.CutPrefix(line, "== "); ok {
			name = strings.TrimSpace(n)
			continue
		}
		sec[name] += line
	}
	return sec
}

// parseIPVSTable reads ipvsadm -Ln output into virtual server lines and
// their real server lines (fields joined by one space), sorted.
func parseIPVSTable(s string) map[string][]string {
	table := map[string][]string{}
	vsLine := regexp.MustCompile(`^(TCP|UDP|SCTP)  \S+ \S+`)
	cur := ""
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimRight(line, " ")
		switch {
		case vsLine.MatchString(line):
			cur = line
			table[cur] = nil
		case strings.HasPrefix(line, "  -> ") && cur != "" && !strings.Contains(line, "RemoteAddress"):
			table[cur] = append(table[cur], strings.Join(strings.Fields(line)[1:], " "))
		}
	}
	for k := range table {
		sort.Strings(table[k])
	}
	return table
}

func equalTables(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// parseSpreads reads vmprobe spread lines: "spread tcp ADDR: a=1 b=2".
func parseSpreads(s string) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, line := range strings.Split(s, "\n") {
		rest, ok := strings.CutPrefix(line, "spread ")
		if !ok {
			continue
		}
		key, counts, _ := strings.Cut(rest, ":")
		// The address has a colon too: the key ends at the last colon
		// before the counts.
		if i := strings.Index(rest, ": "); i >= 0 {
			key, counts = rest[:i], rest[i+2:]
		}
		m := map[string]int{}
		for _, f := range strings.Fields(counts) {
			name, n, _ := strings.Cut(f, "=")
			m[name], _ = strconv.Atoi(n)
		}
		out[key] = m
	}
	return out
}

// checkSpread wants exactly the pods in want to have answered, every one of
// the n exchanges answered.
func checkSpread(t *testing.T, key string, got map[string]int, want []string, n int) {
	t.Helper()
	total := 0
	for pod, c := range got {
		if !slices.Contains(want, pod) {
			t.Errorf("%s: %d answers from %s, want only %v (all: %v)", key, c, pod, want, got)
		}
		total += c
	}
	for _, pod := range want {
		if got[pod] == 0 {
			t.Errorf("%s: %s never answered (all: %v)", key, pod, got)
		}
	}
	if total != n {
		t.Errorf("%s: %d exchanges reported, want %d", key, total, n)
	}
}

// checkIPVSExplain checks `clusterdns explain -o json web.e2e` run in the VM:
// IPVS mode found, each cluster IP port sending to kernelN real servers and
// missing exactly the ones listed (in sync when none).
func checkIPVSExplain(t *testing.T, out string, missing map[string][]string, kernelN int) {
	t.Helper()
	var v explainView
	if err := json.Unmarshal([]byte(out), &v); err != nil || v.Node == nil {
		t.Errorf("explain output: %v\n%s", err, out)
		return
	}
	if v.Node.Mode != "ipvs" || len(v.Node.Ports) != len(missing) {
		t.Errorf("want ipvs mode and %d ports:\n%s", len(missing), out)
		return
	}
	var problems []string
	for _, p := range v.Node.Ports {
		want, ok := missing[p.Port]
		if !ok || len(p.Kernel) != kernelN || len(p.Missing) != len(want) || !slices.Equal(p.Missing, want) && len(want) > 0 ||
			p.InSync != (len(want) == 0) || len(p.Extra) != 0 {
			t.Errorf("port %s: kernel %v, missing %v, in sync %v; want %d real servers, missing %v:\n%s", p.Port, p.Kernel, p.Missing, p.InSync, kernelN, want, out)
		}
		for _, m := range want {
			problems = append(problems, "10.96.0.10:"+p.Port+": the kernel does not send to "+m)
		}
	}
	slices.Sort(problems)
	got := slices.Sorted(slices.Values(v.Problems))
	if !slices.Equal(got, problems) {
		t.Errorf("problems %q, want %q", got, problems)
	}
}
