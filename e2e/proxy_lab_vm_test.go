package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/e2e/internal/kubeapi"
	"github.com/clusterdns/clusterdns/e2e/netns"
	"github.com/clusterdns/clusterdns/e2e/vm"
)

// The lab in IPVS mode. This machine's kernel has no IPVS, so the lab runs
// inside the e2e VM: the host test starts the API server and writes the lab's
// objects, then boots the VM with one forward to the API server and runs, in
// it, this package's own test binary, whose TestProxyLabVMGuest builds the
// same lab with e2e/netns and runs labRows against kube-proxy and against
// `clusterdns proxy`, both with --proxy-mode ipvs. The host then reports each
// row of each agent as a subtest of its own.

// labVMEnv names the guest's configuration file in the guest's environment;
// the guest test runs only when it is set.
const labVMEnv = "CLUSTERDNS_LAB_VM"

// labVMDir holds the guest's configuration and the API server's CA.
const labVMDir = "/etc/lab"

// labVMImpls are the agents the VM runs, reference first.
var labVMImpls = []labImpl{{name: "kube-proxy", mode: "ipvs"}, {name: "clusterdns", mode: "ipvs"}}

// labVMConfig is what the host tells the guest.
type labVMConfig struct {
	API kubeapi.Remote
}

// labVMPatience bounds an agent's first full sync in the VM: kube-proxy's
// takes about a minute under emulation on a busy machine.
const labVMPatience = 4 * time.Minute

// labVMTimeout bounds the VM run: boot, both agents' labs, power-off.
const labVMTimeout = 9 * time.Minute

