package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/e2e/vm"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// The IPVS comparison runs each peer inside the e2e VM (the host kernel has
// no IPVS), which reaches the host's API server through its one forwarded
// port. cmd/ipvsnode, inside the VM, starts the peer, reads its metrics and
// ipvsadm, and writes the endpoint changes; the host only prepares the run
// and reads the figures from the console.
const (
	vmConfigDir = "/etc/bench"
	// ipvsGap separates endpoint changes like changeGap does.
	ipvsGap = 2 * time.Second
)

// ipvsPeers are the rule peers in IPVS mode, with the same sync periods
// (min 1s, full 30s) and the binaries at their names in the VM's PATH.
var ipvsPeers = []rulePeer{
	{
		name: PeerOurProxyIPVS,
		bin:  func(b binaries) string { return b.clusterdns },
		argv: func(bin, kubeconfig string) []string {
			return []string{bin, "proxy", "--kubeconfig", kubeconfig, "--hostname-override", nodeName,
				"--proxy-mode", "ipvs", "--cluster-cidr", PodCIDR,
				"--ipvs-min-sync-period", "1s", "--ipvs-sync-period", "30s",
				"--metrics-bind-address", metricsAddr, "--healthz-bind-address", healthzAddr,
				"--iptables-variant", *flagIPTables}
		},
		fullSync:   "clusterdns_proxy_sync_duration_seconds",
		lastSync:   "clusterdns_proxy_last_sync_success_timestamp_seconds",
		syncLabels: []string{`kind="full"`},
	},
	{
		name: PeerKubeProxyIPVS,
		bin:  func(b binaries) string { return b.kubeProxy },
		argv: func(bin, kubeconfig string) []string {
			return []string{bin, "--kubeconfig", kubeconfig, "--hostname-override", nodeName,
				"--proxy-mode", "ipvs", "--cluster-cidr", PodCIDR,
				"--ipvs-min-sync-period", "1s", "--ipvs-sync-period", "30s",
				"--metrics-bind-address", metricsAddr, "--healthz-bind-address", healthzAddr,
				"--conntrack-max-per-core", "0", "--v", "0"}
		},
		// In IPVS mode every kube-proxy sync is a full one, recorded in
		// the plain sync histogram.
		fullSync:   "kubeproxy_sync_proxy_rules_duration_seconds",
		lastSync:   "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
		syncLabels: []string{`ip_family="IPv4"`},
		lastLabels: []string{`ip_family="IPv4"`},
	},
}

// ipvsVM finds the VM build.sh prepared. Without it the IPVS part is left
// out, unless CLUSTERDNS_VM_REQUIRED=1, where that is a failure.
func ipvsVM(t *testing.T) (vm.Assets, bool) {
	t.Helper()
	a, err := vm.Locate()
	if err != nil {
		if os.Getenv("CLUSTERDNS_VM_REQUIRED") == "1" {
			t.Fatalf("the IPVS part needs the e2e VM: %v", err)
		}
		t.Logf("LEAVING OUT the IPVS part: %v (CLUSTERDNS_VM_REQUIRED=1 makes this a failure)", err)
		return vm.Assets{}, false
	}
	return a, true
}

// ipvsTimeouts bounds one peer run at a size: the first full sync, and each
// change, which may have to wait for a full sync to end first. Under
// emulation kube-proxy's syncs take tens of seconds at 50 Services and grow
// with the cluster.
func ipvsTimeouts(size int) (sync, change time.Duration) {
	return 5*time.Minute + time.Duration(size)*600*time.Millisecond, 2*time.Minute + time.Duration(size)*60*time.Millisecond
}

