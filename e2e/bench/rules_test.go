package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/e2e/internal/promtext"
	"github.com/clusterdns/clusterdns/e2e/netns"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The node both rule peers play, inside their own namespaces.
const (
	nodeName     = "bench-node"
	nodeIP       = "192.168.77.1"
	nodeCIDR     = "/24"
	metricsAddr  = "127.0.0.1:10249" // inside the peer's namespace
	healthzAddr  = "127.0.0.1:10256" // inside the peer's namespace
	pollInterval = 20 * time.Millisecond
	// changeGap separates endpoint changes by more than both peers'
	// minimum sync period (1s), so each is applied on its own.
	changeGap = 2 * time.Second
	// At 50,000 Services a loaded machine takes minutes to start, sync
	// and list the table.
	syncTimeout   = 30 * time.Minute
	changeTimeout = 2 * time.Minute
)

// Rule modes: the backend both rule peers are run with.
const (
	modeIPTables = "iptables"
	modeNFTables = "nftables"
)

// rulePeer is a node agent under test and how to read its sync metrics.
type rulePeer struct {
	// name is the peer in the results; base the agent without its mode,
	// as -rule-peers names it.
	name, base string
	argv       func(bin, kubeconfig string) []string
	bin        func(b binaries) string
	// fullSync is the histogram of full syncs; lastSync the gauge with the
	// end of the last successful sync, as a Unix time.
	fullSync, lastSync string
	// syncLabels select the full syncs' series, lastLabels the gauge's.
	syncLabels, lastLabels []string
	// nftTable is the peer's own IPv4 table in nftables mode.
	nftTable string
}

// rulePeersFor returns the two rule peers in a mode: iptables with the
// default sync periods, nftables with the same periods (min 1s, full 30s)
// given explicitly, since both agents take them from the iptables flags.
func rulePeersFor(mode string) []rulePeer {
	ours := rulePeer{
		name: PeerOurProxy,
		base: PeerOurProxy,
		bin:  func(b binaries) string { return b.clusterdns },
		argv: func(bin, kubeconfig string) []string {
			return []string{bin, "proxy", "--kubeconfig", kubeconfig, "--hostname-override", nodeName,
				"--proxy-mode", "iptables", "--cluster-cidr", PodCIDR,
				"--metrics-bind-address", metricsAddr, "--healthz-bind-address", healthzAddr,
				"--iptables-variant", *flagIPTables, "-v", "4"}
		},
		fullSync:   "clusterdns_proxy_sync_duration_seconds",
		lastSync:   "clusterdns_proxy_last_sync_success_timestamp_seconds",
		syncLabels: []string{`kind="full"`},
	}
	theirs := rulePeer{
		name: PeerKubeProxy,
		base: PeerKubeProxy,
		bin:  func(b binaries) string { return b.kubeProxy },
		argv: func(bin, kubeconfig string) []string {
			return []string{bin, "--kubeconfig", kubeconfig, "--hostname-override", nodeName,
				"--proxy-mode", "iptables", "--cluster-cidr", PodCIDR,
				"--metrics-bind-address", metricsAddr, "--healthz-bind-address", healthzAddr,
				// It may not change the conntrack table size: that sysctl
				// is global, not per namespace.
				"--conntrack-max-per-core", "0", "--v", "0"}
		},
		fullSync:   "kubeproxy_sync_full_proxy_rules_duration_seconds",
		lastSync:   "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
		syncLabels: []string{`ip_family="IPv4"`},
		lastLabels: []string{`ip_family="IPv4"`},
	}
	if mode == modeIPTables {
		return []rulePeer{ours, theirs}
	}
	periods := []string{"--iptables-min-sync-period", "1s", "--iptables-sync-period", "30s"}
	ours.name, ours.nftTable = PeerOurProxyNFT, "clusterdns"
	ours.argv = func(bin, kubeconfig string) []string {
		return append([]string{bin, "proxy", "--kubeconfig", kubeconfig, "--hostname-override", nodeName,
			"--proxy-mode", "nftables", "--cluster-cidr", PodCIDR,
			"--metrics-bind-address", metricsAddr, "--healthz-bind-address", healthzAddr, "-v", "4"}, periods...)
	}
	theirs.name, theirs.nftTable = PeerKubeProxyNFT, "kube-proxy"
	theirs.argv = func(bin, kubeconfig string) []string {
		return append([]string{bin, "--kubeconfig", kubeconfig, "--hostname-override", nodeName,
			"--proxy-mode", "nftables", "--cluster-cidr", PodCIDR,
			"--metrics-bind-address", metricsAddr, "--healthz-bind-address", healthzAddr,
			"--conntrack-max-per-core", "0", "--v", "0"}, periods...)
	}
	return []rulePeer{ours, theirs}
}

