package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/clusterdns/clusterdns/e2e/internal/kubeapi"
	"github.com/clusterdns/clusterdns/e2e/netns"
)

// The node-local cache lab (issue 13's "Done when"): one node with a DNS
// pod running `clusterdns serve` on the API server, `clusterdns proxy`
// routing kube-dns to it (and the link-local address while no cache holds
// it), `clusterdns nodecache` with the stock Corefile, and a client pod.
const (
	ncLinkLocal = "169.254.20.10"
	ncKubeDNS   = "10.96.0.10"
	ncDNSPod    = "10.244.0.10"
	ncClientPod = "10.244.0.11"
	ncWebIP     = "10.96.0.80"
	ncWeb       = "web.default.svc.cluster.local."
	ncServeProm = "127.0.0.1:9153" // in the DNS pod
)

// ncServeCorefile is the DNS pod's: the kubernetes block with the API
// server's relay, and metrics to tell which protocol queries came in over.
const ncServeCorefile = `.:53 {
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus ` + ncServeProm + `
}
`

// TestNodecacheLab runs the whole chain in iptables and in nftables mode:
// a pod asks both addresses over UDP and TCP and with glibc through its
// search path, untracked; cached names outlive the DNS pod; misses reach
// kube-dns-upstream over TCP; a SIGKILLed cache hands the pod's and the
// node's queries to kube-dns, and a new one takes them back; a restart
// under load loses no query; SIGTERM tears down and DNS keeps working.
func TestNodecacheLab(t *testing.T) {
	netns.Require(t, "conntrack", "nft", "iptables", "iptables-restore", "iptables-"+proxyIPTablesVariant+"-restore", "getent", "unshare", "etcd")
	api := kubeapi.Start(t)
	upstreamIP := writeNodecacheObjects(t, mustAdmin(t, api))
	for _, mode := range []string{"iptables", "nftables"} {
		t.Run(mode, func(t *testing.T) { testNodecacheLab(t, api, mode, upstreamIP) })
	}
}

// writeNodecacheObjects creates kube-dns (10.96.0.10), the
// kube-dns-upstream Service from deploy/nodecache, their slices over the
// DNS pod, and the Service the pod looks up. It returns kube-dns-upstream's
// ClusterIP.
func writeNodecacheObjects(t *testing.T, c kubernetes.Interface) string {
	t.Helper()
	ctx := context.Background()
	dnsPorts := []corev1.ServicePort{
		{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
		{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(53)},
	}
	kubeDNS := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns"},
		Spec:       corev1.ServiceSpec{ClusterIP: ncKubeDNS, Selector: map[string]string{"k8s-app": "kube-dns"}, Ports: dnsPorts},
	}
	var upstream *corev1.Service
	data, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "nodecache", "service.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var svc corev1.Service
		if err := yaml.UnmarshalStrict([]byte(doc), &svc); err != nil {
			t.Fatalf("deploy/nodecache/service.yaml: %v", err)
		}
		if svc.Name == "kube-dns-upstream" {
			upstream = &svc
		}
	}
	if upstream == nil {
		t.Fatal("deploy/nodecache/service.yaml has no kube-dns-upstream")
	}
	web := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec:       corev1.ServiceSpec{ClusterIP: ncWebIP, Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}},
	}
	var upstreamIP string
	for _, svc := range []*corev1.Service{kubeDNS, upstream, web} {
		created, err := c.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create service %s: %v", svc.Name, err)
		}
		if svc == upstream {
			upstreamIP = created.Spec.ClusterIP
		}
		if svc == web {
			continue
		}
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: svc.Namespace, Name: svc.Name + "-pod", Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ncDNSPod}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
			Ports: []discoveryv1.EndpointPort{
				{Name: ptr.To("dns"), Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To(int32(53))},
				{Name: ptr.To("dns-tcp"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(int32(53))},
			},
		}
		if _, err := c.DiscoveryV1().EndpointSlices(svc.Namespace).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create slice for %s: %v", svc.Name, err)
		}
	}
	return upstreamIP
}

