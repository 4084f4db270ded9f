package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/e2e/netns"
)

// proxyIPTablesVariant is the iptables flavour the e2e tests program, chosen
// rather than left to the alternatives system. Debian 12 ships iptables 1.8.9
// with both; both work inside a namespace here. Legacy is used because its
// restores of a whole table are fast (about 1 s for 1,000 services × 5
// endpoints), while iptables-nft 1.8.9's restore time grows quadratically
// with the number of chains (about 10 s for the same input); nft's partial
// restores are cheaper, see BenchmarkProxyIPTablesApply.
const proxyIPTablesVariant = "legacy"

// The example cluster's pods (deploy/examples/pods.yaml) and Services.
var proxyPodIPs = []string{"172.16.79.83", "172.16.69.206", "172.16.69.207"}

const (
	proxyClusterIP = "10.10.97.97:80"   // dev/service-clusterip
	proxyNodePort  = 30002              // dev/service-nodeport
	proxySticky    = "10.10.97.99:80"   // dev/sticky, ClientIP affinity (test's own)
	proxyDNS       = "10.10.53.53:53"   // dev/dns, UDP to port 5353 (test's own)
	proxyNobody    = "10.10.0.99:80"    // dev/nobody, no endpoints (test's own)
	proxyNodeIP    = "192.168.77.1"     // the node, on the client link
	proxyClientIP  = "192.168.77.2"     // the outside client
	proxyHealthz   = "127.0.0.1:10256"  // inside the node namespace
	proxyMetrics   = "127.0.0.1:10249"  // inside the node namespace
	proxyCIDR      = "172.16.0.0/16"    // the pods' range
	proxyPodLabels = "{app: nginx-pod}" // the example Services' selector
	proxyAttempts  = 120                // bound on every "until all seen" loop
	proxyTimeout   = 2 * time.Second    // bound on every single exchange
	proxyUnready   = 2 * time.Second    // an unready pod must leave rotation this fast
	proxyPatience  = 10 * time.Second   // bound on waiting for the agent to come up
	proxyManifest  = "proxy-extra.yaml" // the test's own Services
	proxyPodsFile  = "pods.yaml"        // rewritten to change readiness
	proxyBinPodSrv = "podserver"        // the pods' workload
	proxyUDPTarget = "5353"             // where the pods answer UDP
	proxyTCPTarget = ":80"              // where the pods answer TCP
	proxyUDPListen = ":" + proxyUDPTarget
)

const proxyExtraServices = `# Services the proxy e2e test adds to the example cluster.
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: dev}
spec:
  clusterIP: 10.10.97.99
  selector: ` + proxyPodLabels + `
  sessionAffinity: ClientIP
  ports: [{name: http, port: 80, targetPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: dev}
spec:
  clusterIP: 10.10.53.53
  selector: ` + proxyPodLabels + `
  ports: [{name: dns, protocol: UDP, port: 53, targetPort: ` + proxyUDPTarget + `}]
---
apiVersion: v1
kind: Service
metadata: {name: nobody, namespace: dev}
spec:
  clusterIP: 10.10.0.99
  selector: {app: nobody}
  ports: [{name: http, port: 80, targetPort: 80}]
`

// proxyPods renders the example pods with the given readiness.
func proxyPods(unready ...string) string {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: List\nitems:\n")
	for i, ip := range proxyPodIPs {
		ready := "True"
		if slices.Contains(unready, ip) {
			ready = "False"
		}
		fmt.Fprintf(&b, `- apiVersion: v1
  kind: Pod
  metadata: {name: nginx-%d, namespace: dev, labels: %s}
  spec:
    containers: [{name: nginx, image: nginx, ports: [{name: http, containerPort: 80}]}]
  status:
    podIP: %s
    podIPs: [{ip: %s}]
    conditions: [{type: Ready, status: "%s"}]
`, i, proxyPodLabels, ip, ip, ready)
	}
	return b.String()
}

var podServerBuild struct {
	sync.Once
	path string
	err  error
}

func podServerBinary(t testing.TB) string {
	t.Helper()
	podServerBuild.Do(func() {
		dir, err := os.MkdirTemp("", "clusterdns-e2e-podserver-")
		if err != nil {
			podServerBuild.err = err
			return
		}
		podServerBuild.path = filepath.Join(dir, proxyBinPodSrv)
		cmd := exec.Command("go", "build", "-o", podServerBuild.path, "./e2e/netns/podserver")
		cmd.Dir = repoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			podServerBuild.err = fmt.Errorf("go build podserver: %v\n%s", err, out)
		}
	})
	if podServerBuild.err != nil {
		t.Fatal(podServerBuild.err)
	}
	return podServerBuild.path
}