// createNode registers the Node the peers run as, with its address.
func createNode(t *testing.T, ctx context.Context, c kubernetes.Interface) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{"kubernetes.io/hostname": nodeName}}}
	created, err := c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return
	}
	if err != nil {
		t.Fatalf("create node: %v", err)
	}
	created.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP}, {Type: corev1.NodeHostName, Address: nodeName}}
	if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("node status: %v", err)
	}
}

// runRules measures the rule peers in one mode at one cluster size,
// alternating.
func runRules(t *testing.T, ctx context.Context, e *env, mode string, size int) {
	if mode == modeIPTables {
		e.res.Settings["rules"] = "one peer at a time, pinned to core " + strconv.Itoa(peerCPU) + ", iptables-" + *flagIPTables +
			", in a network namespace of its own reaching the API server through a loopback relay; default sync periods (min 1s, full 30s); " +
			"change time is API write to the end of the sync that applied it (the peer's last-sync metric, checked with iptables-save)"
	} else {
		e.res.Settings["rules, nftables mode"] = "one peer at a time, pinned to core " + strconv.Itoa(peerCPU) +
			", in a network namespace of its own reaching the API server through a loopback relay; sync periods min 1s, full 30s; " +
			"change time is API write to the end of the sync that applied it (the peer's last-sync metric, checked with nft -j list table: " +
			"the new address in a dnat rule or map)"
	}
	folder := ""
	if *flagRulesSource == "manifests" {
		folder = filepath.Join(e.work, fmt.Sprintf("manifests-%d", size))
		began := time.Now()
		if err := e.cfg.spec.Scaled(size).Objects(Spec{}).WriteManifestsSlicesApart(folder); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote the %d-Service folder in %s", size, time.Since(began).Round(time.Millisecond))
		e.res.Settings["rules source"] = "clusterdns proxy alone, reading a watched folder (Services in a file per namespace, " +
			"each EndpointSlice in a small file of its own); a change rewrites one slice file (write then rename) and is timed from " +
			"the rename to the end of the sync that applied it"
	}
	var peers []rulePeer
	for _, p := range rulePeersFor(mode) {
		if (folder != "" || *flagKubeProxyMax > 0 && size > *flagKubeProxyMax) && p.base != PeerOurProxy {
			continue
		}
		if slices.Contains(e.cfg.rulePeers, p.base) {
			peers = append(peers, p)
		}
	}
	for round := range e.cfg.rounds {
		order := slices.Clone(peers)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, peer := range order {
			t.Run(fmt.Sprintf("%s-%d-%d", peer.name, size, round), func(t *testing.T) {
				e.measureRules(t, ctx, peer, size, round, folder)
			})
			if t.Failed() {
				t.FailNow()
			}
		}
	}
}