func testNodecacheLab(t *testing.T, api *kubeapi.APIServer, mode, upstreamIP string) {
	topo := netns.NewTopology(t, netns.TopologySpec{PodIPs: []string{ncDNSPod, ncClientPod}, NodeIP: "192.168.61.1", ClientIP: "192.168.61.2"})
	node, dnsPod, client := topo.Node, topo.Pods[0], topo.Pods[1]
	dir := t.TempDir()
	bin := clusterdnsBinary(t)

	// Each stage logs when it starts, so a slow run shows where it waited.
	began := time.Now()
	stage := func(name string) { t.Logf("%v: %s", time.Since(began).Round(time.Millisecond), name) }

	// The DNS pod.
	serveConf := writeFile(t, dir, "serve.Corefile", fmt.Sprintf(ncServeCorefile, api.RelayKubeconfig(t, dnsPod, dir)))
	startServe := func() *netns.Process { return dnsPod.Start(bin, "serve", "--conf", serveConf) }
	serve := startServe()

	// The agent, with kube-proxy's usual flags and the link-local alias.
	agent := node.Start(bin, "proxy", "--kubeconfig", api.RelayKubeconfig(t, node, dir), "--hostname-override", "node",
		"--proxy-mode", mode, "--cluster-cidr", "10.244.0.0/16", "--healthz-bind-address", proxyHealthz,
		"--metrics-bind-address", proxyMetrics, "--iptables-variant", proxyIPTablesVariant, "--node-local-dns", ncLinkLocal)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent:\n%s\nserve:\n%s", tail(agent.Output()), tail(serve.Output()))
		}
	})
	stage("agent and DNS pod")
	// Until the cache runs, kube-dns is the DNS pod through the agent.
	waitLabAnswer(t, client, ncKubeDNS, "udp", 90*time.Second, agent)

	stage("cache start")
	// The cache, with the stock Corefile; the node's resolv.conf names
	// nothing that answers (no name outside the cluster is asked).
	base := writeFile(t, dir, "Corefile.base", stockNodecacheCorefile(t))
	resolv := writeFile(t, dir, "resolv.conf", "nameserver 127.0.0.1\n")
	conf := filepath.Join(dir, "Corefile")
	startCache := func() *netns.Process {
		return node.Start("env", "KUBE_DNS_UPSTREAM_SERVICE_HOST="+upstreamIP, bin, "nodecache",
			"-localip", ncLinkLocal+","+ncKubeDNS, "-basecorefile", base, "-conf", conf,
			"-upstreamsvc", "kube-dns-upstream", "-resolv-conf", resolv, "-rules", mode, "-syncinterval", "1")
	}
	cache := startCache()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nodecache:\n%s", tail(cache.Output()))
		}
	})
	// The cache has taken over once its own counter moves with a query.
	waitCache := func() {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			before, err := scrapeSum(node, "127.0.0.1:9253", "coredns_dns_requests_total", "")
			_, _ = labAsk(client, ncLinkLocal, "udp")
			if after, err2 := scrapeSum(node, "127.0.0.1:9253", "coredns_dns_requests_total", ""); err == nil && err2 == nil && after > before {
				return
			}
			if exited, _ := cache.Exited(); exited || time.Now().After(deadline) {
				t.Fatalf("the cache does not answer 169.254.20.10:\n%s", cache.Output())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitCache()

	stage("node lease")
	// The node's own queries skip conntrack too once the cache holds its
	// lease (renewed every 250 ms from when it has bound).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		node.MustRun("conntrack", "-F")
		for _, ip := range []string{ncLinkLocal, ncKubeDNS} {
			if m, err := labAsk(node, ip, "udp"); err != nil || !answersWeb(m) {
				t.Fatalf("the node asking %s: %v, %v", ip, m, err)
			}
		}
		table := node.MustRun("conntrack", "-L")
		if !strings.Contains(table, "dst="+ncLinkLocal) && !strings.Contains(table, "dst="+ncKubeDNS) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node's own queries stay in conntrack with the cache alive:\n%s", table)
		}
	}
	stage("pod queries")
	// Both addresses, both protocols, then glibc through the search path.
	node.MustRun("conntrack", "-F")
	tcpBefore := promSum(t, dnsPod, ncServeProm, "coredns_dns_requests_total", `proto="tcp"`)
	servedBefore := promSum(t, dnsPod, ncServeProm, "coredns_dns_requests_total", "")
	for _, ip := range []string{ncLinkLocal, ncKubeDNS} {
		for _, network := range []string{"udp", "tcp"} {
			if m, err := labAsk(client, ip, network); err != nil || !answersWeb(m) {
				t.Errorf("%s %s: %v, %v", network, ip, m, err)
			}
		}
		resolvConf := writeFile(t, dir, "resolv-"+ip, "nameserver "+ip+"\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:3\n")
		out, err := client.Run(t.Context(), "unshare", "--mount", "--propagation", "private", "sh", "-c",
			"mount --bind "+resolvConf+" /etc/resolv.conf && exec getent hosts web")
		if err != nil || !strings.HasPrefix(string(out), ncWebIP+" ") || !strings.Contains(string(out), ncWeb[:len(ncWeb)-1]) {
			t.Errorf("getent hosts web with nameserver %s: %v\n%s", ip, err, out)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	// The control: a pod's flow to the node is tracked.
	if _, err := labAsk(client, topo.NodeIP.String(), "udp"); err == nil {
		t.Error("the node answered DNS on its own address")
	}
	table := node.MustRun("conntrack", "-L")
	if !strings.Contains(table, "dst="+topo.NodeIP.String()) {
		t.Fatalf("the control flow is not in conntrack, so its absence proves nothing:\n%s", table)
	}
	for _, line := range strings.Split(table, "\n") {
		if strings.Contains(line, "src="+ncClientPod) && (strings.Contains(line, "dst="+ncLinkLocal) || strings.Contains(line, "dst="+ncKubeDNS)) {
			t.Errorf("a query of the pod is in conntrack: %s", line)
		}
	}
	// The misses went on to kube-dns-upstream over TCP (force_tcp), and
	// nothing but the cache's misses reached the DNS pod.
	served := promSum(t, dnsPod, ncServeProm, "coredns_dns_requests_total", "") - servedBefore
	if tcp := promSum(t, dnsPod, ncServeProm, "coredns_dns_requests_total", `proto="tcp"`) - tcpBefore; tcp == 0 || tcp != served {
		t.Errorf("the DNS pod got %d queries, %d of them over TCP; want some, all TCP", served, tcp)
	}

	stage("DNS pod down")
	// Cached names outlive the DNS pod.
	if err := serve.Stop(); err != nil {
		t.Logf("serve: %v", err)
	}
	for _, ip := range []string{ncLinkLocal, ncKubeDNS} {
		if m, err := labAsk(client, ip, "udp"); err != nil || !answersWeb(m) {
			t.Errorf("with the DNS pod down, %s: %v, %v", ip, m, err)
		}
	}
	serve = startServe()
	waitPromUp(t, dnsPod, serve)

	stage("SIGKILL")
	// SIGKILL: the pod's queries to either address, and the node's own,
	// are answered by kube-dns through the agent, until a new cache binds.
	_ = syscall.Kill(-cache.Cmd.Process.Pid, syscall.SIGKILL)
	_ = cache.Stop()
	killed := time.Now()
	for _, c := range []struct {
		who *netns.NS
		ip  string
	}{{client, ncLinkLocal}, {client, ncKubeDNS}, {node, ncLinkLocal}, {node, ncKubeDNS}} {
		waitLabAnswer(t, c.who, c.ip, "udp", 10*time.Second, agent)
		t.Logf("after SIGKILL, %s asking %s answered %v after the kill", c.who.Name, c.ip, time.Since(killed).Round(time.Millisecond))
	}
	cache = startCache()
	waitCache()

	stage("restart under load")
	// A restart under load from the pod loses no query, on either address.
	const n, qps = 6000, 2000
	loads := []func() (int, int){
		startLoad(t, client, ncKubeDNS+":53", ncWeb, n, qps),
		startLoad(t, client, ncLinkLocal+":53", ncWeb, n, qps),
	}
	time.Sleep(time.Second)
	if err := cache.Stop(); err != nil {
		t.Errorf("nodecache exited with %v:\n%s", err, cache.Output())
	}
	cache = startCache()
	for i, load := range loads {
		sent, answered := load()
		t.Logf("restart under load, %s: %d queries sent, %d answered", []string{ncKubeDNS, ncLinkLocal}[i], sent, answered)
		if sent != n || answered != sent {
			t.Errorf("restart under load: %d of %d queries sent, %d answered", sent, n, answered)
		}
	}
	if t.Failed() {
		// Where were they dropped: a socket's full buffer shows here
		// (counts since the namespace was made).
		for _, ns := range []*netns.NS{client, node, dnsPod} {
			out, _ := ns.Run(t.Context(), "nstat", "-asz", "UdpInErrors", "UdpRcvbufErrors", "UdpNoPorts", "IpOutNoRoutes", "IpInDiscards")
			t.Logf("%s:\n%s", ns.Name, out)
		}
	}
	waitCache()

	stage("SIGTERM")
	// SIGTERM tears down, and DNS keeps working through kube-dns.
	if err := cache.Stop(); err != nil {
		t.Errorf("nodecache exited with %v:\n%s", err, cache.Output())
	}
	if out, err := node.Run(t.Context(), "ip", "link", "show", "nodelocaldns"); err == nil {
		t.Errorf("SIGTERM left the link behind:\n%s", out)
	}
	rules := node.MustRun("nft", "list", "ruleset") + node.MustRun("iptables-save")
	if strings.Contains(rules, "clusterdns-nodecache") || strings.Contains(rules, "CLUSTERDNS-NODECACHE") {
		t.Errorf("SIGTERM left rules behind:\n%s", rules)
	}
	for _, ip := range []string{ncLinkLocal, ncKubeDNS} {
		for _, network := range []string{"udp", "tcp"} {
			if m, err := labAsk(client, ip, network); err != nil || !answersWeb(m) {
				t.Errorf("after SIGTERM, %s %s: %v, %v", network, ip, m, err)
			}
		}
	}
}

// labAsk asks ip:53 from ns for the web Service.
func labAsk(ns *netns.NS, ip, network string) (*dns.Msg, error) {
	var m *dns.Msg
	err := ns.Do(func() error {
		c := &dns.Client{Net: network, Timeout: 500 * time.Millisecond}
		q := new(dns.Msg)
		q.SetQuestion(ncWeb, dns.TypeA)
		var err error
		m, _, err = c.Exchange(q, net.JoinHostPort(ip, "53"))
		return err
	})
	return m, err
}

func answersWeb(m *dns.Msg) bool {
	return m != nil && len(m.Answer) == 1 && m.Answer[0].Header().Rrtype == dns.TypeA && m.Answer[0].(*dns.A).A.String() == ncWebIP
}

// waitLabAnswer asks until web is answered, at most limit.
func waitLabAnswer(t *testing.T, ns *netns.NS, ip, network string, limit time.Duration, agent *netns.Process) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		m, err := labAsk(ns, ip, network)
		if err == nil && answersWeb(m) {
			return
		}
		if exited, _ := agent.Exited(); exited || time.Now().After(deadline) {
			t.Fatalf("%s from %s: no answer within %v (last %v, %v)", ip, ns.Name, limit, m, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// promSum scrapes addr's /metrics from inside ns and sums the samples of
// metric whose labels contain match.
func promSum(t *testing.T, ns *netns.NS, addr, metric, match string) int {
	t.Helper()
	n, err := scrapeSum(ns, addr, metric, match)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func scrapeSum(ns *netns.NS, addr, metric, match string) (int, error) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(_ context.Context, network, a string) (net.Conn, error) { return ns.Dial(network, a, time.Second) },
	}}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, fmt.Errorf("metrics %s: %w", addr, err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric+"{") || !strings.Contains(line, match) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics %s: %q: %w", addr, line, err)
		}
		sum += v
	}
	return int(sum), sc.Err()
}

// waitPromUp waits until the DNS pod serves again (its metrics answer).
func waitPromUp(t *testing.T, ns *netns.NS, p *netns.Process) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := ns.Dial("tcp", ncServeProm, time.Second)
		if err == nil {
			conn.Close()
			if m, err := func() (*dns.Msg, error) {
				var m *dns.Msg
				err := ns.Do(func() error {
					var err error
					m, err = query("127.0.0.1:53", "udp", ncWeb, dns.TypeA)
					return err
				})
				return m, err
			}(); err == nil && answersWeb(m) {
				return
			}
		}
		if exited, _ := p.Exited(); exited || time.Now().After(deadline) {
			t.Fatalf("the DNS pod does not serve again:\n%s", p.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string) string {
	if len(s) > 6000 {
		return "…" + s[len(s)-6000:]
	}
	return s
}