// proxyFixture is a node running the agent, its pods and an outside client.
type proxyFixture struct {
	mode      string // iptables or nftables
	topo      *netns.Topology
	bin       string
	manifests string
	agent     *netns.Process
}

// iptables names a tool of the chosen variant: iptables-save becomes
// iptables-nft-save.
func (f *proxyFixture) iptables(tool string) string {
	base, suffix, _ := strings.Cut(tool, "-")
	return base + "-" + proxyIPTablesVariant + "-" + suffix
}

// setPods rewrites the pods file atomically, as a ConfigMap update would.
func (f *proxyFixture) setPods(t testing.TB, unready ...string) {
	t.Helper()
	tmp := filepath.Join(f.manifests, ".pods.tmp")
	if err := os.WriteFile(tmp, []byte(proxyPods(unready...)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(f.manifests, proxyPodsFile)); err != nil {
		t.Fatal(err)
	}
}

func newProxyFixture(t *testing.T, mode string) *proxyFixture {
	netns.Require(t, "iptables-"+proxyIPTablesVariant+"-restore", "ip6tables-"+proxyIPTablesVariant+"-restore", "nft")
	f := &proxyFixture{mode: mode, bin: clusterdnsBinary(t), manifests: t.TempDir()}
	podServer := podServerBinary(t)
	for _, name := range []string{"namespace.yaml", "services.yaml"} {
		data, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "examples", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(f.manifests, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(f.manifests, proxyManifest), []byte(proxyExtraServices), 0o644); err != nil {
		t.Fatal(err)
	}
	f.setPods(t)

	f.topo = netns.NewTopology(t, netns.TopologySpec{PodIPs: proxyPodIPs, NodeIP: proxyNodeIP, ClientIP: proxyClientIP})
	for i, pod := range f.topo.Pods {
		pod.Start(podServer, "-name", proxyPodIPs[i], "-tcp", proxyTCPTarget, "-udp", proxyUDPListen, "-lifetime", "10m")
	}
	f.agent = f.topo.Node.Start(f.bin, "proxy", "--proxy-mode", mode, "--manifests", f.manifests, "--cluster-cidr", proxyCIDR,
		"--healthz-bind-address", proxyHealthz, "--metrics-bind-address", proxyMetrics,
		"--iptables-variant", proxyIPTablesVariant, "-v", "4")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent output:\n%s", f.agent.Output())
		}
	})
	// lastUpdated in /healthz means the first sync went through (an
	// agent that is starting is healthy too, as kube-proxy is).
	deadline := time.Now().Add(proxyPatience)
	for {
		code, body, err := f.get(proxyHealthz, "/healthz")
		if err == nil && code == http.StatusOK && strings.Contains(body, "lastUpdated") {
			break
		}
		if exited, exitErr := f.agent.Exited(); exited {
			t.Fatalf("agent exited: %v\n%s", exitErr, f.agent.Output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent not healthy after %s (last: %d %v)\n%s", proxyPatience, code, err, f.agent.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return f
}

// get fetches a URL path from an address inside the node namespace.
func (f *proxyFixture) get(addr, path string) (int, string, error) {
	client := &http.Client{
		Timeout: proxyTimeout,
		Transport: &http.Transport{DialContext: func(_ context.Context, network, address string) (net.Conn, error) {
			return f.topo.Node.Dial(network, address, proxyTimeout)
		}},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body), err
}

// whoami connects from ns to addr and returns the pod's answer.
func whoami(ns *netns.NS, addr string) (string, error) {
	conn, err := ns.Dial("tcp", addr, proxyTimeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(proxyTimeout))
	line, err := bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSpace(line), err
}

// waitReachAll waits, up to proxyPatience, until every wanted pod answers
// (after a readiness edit the agent may still be inside its minimum sync
// period).
func waitReachAll(t *testing.T, ns *netns.NS, addr string, want []string) {
	t.Helper()
	deadline := time.Now().Add(proxyPatience)
	for {
		seen := map[string]bool{}
		for i := 0; i < proxyAttempts && len(seen) < len(want); i++ {
			if who, err := whoami(ns, addr); err == nil {
				seen[who] = true
			}
		}
		if len(seen) == len(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: after %s only %v answer, want %v", addr, proxyPatience, seen, want)
		}
	}
}

// reachAll connects until every wanted pod answered, failing on an answer
// from anyone else or when the attempts run out.
func reachAll(t *testing.T, ns *netns.NS, addr string, want []string) {
	t.Helper()
	seen := map[string]int{}
	for i := 0; i < proxyAttempts && len(seen) < len(want); i++ {
		who, err := whoami(ns, addr)
		if err != nil {
			t.Fatalf("connect %s from %s: %v", addr, ns.Name, err)
		}
		if !slices.Contains(want, who) {
			t.Fatalf("%s answered from %q, want one of %v", addr, who, want)
		}
		seen[who]++
	}
	if len(seen) < len(want) {
		t.Fatalf("after %d connections to %s only %v answered, want all of %v", proxyAttempts, addr, seen, want)
	}
}

func TestProxyIPTables(t *testing.T) { testProxyMode(t, "iptables") }

func TestProxyNFTables(t *testing.T) { testProxyMode(t, "nftables") }

// testProxyMode sends real traffic through the rules one mode programs.
func testProxyMode(t *testing.T, mode string) {
	f := newProxyFixture(t, mode)
	node, client := f.topo.Node, f.topo.Client
	pod0, pod1 := f.topo.Pods[0], f.topo.Pods[1]

	t.Run("node to cluster IP reaches every ready pod", func(t *testing.T) {
		reachAll(t, node, proxyClusterIP, proxyPodIPs)
	})
	t.Run("pod to cluster IP reaches every ready pod", func(t *testing.T) {
		reachAll(t, pod1, proxyClusterIP, proxyPodIPs)
	})
	t.Run("pod reaches itself through its service", func(t *testing.T) {
		// Without hairpin masquerading the pod would answer itself directly
		// and the connection would never complete.
		for i := 0; i < proxyAttempts; i++ {
			who, err := whoami(pod0, proxyClusterIP)
			if err != nil {
				t.Fatalf("attempt %d: %v", i, err)
			}
			if who == proxyPodIPs[0] {
				return
			}
		}
		t.Fatalf("%s never reached itself through %s in %d connections", proxyPodIPs[0], proxyClusterIP, proxyAttempts)
	})
	t.Run("outside client reaches a node port", func(t *testing.T) {
		reachAll(t, client, fmt.Sprintf("%s:%d", proxyNodeIP, proxyNodePort), proxyPodIPs)
	})
	t.Run("ClientIP affinity keeps a client on one pod", func(t *testing.T) {
		for _, ns := range []*netns.NS{node, pod1} {
			first := ""
			for i := 0; i < 30; i++ {
				who, err := whoami(ns, proxySticky)
				if err != nil {
					t.Fatal(err)
				}
				if first == "" {
					first = who
				} else if who != first {
					t.Fatalf("from %s: connection %d went to %s, the first to %s", ns.Name, i, who, first)
				}
			}
		}
	})
	t.Run("service without endpoints is refused at once", func(t *testing.T) {
		// Without the REJECT rule the SYN would leave through the node's
		// default route and the dial would time out. From a pod the refusal
		// may come with the first retransmission (one second): on a veth the
		// ICMP error arrives while connect() still holds the socket, and
		// the kernel keeps it as a soft error until the next one.
		for _, ns := range []*netns.NS{node, pod1} {
			start := time.Now()
			_, err := ns.Dial("tcp", proxyNobody, proxyTimeout)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("from %s: dial %s: %v, want connection refused", ns.Name, proxyNobody, err)
			}
			t.Logf("from %s: refused after %s", ns.Name, time.Since(start).Round(time.Microsecond))
		}
	})
	t.Run("UDP through a cluster IP survives an endpoint change", func(t *testing.T) {
		conn, err := node.ListenUDP("0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ask := func() (string, error) {
			dst, _ := net.ResolveUDPAddr("udp", proxyDNS)
			if _, err := conn.WriteTo([]byte("who?"), dst); err != nil {
				return "", err
			}
			_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			buf := make([]byte, 64)
			n, _, err := conn.ReadFrom(buf)
			return strings.TrimSpace(string(buf[:n])), err
		}
		first, err := ask()
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			if who, err := ask(); err != nil || who != first {
				t.Fatalf("the same UDP flow moved from %s to %q (%v)", first, who, err)
			}
		}
		f.setPods(t, first)
		defer f.setPods(t)
		deadline := time.Now().Add(3 * proxyUnready)
		for {
			who, err := ask()
			if err == nil && who != first {
				if !slices.Contains(proxyPodIPs, who) {
					t.Fatalf("answer from %q", who)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the UDP flow still goes to %s (last %q, %v): its conntrack entry was not deleted", first, who, err)
			}
		}
		for i := 0; i < 10; i++ {
			if who, err := ask(); err != nil || who == first {
				t.Fatalf("after the change the flow answered %q (%v)", who, err)
			}
		}
	})
	t.Run("unready pod leaves rotation within 2s", func(t *testing.T) {
		gone := proxyPodIPs[2]
		waitReachAll(t, node, proxyClusterIP, proxyPodIPs) // the previous edit is undone
		start := time.Now()
		f.setPods(t, gone)
		defer f.setPods(t)
		// The pod is out once 30 connections in a row miss it; by chance that
		// happens with probability (2/3)^30, under one in 100,000.
		for {
			hits := 0
			for i := 0; i < 30 && hits == 0; i++ {
				who, err := whoami(node, proxyClusterIP)
				if err != nil {
					t.Fatal(err)
				}
				if who == gone {
					hits++
				}
			}
			if hits == 0 {
				break
			}
			if time.Since(start) > proxyUnready {
				t.Fatalf("%s still answers %s after %s", gone, proxyClusterIP, proxyUnready)
			}
		}
		t.Logf("unready pod out of rotation after at most %s", time.Since(start).Round(time.Millisecond))
		reachAll(t, node, proxyClusterIP, []string{proxyPodIPs[0], proxyPodIPs[1]})
	})
	t.Run("healthz and metrics", func(t *testing.T) {
		code, body, err := f.get(proxyHealthz, "/healthz")
		if err != nil || code != http.StatusOK || !strings.Contains(body, "lastUpdated") {
			t.Errorf("/healthz: %d %q %v", code, body, err)
		}
		code, body, err = f.get(proxyMetrics, "/metrics")
		if err != nil || code != http.StatusOK {
			t.Fatalf("/metrics: %d %v", code, err)
		}
		for _, want := range []string{"clusterdns_proxy_sync_duration_seconds_bucket", "clusterdns_proxy_last_sync_success_timestamp_seconds", "clusterdns_proxy_rules "} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
	t.Run("cleanup leaves no rule behind", func(t *testing.T) {
		if err := f.agent.Stop(); err != nil {
			t.Fatalf("agent did not stop cleanly: %v\n%s", err, f.agent.Output())
		}
		programmed := func() string {
			return node.MustRun(f.iptables("iptables-save")) + node.MustRun(f.iptables("ip6tables-save")) + node.MustRun("nft", "list", "tables")
		}
		mark := map[string]string{"iptables": "CDNS-", "nftables": "table ip clusterdns"}[f.mode]
		if before := programmed(); !strings.Contains(before, mark) {
			t.Fatalf("no %q before cleanup:\n%s", mark, before)
		}
		node.MustRun(f.bin, "proxy", "--cleanup", "--iptables-variant", proxyIPTablesVariant)
		if out := programmed(); strings.Contains(out, "CDNS") || strings.Contains(out, "clusterdns") {
			t.Errorf("left after cleanup:\n%s", out)
		}
		// Cleaning clean tables is fine too.
		node.MustRun(f.bin, "proxy", "--cleanup", "--iptables-variant", proxyIPTablesVariant)
	})
}

func TestProxyDryRunChangesNothing(t *testing.T) {
	netns.Require(t, "iptables-"+proxyIPTablesVariant+"-save")
	bin := clusterdnsBinary(t)
	ns := netns.New(t, "cdns-dry-")
	save := func() string {
		return ns.MustRun("iptables-"+proxyIPTablesVariant+"-save") + ns.MustRun("ip6tables-"+proxyIPTablesVariant+"-save")
	}
	before := save()
	out := ns.MustRun(bin, "proxy", "--dry-run", "--manifests", filepath.Join(repoRoot(), "deploy", "examples"),
		"--iptables-variant", proxyIPTablesVariant)
	for _, want := range []string{"*nat", "-j DNAT --to-destination 172.16.79.83:80", "--dport 30002"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run output lacks %q:\n%s", want, out)
		}
	}
	if after := save(); after != before || strings.Contains(after, "CDNS") {
		t.Errorf("dry run changed the tables:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