// runIPVS measures both peers in IPVS mode at one cluster size, alternating,
// each in a freshly booted VM.
func runIPVS(t *testing.T, ctx context.Context, e *env, size int) {
	e.res.Settings["ipvs"] = "one peer at a time, each in a freshly booted qemu VM (TCG: an emulated CPU, so only the ratio between peers means anything; " +
		"1 vCPU, Debian 12 cloud kernel " + e.vm.Version + ") reaching the host's API server through one forwarded port; " +
		"iptables-" + *flagIPTables + "; default sync periods (min 1s, full 30s); change time is API write to the end of the sync that applied it " +
		"(the peer's last-sync metric on the VM's clock, checked with ipvsadm -Ln); sizes " + joinInts(e.cfg.ipvsSizes)
	both := slices.DeleteFunc(slices.Clone(e.cfg.ipvsSizes), func(n int) bool { return slices.Contains(e.cfg.ipvsOursOnly, n) })
	if len(both) > 0 && *flagFull && slices.Max(both) < DefaultSpec().ClusterIP {
		e.res.Settings["ipvs"] += fmt.Sprintf("; both peers measured up to %d Services only: under emulation kube-proxy's first IPVS sync "+
			"grows with the cluster (its start-to-synced rows) and would take over an hour at %d, beyond the run's budget of about 20 minutes per peer",
			slices.Max(both), DefaultSpec().ClusterIP)
	}
	if len(e.cfg.ipvsOursOnly) > 0 {
		e.res.Settings["ipvs"] += "; at " + joinInts(e.cfg.ipvsOursOnly) + " Services clusterdns proxy ran alone, for its own growth"
	}
	for round := range e.cfg.rounds {
		order := slices.Clone(ipvsPeers)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		if slices.Contains(e.cfg.ipvsOursOnly, size) {
			order = slices.DeleteFunc(order, func(p rulePeer) bool { return p.name != PeerOurProxyIPVS })
		}
		for _, peer := range order {
			t.Run(fmt.Sprintf("%s-%d-%d", peer.name, size, round), func(t *testing.T) {
				e.measureIPVS(t, ctx, peer, size, round)
			})
			if t.Failed() {
				t.FailNow()
			}
		}
	}
}

// ipvsChange is one endpoint change as cmd/ipvsnode reads it.
type ipvsChange struct {
	Path    string          `json:"path"`
	Slice   json.RawMessage `json:"slice"`
	Service string          `json:"service"`
	Fresh   string          `json:"fresh"`
}

func (e *env) measureIPVS(t *testing.T, ctx context.Context, peer rulePeer, size, round int) {
	var changes []ipvsChange
	for k := range e.cfg.changes {
		index := (k*7919 + round*104729 + 1) % size
		e.changeSeq++
		slice, fresh := e.cfg.spec.ChangedSlice(index, e.changeSeq)
		body, err := json.Marshal(slice)
		if err != nil {
			t.Fatal(err)
		}
		changes = append(changes, ipvsChange{
			Path:    fmt.Sprintf("/apis/discovery.k8s.io/v1/namespaces/%s/endpointslices/%s", slice.Namespace, slice.Name),
			Slice:   body,
			Service: net.JoinHostPort(ClusterIP(index).String(), strconv.Itoa(ServicePort)),
			Fresh:   fresh.String(),
		})
	}
	files, err := e.vmFiles(changes)
	if err != nil {
		t.Fatal(err)
	}
	syncTimeout, changeTimeout := ipvsTimeouts(size)
	host := peer.bin(e.bins)
	argv := []string{"ipvsnode", "-ca", vmConfigDir + "/ca.crt", "-token-file", vmConfigDir + "/token",
		"-server", "https://" + vm.ForwardAddr, "-server-name", "127.0.0.1",
		"-changes", vmConfigDir + "/changes.json", "-gap", ipvsGap.String(),
		"-sync-timeout", syncTimeout.String(), "-change-timeout", changeTimeout.String(),
		"-min-virtual-servers", strconv.Itoa(size),
		"-full-sync", peer.fullSync, "-last-sync", peer.lastSync}
	for _, l := range peer.syncLabels {
		argv = append(argv, "-sync-label", l)
	}
	for _, l := range peer.lastLabels {
		argv = append(argv, "-last-label", l)
	}
	argv = append(argv, "--")
	argv = append(argv, peer.argv(filepath.Base(host), vmConfigDir+"/kubeconfig")...)
	// The node's address, on a link of its own: eth0 is the forward's. Both
	// peers program IPVS mode's iptables rules with the chosen variant:
	// kube-proxy runs whatever iptables is first in PATH.
	script := fmt.Sprintf(`ip link add node0 type dummy && ip addr add %s%s dev node0 && ip link set node0 up || exit 1
mkdir -p /tmp/iptables
for family in iptables ip6tables; do
	for suffix in "" -save -restore; do
		ln -s /usr/sbin/$family-%s$suffix /tmp/iptables/$family$suffix || exit 1
	done
done
PATH=/tmp/iptables:$PATH %s
`, nodeIP, nodeCIDR, *flagIPTables, shellJoin(argv))

	out, err := e.vm.Run(ctx, vm.Spec{
		Binaries:  []string{host, e.bins.ipvsNode},
		Files:     files,
		Script:    script,
		Forward:   strings.TrimPrefix(e.api.URL, "https://"),
		Timeout:   syncTimeout + time.Duration(len(changes))*(ipvsGap+changeTimeout) + 5*time.Minute,
		MemoryMiB: 2048,
	})
	logPath := filepath.Join(e.work, fmt.Sprintf("%s-%d-%d.log", peer.name, size, round))
	_ = os.WriteFile(logPath, []byte(out.Console), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s at %d Services, VM boot to power-off %s:\n%s", peer.name, size, out.Elapsed.Round(time.Millisecond), out.Result)
	if out.ExitCode != 0 {
		t.Fatalf("%s in the VM exited with %d", peer.name, out.ExitCode)
	}
	got, err := parseIPVSResults(out.Result)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range got {
		e.res.Add(peer.name, s.Metric, size, round, s.Value)
	}
	if n := len(e.res.Values(peer.name, MetricChange, size)); n < (round+1)*len(changes) {
		t.Fatalf("%s: %d changes timed, want %d", peer.name, n, (round+1)*len(changes))
	}
}

// vmFiles are the files of one VM run: the API server's CA and token, a
// kubeconfig naming the forward, and the changes.
func (e *env) vmFiles(changes []ipvsChange) (map[string][]byte, error) {
	ca, err := os.ReadFile(e.api.CAFile)
	if err != nil {
		return nil, fmt.Errorf("API CA: %w", err)
	}
	cfg := clientcmdapi.NewConfig()
	// The guest dials the forward's address; the certificate is for
	// 127.0.0.1, where the API server really is.
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: "https://" + vm.ForwardAddr,
		CertificateAuthority: vmConfigDir + "/ca.crt", TLSServerName: "127.0.0.1"}
	cfg.AuthInfos["e2e"] = &clientcmdapi.AuthInfo{Token: e.api.AdminToken()}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "e2e"}
	cfg.CurrentContext = "e2e"
	kubeconfig, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	changesJSON, err := json.Marshal(changes)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		vmConfigDir + "/ca.crt":       ca,
		vmConfigDir + "/token":        []byte(e.api.AdminToken()),
		vmConfigDir + "/kubeconfig":   kubeconfig,
		vmConfigDir + "/changes.json": changesJSON,
	}, nil
}

