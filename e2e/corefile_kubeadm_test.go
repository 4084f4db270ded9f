package e2e

import (
	"fmt"
	"net"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/internal/testenv"
)

// kubeadmCorefile is the Corefile kubeadm installs in every cluster, as it
// ships. The test changes exactly three things at run time and checks that
// each applied once: the port (53 becomes a free one), the resolv.conf path
// (a file naming the test's upstream), and one added line, "manifests", that
// gives the kubernetes block its objects without an API server.
const kubeadmCorefile = `.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
`

// substituteOnce replaces old with new exactly once, failing otherwise.
func substituteOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("%q occurs %d times in the Corefile, want once", old, n)
	}
	return strings.Replace(s, old, new, 1)
}

// requireFree fails when a TCP address the verbatim Corefile needs is taken.
func requireFree(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the kubeadm Corefile needs %s, which is in use: %v", addr, err)
	}
	ln.Close()
}

func TestCorefileKubeadm(t *testing.T) {
	// resolv.conf cannot name a port, so the upstream takes 127.0.0.1:53,
	// which only root may bind.
	testenv.Require(t, testenv.Root())
	for _, a := range []string{":8080", ":8181", ":9153"} {
		requireFree(t, a)
	}
	up := startUpstream(t, "127.0.0.1:53", world)
	dir := t.TempDir()
	manifests := copyExamples(t, dir)
	resolvConf := writeFile(t, dir, "resolv.conf", "nameserver 127.0.0.1\n")
	port := freePort(t)
	conf := substituteOnce(t, kubeadmCorefile, ".:53 {", fmt.Sprintf(".:%d {", port))
	conf = substituteOnce(t, conf, "/etc/resolv.conf", resolvConf)
	conf = substituteOnce(t, conf, "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n",
		"    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       manifests "+manifests+"\n")
	corefile := writeFile(t, dir, "Corefile", conf)
	p := start(t, "serve", "--conf", corefile)
	server := fmt.Sprintf("127.0.0.1:%d", port)

	if body := waitHTTP(t, "http://127.0.0.1:8181/ready", 200); body != "OK" {
		t.Fatalf("/ready: %q", body)
	}
	if body := waitHTTP(t, "http://127.0.0.1:8080/health", 200); body != "OK" {
		t.Fatalf("/health: %q", body)
	}

	tests := []struct {
		name  string
		qname string
		qtype uint16
		rcode int
		want  []string // answer data, in order
	}{
		{"cluster service", "service-clusterip.dev.svc.cluster.local", dns.TypeA, dns.RcodeSuccess, []string{"A 10.10.97.97"}},
		{"forwarded", "example.com", dns.TypeA, dns.RcodeSuccess, []string{"A 192.0.2.10"}},
		{"externalname chased", "service-externalname.dev.svc.cluster.local", dns.TypeA, dns.RcodeSuccess,
			[]string{"CNAME www.baidu.com.", "A 192.0.2.20"}},
		{"cluster reverse", "97.97.10.10.in-addr.arpa", dns.TypePTR, dns.RcodeSuccess, []string{"PTR service-clusterip.dev.svc.cluster.local."}},
		{"reverse falls through to forward", "4.3.2.1.in-addr.arpa", dns.TypePTR, dns.RcodeSuccess, []string{"PTR one.two.example."}},
		{"cluster name missing", "missing.dev.svc.cluster.local", dns.TypeA, dns.RcodeNameError, nil},
		{"upstream name missing", "missing.example.com", dns.TypeA, dns.RcodeNameError, nil},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range tests {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				m, err := query(server, network, tc.qname, tc.qtype)
				if err != nil {
					t.Fatal(err)
				}
				if got := answers(m); m.Rcode != tc.rcode || !slices.Equal(got, tc.want) {
					t.Fatalf("%s %q; want %s %q", dns.RcodeToString[m.Rcode], got, dns.RcodeToString[tc.rcode], tc.want)
				}
			})
		}
	}
	// Upstream answers are cached (both NXDOMAIN lookups above, over UDP and
	// TCP, reached the upstream once); cluster answers are not cached at all
	// (disable success/denial cluster.local), which the ExternalName test
	// relies on.
	if n := up.asked("missing.example.com"); n != 1 {
		t.Errorf("upstream asked %d times for a cached NXDOMAIN; want 1", n)
	}

	body := waitHTTP(t, "http://127.0.0.1:9153/metrics", 200)
	srv := fmt.Sprintf(`server="dns://:%d"`, port)
	for _, m := range []struct {
		name   string
		labels []string
	}{
		{"coredns_dns_requests_total", []string{srv, `zone="."`, `view=""`, `proto="udp"`, `family="1"`, `type="A"`}},
		{"coredns_dns_requests_total", []string{srv, `proto="tcp"`, `type="PTR"`}},
		{"coredns_dns_responses_total", []string{srv, `zone="."`, `rcode="NOERROR"`, `plugin="forward"`}},
		{"coredns_dns_responses_total", []string{srv, `rcode="NXDOMAIN"`, `plugin="cache"`}},
		{"coredns_dns_responses_total", []string{srv, `rcode="NOERROR"`, `plugin="kubernetes"`}},
		{"coredns_dns_request_duration_seconds_count", []string{srv, `type="A"`}},
		{"coredns_dns_request_size_bytes_count", []string{srv, `proto="udp"`}},
		{"coredns_dns_response_size_bytes_count", []string{srv, `proto="tcp"`}},
		{"coredns_cache_requests_total", []string{srv}},
		{"coredns_cache_misses_total", []string{srv}},
		{"coredns_cache_hits_total", []string{srv, `type="denial"`}},
		{"coredns_cache_entries", []string{srv, `type="denial"`}},
		{"coredns_forward_requests_total", []string{`to="127.0.0.1:53"`}},
		{"coredns_forward_responses_total", []string{`to="127.0.0.1:53"`, `rcode="NOERROR"`}},
		{"coredns_forward_request_duration_seconds_count", []string{`to="127.0.0.1:53"`, `rcode="NXDOMAIN"`}},
		{"coredns_build_info", []string{`goversion="` + runtime.Version() + `"`}},
		{"coredns_health_request_duration_seconds_count", nil},
		{"coredns_reload_version_info", []string{`hash="sha512"`}},
	} {
		if v := metricValue(body, m.name, m.labels...); v <= 0 {
			t.Errorf("metric %s%v: %v; want a positive sample", m.name, m.labels, v)
		}
	}
	for _, name := range []string{"coredns_panics_total", "coredns_forward_healthcheck_failures_total",
		"coredns_forward_max_concurrent_rejects_total", "coredns_forward_healthcheck_broken_total",
		"coredns_health_request_failures_total", "coredns_reload_failed_total", "coredns_kubernetes_dns_programming_duration_seconds_count"} {
		if v := metricValue(body, name); v < 0 {
			t.Errorf("metric %s is missing", name)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", body)
	}

	// SIGTERM: for the 5s lameduck the server keeps answering and reports
	// healthy; then it closes its listeners and exits 0.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitOutput(t, "lameduck", 2*time.Second)
	for i := 0; i < 10; i++ {
		m, err := query(server, "udp", "service-clusterip.dev.svc.cluster.local", dns.TypeA)
		if err != nil || !slices.Equal(answers(m), []string{"A 10.10.97.97"}) {
			t.Fatalf("during lameduck: %v %v", m, err)
		}
		if code, _, err := httpGet("http://127.0.0.1:8080/health"); err != nil || code != 200 {
			t.Fatalf("/health during lameduck: %d %v", code, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code := p.exited(t, 15*time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM; want 0", code)
	}
	if _, err := query(server, "udp", "service-clusterip.dev.svc.cluster.local", dns.TypeA); err == nil {
		t.Fatal("still answering after exit")
	}
}