// measureRules runs one peer at one size: from the API, or from the folder
// when one is given.
func (e *env) measureRules(t *testing.T, ctx context.Context, peer rulePeer, size, round int, folder string) {
	ns := netns.New(t, "cdns-bench-")
	// The node's address, on a veth pair whose both ends stay inside the
	// namespace (the dummy link type may be missing from the kernel).
	ns.MustRun("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
	ns.MustRun("ip", "addr", "add", nodeIP+nodeCIDR, "dev", "eth0")
	ns.MustRun("ip", "link", "set", "eth0", "up")
	ns.MustRun("ip", "link", "set", "eth0-peer", "up")
	kubeconfig := e.api.RelayKubeconfig(t, ns, e.work)

	// kube-proxy runs whatever iptables is first in PATH: put the
	// variant's tools there under the plain names.
	peerArgv := peer.argv(peer.bin(e.bins), kubeconfig)
	if folder != "" {
		i := slices.Index(peerArgv, "--kubeconfig")
		peerArgv[i], peerArgv[i+1] = "--manifests", folder
	}
	argv := append([]string{"ip", "netns", "exec", ns.Name, "env", "PATH=" + e.iptablesPath(t) + ":" + os.Getenv("PATH"),
		"taskset", "-c", strconv.Itoa(peerCPU)}, peerArgv...)
	p, err := Start(peer.name, filepath.Join(e.work, fmt.Sprintf("%s-%d-%d.log", peer.name, size, round)), argv...)
	if err != nil {
		t.Fatal(err)
	}
	// Stopped before the namespace goes (cleanups run last first).
	t.Cleanup(func() { p.Stop(5 * time.Second) })
	client := HTTPGetter(func(_ context.Context, network, address string) (net.Conn, error) {
		return ns.Dial(network, address, 2*time.Second)
	})
	defer client.CloseIdleConnections()
	metrics := func() (string, error) {
		code, body, err := Get(ctx, client, "http://"+metricsAddr+"/metrics")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("metrics: status %d", code)
		}
		return string(body), err
	}

	// The first full sync.
	deadline := time.Now().Add(syncTimeout)
	var body string
	for {
		body, err = metrics()
		if err == nil {
			// Both metrics: a sync's duration is recorded before its end
			// time.
			n, _ := promtext.Value(body, peer.fullSync+"_count", peer.syncLabels...)
			if last, _ := promtext.Value(body, peer.lastSync, peer.lastLabels...); n >= 1 && last > 0 {
				break
			}
		}
		if p.Exited() {
			t.Fatalf("%s exited:\n%s", peer.name, p.LogTail())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no full sync within %s (last: %v):\n%s", peer.name, syncTimeout, err, p.LogTail())
		}
		time.Sleep(pollInterval)
	}
	last, _ := promtext.Value(body, peer.lastSync, peer.lastLabels...)
	sum, _ := promtext.Value(body, peer.fullSync+"_sum", peer.syncLabels...)
	count, _ := promtext.Value(body, peer.fullSync+"_count", peer.syncLabels...)
	synced := unixTime(last).Sub(p.Started)
	e.res.Add(peer.name, MetricSynced, size, round, synced.Seconds())
	e.res.Add(peer.name, MetricFullSync, size, round, sum/count)
	var rules int
	if peer.nftTable == "" {
		rules = countRules(t, ns)
	} else {
		c := countNFT(t, ns, peer.nftTable)
		rules = c.Rules + c.Elements
		e.res.Add(peer.name, MetricNFTElements, size, round, float64(c.Elements))
		e.res.Add(peer.name, MetricNFTChains, size, round, float64(c.Chains))
	}
	e.res.Add(peer.name, MetricRules, size, round, float64(rules))
	rss, err := p.RSS()
	if err != nil {
		t.Fatal(err)
	}
	e.res.Add(peer.name, MetricRSS, size, round, float64(rss)/(1<<20))
	t.Logf("%s at %d Services: first full sync done %s after start, %.3fs per full sync (%v), %d rules, RSS %.1f MiB",
		peer.name, size, synced.Round(time.Millisecond), sum/count, count, rules, float64(rss)/(1<<20))
	if rules < size {
		t.Fatalf("%s programmed %d rules for %d Services:\n%s", peer.name, rules, size, p.LogTail())
	}

	// Endpoint changes, one at a time.
	for k := range e.cfg.changes {
		time.Sleep(changeGap)
		index := (k*7919 + round*104729 + 1) % size
		e.changeSeq++
		slice, fresh := e.cfg.spec.ChangedSlice(index, e.changeSeq)
		began := time.Now()
		if folder != "" {
			if err := WriteSliceFile(folder, slice); err != nil {
				t.Fatal(err)
			}
		} else if _, err := e.admin.DiscoveryV1().EndpointSlices(slice.Namespace).Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("update %s/%s: %v", slice.Namespace, slice.Name, err)
		}
		applied, err := waitApplied(ctx, ns, p, metrics, peer, began, fresh.String())
		if err != nil {
			t.Fatal(err)
		}
		took := applied.Sub(began)
		e.res.Add(peer.name, MetricChange, size, round, ms(took))
		t.Logf("%s at %d Services: change %d applied after %s", peer.name, size, k, took.Round(100*time.Microsecond))
	}
	p.Stop(5 * time.Second)
}