// ipvsMetrics are the figures cmd/ipvsnode reports, by the names it uses.
var ipvsMetrics = []string{MetricSynced, MetricFullSync, MetricChange, MetricVirtualServers, MetricRealServers}

// parseIPVSResults reads the "RESULT <metric> <value>" lines of a run.
func parseIPVSResults(output string) ([]Sample, error) {
	var out []Sample
	for line := range strings.SplitSeq(output, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "RESULT" {
			continue
		}
		if !slices.Contains(ipvsMetrics, f[1]) {
			return nil, fmt.Errorf("unknown metric in %q", line)
		}
		v, err := strconv.ParseFloat(f[2], 64)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", line, err)
		}
		out = append(out, Sample{Metric: f[1], Value: v})
	}
	for _, m := range ipvsMetrics {
		if !slices.ContainsFunc(out, func(s Sample) bool { return s.Metric == m }) && m != MetricChange {
			return nil, fmt.Errorf("no %s in the run's output", m)
		}
	}
	return out, nil
}

// shellJoin quotes each word for sh.
func shellJoin(words []string) string {
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
	}
	return strings.Join(quoted, " ")
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

func TestParseIPVSResults(t *testing.T) {
	got, err := parseIPVSResults("boot noise\nRESULT start_to_synced_s 1.5\nRESULT full_sync_s 0.25\n" +
		"RESULT ipvs_virtual_servers 51\nRESULT ipvs_real_servers 251\nchange 0 applied\nRESULT change_ms 12.5\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []Sample{{Metric: MetricSynced, Value: 1.5}, {Metric: MetricFullSync, Value: 0.25},
		{Metric: MetricVirtualServers, Value: 51}, {Metric: MetricRealServers, Value: 251}, {Metric: MetricChange, Value: 12.5}}
	if !slices.Equal(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"RESULT full_sync_s 1\n", "RESULT bogus 1\n" + "RESULT start_to_synced_s x\n"} {
		if _, err := parseIPVSResults(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
