package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/internal/testenv"
)

// serveExample starts clusterdns on a free port over a copy of the example
// manifests, so tests may edit them.
func serveExample(t *testing.T) (server, manifests string, p *process) {
	t.Helper()
	dir := t.TempDir()
	manifests = filepath.Join(dir, "manifests")
	if err := os.CopyFS(manifests, os.DirFS(filepath.Join(repoRoot(), "deploy", "examples"))); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	corefile := filepath.Join(dir, "Corefile")
	conf := fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        manifests manifests
        pods insecure
        ttl 30
    }
}
`, port)
	if err := os.WriteFile(corefile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p = start(t, "serve", "--conf", corefile)
	server = fmt.Sprintf("127.0.0.1:%d", port)
	waitAnswer(t, server, "udp", "dns-version.cluster.local", dns.TypeTXT, 10*time.Second, func(m *dns.Msg) bool { return m.Rcode == dns.RcodeSuccess })
	return server, manifests, p
}

func TestServeExampleCluster(t *testing.T) {
	server, _, _ := serveExample(t)
	tests := []struct {
		name  string
		qtype uint16
		want  []string
		rcode int
	}{
		{"service-clusterip.dev.svc.cluster.local", dns.TypeA, []string{"A 10.10.97.97"}, dns.RcodeSuccess},
		{"service-headliness.dev.svc.cluster.local", dns.TypeA, []string{"A 172.16.69.206", "A 172.16.69.207", "A 172.16.79.83"}, dns.RcodeSuccess},
		{"_http._tcp.service-clusterip.dev.svc.cluster.local", dns.TypeSRV, []string{"SRV 0 100 80 service-clusterip.dev.svc.cluster.local."}, dns.RcodeSuccess},
		{"service-externalname.dev.svc.cluster.local", dns.TypeCNAME, []string{"CNAME www.baidu.com."}, dns.RcodeSuccess},
		{"97.97.10.10.in-addr.arpa", dns.TypePTR, []string{"PTR service-clusterip.dev.svc.cluster.local."}, dns.RcodeSuccess},
		{"dns-version.cluster.local", dns.TypeTXT, []string{`TXT "1.1.0"`}, dns.RcodeSuccess},
		{"172-16-79-83.dev.pod.cluster.local", dns.TypeA, []string{"A 172.16.79.83"}, dns.RcodeSuccess},
		{"missing.dev.svc.cluster.local", dns.TypeA, nil, dns.RcodeNameError},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range tests {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				m, err := query(server, network, tc.name, tc.qtype)
				if err != nil {
					t.Fatal(err)
				}
				got := answers(m)
				slices.Sort(got)
				if m.Rcode != tc.rcode || !slices.Equal(got, tc.want) || !m.Authoritative {
					t.Fatalf("rcode %s aa %t answers %q; want %s %q", dns.RcodeToString[m.Rcode], m.Authoritative, got, dns.RcodeToString[tc.rcode], tc.want)
				}
			})
		}
	}
}

// The dig commands the README shows give the answers it shows.
func TestServeWithDig(t *testing.T) {
	testenv.Require(t, testenv.Tools("dig"))
	server, _, _ := serveExample(t)
	host, port, _ := strings.Cut(server, ":")
	for _, args := range [][]string{
		{"service-clusterip.dev.svc.cluster.local"},
		{"+tcp", "service-clusterip.dev.svc.cluster.local"},
		{"-x", "10.10.97.97"},
	} {
		out, err := exec.Command("dig", append([]string{"@" + host, "-p", port, "+short"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %v: %v\n%s", args, err, out)
		}
		want := "10.10.97.97"
		if args[0] == "-x" {
			want = "service-clusterip.dev.svc.cluster.local."
		}
		if strings.TrimSpace(string(out)) != want {
			t.Errorf("dig %v: %q, want %q", args, out, want)
		}
	}
}

func TestServeFollowsManifestEdits(t *testing.T) {
	server, manifests, p := serveExample(t)
	services := filepath.Join(manifests, "services.yaml")
	orig, err := os.ReadFile(services)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(orig), "clusterIP: 10.10.97.97", "clusterIP: 10.10.97.98", 1)
	if err := os.WriteFile(services, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	took := waitAnswer(t, server, "udp", "service-clusterip.dev.svc.cluster.local", dns.TypeA, 2*time.Second, func(m *dns.Msg) bool {
		return slices.Equal(answers(m), []string{"A 10.10.97.98"})
	})
	t.Logf("edit served after %s", took)

	// A broken edit is logged with file and line; the last good answers stay.
	if err := os.WriteFile(services, []byte(edited+"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: [broken\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.waitOutput(t, "services.yaml:", 5*time.Second)
	m, err := query(server, "udp", "service-clusterip.dev.svc.cluster.local", dns.TypeA)
	if err != nil || !slices.Equal(answers(m), []string{"A 10.10.97.98"}) {
		t.Fatalf("after a broken edit: %v %v, want the last good answer", m, err)
	}
	if !strings.Contains(p.output(), "manifest rejected") {
		t.Fatalf("the broken manifest was not reported:\n%s", p.output())
	}
}

func TestServeTruncatesAndFormErr(t *testing.T) {
	server, manifests, _ := serveExample(t)
	// A headless service with enough endpoints to overflow 512 bytes.
	var b strings.Builder
	b.WriteString("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: big-1, namespace: dev, labels: {kubernetes.io/service-name: big}}\naddressType: IPv4\nendpoints:\n")
	for i := 1; i <= 60; i++ {
		fmt.Fprintf(&b, "- addresses: [10.20.0.%d]\n", i)
	}
	b.WriteString("---\napiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: dev}\nspec: {clusterIP: None}\n")
	if err := os.WriteFile(filepath.Join(manifests, "big.yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	name := "big.dev.svc.cluster.local."
	waitAnswer(t, server, "tcp", name, dns.TypeA, 5*time.Second, func(m *dns.Msg) bool { return len(m.Answer) == 60 })

	// Plain UDP, no EDNS0: 512 bytes, so truncated with TC.
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	m, _, err := c.Exchange(q, server)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Truncated || len(m.Answer) >= 60 {
		t.Fatalf("UDP without EDNS0: tc=%t with %d answers, want truncated", m.Truncated, len(m.Answer))
	}
	// With EDNS0 and a 4096-byte buffer it fits.
	q.SetEdns0(4096, false)
	m, _, err = c.Exchange(q, server)
	if err != nil {
		t.Fatal(err)
	}
	if m.Truncated || len(m.Answer) != 60 || m.IsEdns0() == nil {
		t.Fatalf("UDP with EDNS0 4096: tc=%t answers=%d opt=%v", m.Truncated, len(m.Answer), m.IsEdns0())
	}

	// Two questions: FORMERR, and the server carries on.
	bad := new(dns.Msg)
	bad.SetQuestion(name, dns.TypeA)
	bad.Question = append(bad.Question, bad.Question[0])
	m, _, err = c.Exchange(bad, server)
	if err != nil {
		t.Fatal(err)
	}
	if m.Rcode != dns.RcodeFormatError {
		t.Fatalf("two questions: rcode %s, want FORMERR", dns.RcodeToString[m.Rcode])
	}
	// Garbage bytes: no crash; the next query still answers.
	conn, err := net.Dial("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte{0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0xff, 0xff, 0xff})
	conn.Close()
	if _, err := query(server, "udp", "dns-version.cluster.local", dns.TypeTXT); err != nil {
		t.Fatalf("server stopped answering after garbage: %v", err)
	}
}