// waitApplied waits until a sync that ended after began has programmed the
// new address, and returns when that sync ended.
func waitApplied(ctx context.Context, ns *netns.NS, p *Process, metrics func() (string, error), peer rulePeer, began time.Time, fresh string) (time.Time, error) {
	deadline := time.Now().Add(changeTimeout)
	checked := 0.0
	for {
		body, err := metrics()
		if err == nil {
			last, _ := promtext.Value(body, peer.lastSync, peer.lastLabels...)
			if end := unixTime(last); end.After(began) && last != checked {
				checked = last
				programmed, err := isProgrammed(ctx, ns, peer, fresh)
				if err != nil {
					return time.Time{}, err
				}
				if programmed {
					return end, nil
				}
			}
		}
		if p.Exited() {
			return time.Time{}, fmt.Errorf("%s exited:\n%s", peer.name, p.LogTail())
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s: %s not programmed within %s (last sync checked %s, error %v):\n%s",
				peer.name, fresh, changeTimeout, unixTime(checked).Format(time.RFC3339Nano), err, p.LogTail())
		}
		time.Sleep(pollInterval)
	}
}

// isProgrammed reports whether the peer's rules send traffic to addr now.
func isProgrammed(ctx context.Context, ns *netns.NS, peer rulePeer, addr string) (bool, error) {
	if peer.nftTable != "" {
		out, err := listNFT(ctx, ns, peer.nftTable)
		if err != nil {
			return false, err
		}
		return NFTDNATs(out, addr)
	}
	out, err := ns.Run(ctx, "iptables-"+*flagIPTables+"-save", "-t", "nat")
	if err != nil {
		return false, fmt.Errorf("iptables-save: %v\n%s", err, out)
	}
	return strings.Contains(string(out), "--to-destination "+addr+":"), nil
}

func unixTime(sec float64) time.Time {
	return time.Unix(0, int64(sec*float64(time.Second)))
}

// iptablesPath returns a folder where iptables, iptables-save, ... are the
// chosen variant's tools.
func (e *env) iptablesPath(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(e.work, "iptables-"+*flagIPTables)
	if _, err := os.Stat(dir); err == nil {
		return dir
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, family := range []string{"iptables", "ip6tables"} {
		for _, suffix := range []string{"", "-save", "-restore"} {
			target, err := exec.LookPath(family + "-" + *flagIPTables + suffix)
			if err != nil {
				t.Fatalf("%s%s of the %s variant is not installed: %v", family, suffix, *flagIPTables, err)
			}
			if err := os.Symlink(target, filepath.Join(dir, family+suffix)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// countRules is `iptables-save | wc -l` inside the namespace.
func countRules(t *testing.T, ns *netns.NS) int {
	t.Helper()
	out, err := ns.Run(context.Background(), "iptables-"+*flagIPTables+"-save")
	if err != nil {
		t.Fatalf("iptables-save in %s: %v\n%s", ns.Name, err, out)
	}
	return strings.Count(string(out), "\n")
}

// listNFT is `nft -j list table ip TABLE` inside the namespace: its
// standard output alone, which is JSON.
func listNFT(ctx context.Context, ns *netns.NS, table string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name, "nft", "-j", "list", "table", "ip", table)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("nft list table ip %s in %s: %v\n%s", table, ns.Name, err, stderr.String())
	}
	return out, nil
}

// countNFT counts what the peer's own IPv4 table holds, inside the namespace.
func countNFT(t *testing.T, ns *netns.NS, table string) NFTCount {
	t.Helper()
	out, err := listNFT(context.Background(), ns, table)
	if err != nil {
		t.Fatal(err)
	}
	c, err := CountNFT(out)
	if err != nil {
		t.Fatalf("table ip %s in %s: %v", table, ns.Name, err)
	}
	return c
}
