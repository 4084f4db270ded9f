package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"sigs.k8s.io/yaml"
)

// The stock DaemonSet's arguments, with one dash as shipped and with two.
func TestNodecacheFlags(t *testing.T) {
	for _, dash := range []string{"-", "--"} {
		args := []string{
			dash + "localip", "169.254.20.10,10.96.0.10", dash + "conf", "/etc/Corefile",
			dash + "upstreamsvc", "kube-dns-upstream", dash + "pidfile", "/tmp/node-cache.pid",
			dash + "setupinterface=false", dash + "setupiptables=true", dash + "skipteardown",
			dash + "interfacename", "nl0", dash + "health-port", "8081", dash + "syncinterval", "30",
			dash + "metrics-listen-address", "0.0.0.0:9353", dash + "initialdelay", "10s",
		}
		f, err := parseNodecacheFlags(args, io.Discard)
		if err != nil {
			t.Fatalf("%s: %v", dash, err)
		}
		cfg, err := f.nodeConfig()
		if err != nil {
			t.Fatalf("%s: %v", dash, err)
		}
		got := fmt.Sprintf("%v %s %s %v %q %s %d %v %s", cfg.LocalIPs, f.conf, f.upstreamSvc, f.skipTeardown,
			cfg.Interface, cfg.Rules, cfg.HealthPort, f.syncInterval.d, f.pidFile)
		want := `[169.254.20.10 10.96.0.10] /etc/Corefile kube-dns-upstream true "" iptables 8081 30s /tmp/node-cache.pid`
		if got != want {
			t.Errorf("%s:\n got %s\nwant %s", dash, got, want)
		}
	}
}

func TestNodecacheFlagErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{}, "-localip is required"},
		{[]string{"-localip", "169.254.20.10,fd00::a"}, "different families"},
		{[]string{"-localip", "nonsense"}, "-localip"},
		{[]string{"-localip", "169.254.20.10", "-rules", "ipvs"}, "-rules"},
		{[]string{"-localip", "169.254.20.10", "-syncinterval", "0"}, "positive"},
		{[]string{"-localip", "169.254.20.10", "stray"}, "unexpected arguments"},
	}
	for _, tc := range cases {
		f, err := parseNodecacheFlags(tc.args, io.Discard)
		if err == nil {
			_, err = f.nodeConfig()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

func TestFillCorefile(t *testing.T) {
	cases := []struct {
		in, cluster, want, err string
	}{
		{"forward . __PILLAR__CLUSTER__DNS__\nforward . __PILLAR__UPSTREAM__SERVERS__", "10.96.0.11", "forward . 10.96.0.11\nforward . /etc/resolv.conf", ""},
		{"forward . __PILLAR__CLUSTER__DNS__", "", "", "upstream Service's address is not set"},
		{"forward . __PILLAR__UPSTREAM__SERVERS__", "", "forward . /etc/resolv.conf", ""},
		{"bind __PILLAR__LOCAL__DNS__", "10.96.0.11", "", "still has a placeholder"},
	}
	for _, tc := range cases {
		got, err := fillCorefile([]byte(tc.in), tc.cluster, "/etc/resolv.conf")
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || string(got) != tc.want {
			t.Errorf("%q: got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if got := serviceHostEnv("kube-dns-upstream"); got != "KUBE_DNS_UPSTREAM_SERVICE_HOST" {
		t.Errorf("serviceHostEnv = %s", got)
	}
}

func stockNodecacheCorefile(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nodecache", "configmap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct{ Data map[string]string }
	if err := yaml.Unmarshal(data, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Data["Corefile"] == "" {
		t.Fatal("deploy/nodecache/configmap.yaml has no Corefile")
	}
	return cm.Data["Corefile"]
}

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// tcpUpstream is the cluster DNS as the cache sees it: TCP only, so that a
// query the cache forwarded over UDP would go unanswered. queries counts the
// A queries only: the loop plugin's HINFO probes arrive whenever it sends
// them, and are not cache misses.
type tcpUpstream struct {
	addr    string
	queries atomic.Int64
}

func startTCPUpstream(t *testing.T) *tcpUpstream {
	t.Helper()
	u := &tcpUpstream{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = l.Addr().String()
	srv := &dns.Server{Listener: l, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		if q.Qtype == dns.TypeA {
			u.queries.Add(1)
		}
		if q.Qtype == dns.TypeA && strings.HasSuffix(q.Name, ".svc.cluster.local.") {
			rr, _ := dns.NewRR(q.Name + " 30 IN A 10.0.0.7")
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return u
}

// The stock NodeLocal Corefile from deploy/nodecache, moved to loopback and
// free ports, is filled in and served by runNodecache: cluster names are
// forwarded over TCP and then answered from the cache, and health and
// metrics answer. The node side is off (no root, host namespace).
func TestNodecacheServesStockCorefile(t *testing.T) {
	up := startTCPUpstream(t)
	dnsPort, healthPort, metricsPort := freeLoopbackPort(t), freeLoopbackPort(t), freeLoopbackPort(t)
	stock := stockNodecacheCorefile(t)
	for _, want := range []string{"bind 169.254.20.10 10.96.0.10", "force_tcp", "prometheus :9253", "health 169.254.20.10:8080", "loop", "reload", "__PILLAR__CLUSTER__DNS__", "__PILLAR__UPSTREAM__SERVERS__"} {
		if !strings.Contains(stock, want) {
			t.Fatalf("stock Corefile lacks %q", want)
		}
	}
	local := strings.NewReplacer(
		"bind 169.254.20.10 10.96.0.10", "bind 127.0.0.1",
		":53 {", fmt.Sprintf(":%d {", dnsPort),
		"169.254.20.10:8080", fmt.Sprintf("127.0.0.1:%d", healthPort),
		":9253", fmt.Sprintf("127.0.0.1:%d", metricsPort),
	).Replace(stock)
	dir := t.TempDir()
	base, conf, resolv := filepath.Join(dir, "Corefile.base"), filepath.Join(dir, "Corefile"), filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(base, []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBE_DNS_UPSTREAM_SERVICE_HOST", up.addr)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var runErr error
	var stderr lockedBuffer
	wg.Add(1)
	go func() {
		defer wg.Done()
		runErr = runNodecache(ctx, []string{"-localip", "127.0.0.1", "-basecorefile", base, "-conf", conf,
			"-upstreamsvc", "kube-dns-upstream", "-resolv-conf", resolv, "-setupinterface=false", "-setupiptables=false"}, io.Discard, &stderr)
	}()
	defer func() {
		cancel()
		wg.Wait()
		if runErr != nil {
			t.Errorf("runNodecache: %v\n%s", runErr, stderr.String())
		}
	}()

	addr := fmt.Sprintf("127.0.0.1:%d", dnsPort)
	var first *dns.Msg
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		m, err := exchange(addr, "udp", "web.default.svc.cluster.local.")
		if err == nil {
			first = m
			break
		}
	}
	if first == nil || len(first.Answer) != 1 {
		t.Fatalf("no answer from the node cache: %v\n%s", first, stderr.String())
	}
	written, err := os.ReadFile(conf)
	if err != nil || strings.Contains(string(written), "__PILLAR__") || !strings.Contains(string(written), "/resolv.conf") {
		t.Errorf("written Corefile %q, %v", written, err)
	}
	before := up.queries.Load()
	for _, network := range []string{"udp", "tcp"} {
		m, err := exchange(addr, network, "web.default.svc.cluster.local.")
		if err != nil || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "10.0.0.7" {
			t.Errorf("%s: cached answer %v, %v", network, m, err)
		}
	}
	if after := up.queries.Load(); after != before {
		t.Errorf("cache hits reached the upstream: %d queries, then %d", before, after)
	}
	// A miss in a reverse zone goes to the same TCP-only upstream.
	if m, err := exchange(addr, "udp", "7.0.0.10.in-addr.arpa."); err != nil || m.Rcode != dns.RcodeNameError {
		t.Errorf("reverse miss: %v, %v", m, err)
	}
	for url, want := range map[string]string{
		fmt.Sprintf("http://127.0.0.1:%d/health", healthPort):   "OK",
		fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort): "coredns_cache_hits_total",
	} {
		body, err := httpGet(url)
		if err != nil || !strings.Contains(body, want) {
			t.Errorf("%s: %v, body lacks %q", url, err, want)
		}
	}
}

func exchange(addr, network, name string) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: time.Second}
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	m, _, err := c.Exchange(q, addr)
	return m, err
}

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
