package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The ExternalName's target is resolved through the chain (cache and
// forward), and an edit of the Service shows at once: the cluster zone is
// not cached, only the target's records are.
func TestCorefileExternalNameChaseAndChange(t *testing.T) {
	up := startUpstream(t, "127.0.0.1:0", world)
	s := serveCorefile(t, `.:{PORT} {
    bind 127.0.0.1
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        manifests {MANIFESTS}
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . {UP}
    cache 30 {
        disable success cluster.local
        disable denial cluster.local
    }
    loadbalance
}
`, "{UP}", up.addr)
	name := "service-externalname.dev.svc.cluster.local"
	for i := 0; i < 3; i++ {
		m, err := query(s.dns, "udp", name, dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if got := answers(m); !slices.Equal(got, []string{"CNAME www.baidu.com.", "A 192.0.2.20"}) {
			t.Fatalf("%q; want the CNAME and its target's address", got)
		}
	}
	if n := up.asked("www.baidu.com"); n != 1 {
		t.Fatalf("upstream asked %d times for the target; want 1 (then cached)", n)
	}

	services := filepath.Join(s.manifests, "services.yaml")
	orig, err := os.ReadFile(services)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(orig), "externalName: www.baidu.com", "externalName: www.other.org", 1)
	if err := os.WriteFile(services, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	took := waitAnswer(t, s.dns, "udp", name, dns.TypeA, 5*time.Second, func(m *dns.Msg) bool {
		return slices.Equal(answers(m), []string{"CNAME www.other.org.", "A 192.0.2.30"})
	})
	t.Logf("new ExternalName target served %s after the edit", took)
}

// An unknown reverse name in in-addr.arpa falls through the kubernetes
// block to forward; a known one is answered from the cluster.
func TestCorefileFallthroughReachesForward(t *testing.T) {
	up := startUpstream(t, "127.0.0.1:0", world)
	s := serveCorefile(t, `.:{PORT} {
    bind 127.0.0.1
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        manifests {MANIFESTS}
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . {UP}
}
`, "{UP}", up.addr)
	m, err := query(s.dns, "udp", "4.3.2.1.in-addr.arpa", dns.TypePTR)
	if err != nil || !slices.Equal(answers(m), []string{"PTR one.two.example."}) {
		t.Fatalf("unknown reverse name: %v %v; want the upstream's PTR", m, err)
	}
	m, err = query(s.dns, "udp", "97.97.10.10.in-addr.arpa", dns.TypePTR)
	if err != nil || !slices.Equal(answers(m), []string{"PTR service-clusterip.dev.svc.cluster.local."}) {
		t.Fatalf("cluster reverse name: %v %v", m, err)
	}
	if up.asked("97.97.10.10.in-addr.arpa") != 0 {
		t.Fatal("a cluster reverse name went upstream")
	}
	// Names in cluster.local do not fall through: NXDOMAIN from the cluster.
	m, err = query(s.dns, "udp", "nope.dev.svc.cluster.local", dns.TypeA)
	if err != nil || m.Rcode != dns.RcodeNameError || up.asked("nope.dev.svc.cluster.local") != 0 {
		t.Fatalf("missing cluster name: %v %v", m, err)
	}
}

// Negative answers from upstream are cached for the SOA's negative TTL
// (RFC 2308) and their TTLs count down.
func TestCorefileNegativeCaching(t *testing.T) {
	up := startUpstream(t, "127.0.0.1:0", world)
	s := serveCorefile(t, `.:{PORT} {
    bind 127.0.0.1
    prometheus {METRICS}
    kubernetes cluster.local {
        manifests {MANIFESTS}
    }
    forward . {UP}
    cache
}
`, "{UP}", up.addr)
	first, err := query(s.dns, "udp", "nothing.example.net", dns.TypeA)
	if err != nil || first.Rcode != dns.RcodeNameError || len(first.Ns) != 1 {
		t.Fatalf("first: %v %v", first, err)
	}
	time.Sleep(1100 * time.Millisecond)
	again, err := query(s.dns, "udp", "nothing.example.net", dns.TypeA)
	if err != nil || again.Rcode != dns.RcodeNameError || len(again.Ns) != 1 {
		t.Fatalf("again: %v %v", again, err)
	}
	if n := up.asked("nothing.example.net"); n != 1 {
		t.Fatalf("upstream asked %d times; want 1", n)
	}
	// The world's SOA has TTL 3600 and MINIMUM 60: cached for 60s, counting down.
	if ttl := again.Ns[0].Header().Ttl; ttl >= 60 || ttl < 50 {
		t.Fatalf("cached SOA ttl %d; want below 60 and counting down", ttl)
	}
	// NODATA too.
	for i := 0; i < 2; i++ {
		if m, err := query(s.dns, "udp", "example.com", dns.TypeAAAA); err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 {
			t.Fatalf("nodata: %v %v", m, err)
		}
	}
	if n := up.asked("example.com"); n != 1 {
		t.Fatalf("upstream asked %d times for a NODATA; want 1", n)
	}
	body := s.metricsBody(t)
	if v := metricValue(body, "coredns_cache_hits_total", `type="denial"`); v != 2 {
		t.Fatalf("denial hits %v; want 2", v)
	}
}