// TestProxyLabIPVS runs the lab's rows against kube-proxy v1.37.2 and
// `clusterdns proxy` in IPVS mode, on two nodes inside the e2e VM, reading
// the objects from an API server on this machine.
func TestProxyLabIPVS(t *testing.T) {
	assets := ipvsAssets(t)
	kubeProxy, err := kubeapi.Binary("kube-proxy")
	if err != nil {
		t.Fatal(err)
	}
	api := kubeapi.Start(t)
	writeLabObjects(t, mustAdmin(t, api))

	dir := t.TempDir()
	bins, err := vm.BuildStatic(t.Context(), dir,
		"github.com/clusterdns/clusterdns/cmd/clusterdns",
		"github.com/clusterdns/clusterdns/e2e/netns/podserver")
	if err != nil {
		t.Fatal(err)
	}
	guest, err := vm.BuildTest(t.Context(), dir, "e2e.test", "github.com/clusterdns/clusterdns/e2e")
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(api.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := json.Marshal(labVMConfig{API: kubeapi.Remote{
		Addr: vm.ForwardAddr, CAFile: labVMDir + "/ca.crt", ServerName: "127.0.0.1", Token: api.AdminToken(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Both agents program IPVS mode's iptables rules with the legacy
	// variant, as the host's lab does: kube-proxy runs whichever iptables
	// comes first in PATH, ours is told.
	script := fmt.Sprintf(`mkdir -p /tmp/iptables
for suffix in "" -save -restore; do
	ln -s /usr/sbin/iptables-%[1]s$suffix /tmp/iptables/iptables$suffix || exit 1
	ln -s /usr/sbin/ip6tables-%[1]s$suffix /tmp/iptables/ip6tables$suffix || exit 1
done
export PATH=/tmp/iptables:$PATH %[2]s=%[3]s/config.json
e2e.test -test.run '^TestProxyLabVMGuest$' -test.v -test.count 1 -test.timeout %[4]s
`, proxyIPTablesVariant, labVMEnv, labVMDir, labVMTimeout-time.Minute)
	out, err := assets.Run(t.Context(), vm.Spec{
		Binaries:  append(bins, guest, kubeProxy),
		Files:     map[string][]byte{labVMDir + "/config.json": cfg, labVMDir + "/ca.crt": ca},
		Script:    script,
		Forward:   strings.TrimPrefix(api.URL, "https://"),
		Timeout:   labVMTimeout,
		MemoryMiB: 2048,
		CPUs:      2,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s, boot to power-off %v", assets.Version, out.Elapsed.Round(time.Millisecond))
	for line := range strings.SplitSeq(out.Result, "\n") {
		if strings.Contains(line, "programmed both nodes within") {
			t.Log("guest:", strings.TrimSpace(line))
		}
	}
	results := parseGoTestResults(out.Result)
	for _, impl := range labVMImpls {
		t.Run(impl.name+"/"+impl.mode, func(t *testing.T) {
			for _, row := range labVMRows(impl) {
				t.Run(row.name, func(t *testing.T) {
					name := "TestProxyLabVMGuest/" + impl.name + "/" + impl.mode + "/" + row.name
					switch got := results[goTestName(name)]; got {
					case "PASS":
					case "":
						t.Errorf("the guest reported nothing for %s", name)
					default:
						t.Errorf("%s in the guest", got)
					}
				})
			}
		})
	}
	if out.ExitCode != 0 || t.Failed() {
		t.Errorf("the guest test exited with %d:\n%s", out.ExitCode, out.Result)
	}
}

// TestProxyLabVMGuest is the half of TestProxyLabIPVS that runs inside the
// VM; anywhere else it is skipped.
func TestProxyLabVMGuest(t *testing.T) {
	path := os.Getenv(labVMEnv)
	if path == "" {
		t.Skipf("runs inside the e2e VM only, started by TestProxyLabIPVS (%s unset)", labVMEnv)
	}
	netns.Require(t, "ipvsadm", "ipset", "iptables-restore")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg labVMConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	bin := "/usr/local/bin"
	env := labEnv{
		kubeProxy: filepath.Join(bin, "kube-proxy"), clusterdns: filepath.Join(bin, "clusterdns"), podServer: filepath.Join(bin, "podserver"),
		kubeconfig: func(t testing.TB, ns *netns.NS, dir string) string {
			return kubeapi.RelayKubeconfigTo(t, ns, dir, cfg.API)
		},
		patience: labVMPatience,
	}
	for _, impl := range labVMImpls {
		t.Run(impl.name+"/"+impl.mode, func(t *testing.T) {
			l := startLab(t, env, impl)
			l.waitFullSync(t, labVMPatience)
			t.Cleanup(func() {
				if t.Failed() {
					l.dumpRules(t)
				}
			})
			for _, row := range labVMRows(impl) {
				t.Run(row.name, func(t *testing.T) { row.check(t, l) })
			}
		})
	}
}

// waitFullSync waits, at most labPatience, until every node's agent has
// finished a full sync. startLab waits only until a cluster IP answers,
// which in IPVS mode is true early in a sync: the virtual servers come
// first and the iptables rules (masquerading, source ranges, drops) and
// the health check servers last, and under emulation kube-proxy's first
// sync takes tens of seconds. Both agents open the health check servers at
// the end of a sync, so an answer from one means the rules are in.
func (l *labRun) waitFullSync(t *testing.T, patience time.Duration) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for _, n := range l.lab.Nodes {
		addr := hostPort(n.IP.String(), 32003)
		for {
			conn, err := n.NS.Dial("tcp", addr, labExchange)
			if err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no health check server on %s after %s: %v", n.Name, addr, patience, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// dumpRules logs what the agents programmed on each node, for a failure.
func (l *labRun) dumpRules(t *testing.T) {
	for _, n := range l.lab.Nodes {
		for _, cmd := range [][]string{{"ipvsadm", "-Ln"}, {"iptables-save"}, {"ip", "-br", "addr"}} {
			out, err := n.NS.Run(context.Background(), cmd...)
			t.Logf("%s: %s (%v):\n%s", n.Name, strings.Join(cmd, " "), err, out)
		}
	}
}

// ipvsLocalFromInside is the IPVS variant of the row on pods and the node
// reaching an externalTrafficPolicy Local Service through its load balancer
// IP. A virtual server has one list of real servers whoever the client, so
// kube-proxy sends pods and the node to the node's own endpoints, and to
// every endpoint only where the node has none (pods keep their address).
//
// Left out: the node itself to 203.0.113.4 from node-b, which has no local
// endpoint. kube-proxy does not masquerade the node's traffic to such an
// address (it leaves from the load balancer IP), so the reply of node-a's
// pod goes to node-a's own copy of that address and the connection hangs;
// clusterdns masquerades it and is answered. Asserting kube-proxy's hang
// would make ours break a connection on purpose.
func (l *labRun) ipvsLocalFromInside(t *testing.T) {
	t.Helper()
	l.reach(t, l.pod(labB1), noSrc, "tcp", l.at("203.0.113.3", labHTTP), fromCluster, labB0)
	l.reach(t, l.pod(labA1), noSrc, "tcp", l.at("203.0.113.3", labHTTP), anyPeer, labA0, labA1)
	l.reach(t, l.pod(labB1), noSrc, "tcp", l.at("203.0.113.4", labHTTP), fromCluster, labA0)
	l.reach(t, l.node(1).NS, noSrc, "tcp", l.at("203.0.113.3", labHTTP), anyPeer, labB0)
	l.reach(t, l.node(0).NS, noSrc, "udp", l.at("203.0.113.3", labDNS), anyPeer, labA0, labA1)
}

// labVMRows are the rows impl runs in the VM's dual-stack lab. kube-proxy
// v1.37.2 runs the IPv4 ones only: in IPVS mode it leaves IPv6 traffic to
// an eTP-Cluster LB or external IP unmasqueraded (the pod sees the client's
// address, and a TCP connection from the client times out), so 6 of the
// IPv6 rows fail for it while the same rows pass for it in IPv4 and in its
// iptables and nftables modes. clusterdns proxy runs them all.
func labVMRows(impl labImpl) []labRow {
	if impl.name == "kube-proxy" {
		return labRows4
	}
	return labRows
}

// goTestResult matches the verdict lines of `go test -v` output.
var goTestResult = regexp.MustCompile(`(?m)^\s*--- (PASS|FAIL|SKIP): (\S+) \(`)

// parseGoTestResults reads the verdict of every test and subtest from
// `go test -v` output, by name as go test prints it.
func parseGoTestResults(out string) map[string]string {
	results := map[string]string{}
	for _, m := range goTestResult.FindAllStringSubmatch(out, -1) {
		results[m[2]] = m[1]
	}
	return results
}

// goTestName is a test's name as go test prints it: spaces become
// underscores.
func goTestName(name string) string { return strings.ReplaceAll(name, " ", "_") }

func TestParseGoTestResults(t *testing.T) {
	out := `=== RUN   TestProxyLabVMGuest
        --- PASS: TestProxyLabVMGuest/kube-proxy/ipvs/LoadBalancer:_the_node_reaches_the_LB_IP (0.02s)
            --- FAIL: TestProxyLabVMGuest/clusterdns/ipvs/eTP_Local:_dropped,_not_rejected (1.50s)
    proxy_lab_test.go:451: --- PASS: not a verdict (0.1s)
--- FAIL: TestProxyLabVMGuest (188.43s)
`
	got := parseGoTestResults(out)
	want := map[string]string{
		goTestName("TestProxyLabVMGuest/kube-proxy/ipvs/LoadBalancer: the node reaches the LB IP"): "PASS",
		goTestName("TestProxyLabVMGuest/clusterdns/ipvs/eTP Local: dropped, not rejected"):         "FAIL",
		"TestProxyLabVMGuest": "FAIL",
	}
	if len(got) != len(want) {
		t.Errorf("got %v, want %v", got, want)
	}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s: %q, want %q (all: %v)", name, got[name], v, got)
		}
	}
}
