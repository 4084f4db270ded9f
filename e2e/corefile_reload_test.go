package e2e

import (
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const reloadCorefile = `.:{PORT} {
    bind 127.0.0.1
    errors
    reload 2s 1s
    prometheus {METRICS}
    kubernetes cluster.local {
        manifests {MANIFESTS}
        ttl {TTL}
    }
    forward . {UP}
}
`

func answerWith(addr string) dns.HandlerFunc {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A " + addr)
		m.Answer = []dns.RR{rr}
		_ = w.WriteMsg(m)
	}
}

func TestCorefileReload(t *testing.T) {
	up1 := startUpstream(t, "127.0.0.1:0", answerWith("192.0.2.1"))
	up2 := startUpstream(t, "127.0.0.1:0", answerWith("192.0.2.2"))
	conf := func(up, ttl string) string {
		return strings.NewReplacer("{UP}", up, "{TTL}", ttl).Replace(reloadCorefile)
	}
	s := serveCorefile(t, conf(up1.addr, "30"))

	// Queries run throughout; not one may fail.
	var failures, sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, name := range []string{"service-clusterip.dev.svc.cluster.local", "example.com"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				m, err := query(s.dns, "udp", name, dns.TypeA)
				sent.Add(1)
				if err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
					failures.Add(1)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	// So do scrapes: the metrics port stays open across reloads.
	var scrapeFailures atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if code, _, err := httpGet("http://" + s.metrics + "/metrics"); err != nil || code != 200 {
				scrapeFailures.Add(1)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	stopQueries := func() {
		close(stop)
		wg.Wait()
	}

	requestsBefore := metricValue(s.metricsBody(t), "coredns_dns_requests_total", `type="A"`)

	// A good edit: new upstream and TTL, picked up by polling.
	s.rewrite(t, conf(up2.addr, "7"))
	waitAnswer(t, s.dns, "udp", "example.com", dns.TypeA, 15*time.Second, func(m *dns.Msg) bool {
		return slices.Equal(answers(m), []string{"A 192.0.2.2"})
	})
	waitAnswer(t, s.dns, "udp", "service-clusterip.dev.svc.cluster.local", dns.TypeA, 5*time.Second, func(m *dns.Msg) bool {
		return len(m.Answer) == 1 && m.Answer[0].Header().Ttl == 7
	})
	s.p.waitOutput(t, "reloaded", 2*time.Second)

	// A bad edit: logged with file and line; the running configuration stays.
	bad := conf(up1.addr, "30")
	bad = bad[:len(bad)-2] + "    bogus_directive\n}\n"
	s.rewrite(t, bad)
	s.p.waitOutput(t, "reload failed", 15*time.Second)
	if !regexp.MustCompile(regexp.QuoteMeta(s.corefile) + `:\d+: `).MatchString(s.p.output()) {
		t.Fatalf("the rejected Corefile's error names no FILE:LINE:\n%s", s.p.output())
	}
	time.Sleep(300 * time.Millisecond)
	m, err := query(s.dns, "udp", "example.com", dns.TypeA)
	if err != nil || !slices.Equal(answers(m), []string{"A 192.0.2.2"}) {
		t.Fatalf("after a bad edit: %v %v; want the running configuration's answer", m, err)
	}

	stopQueries()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d queries failed across the reloads", failures.Load(), sent.Load())
	}
	t.Logf("%d queries answered across two reloads", sent.Load())
	if scrapeFailures.Load() != 0 {
		t.Fatalf("%d scrapes of /metrics failed across the reloads", scrapeFailures.Load())
	}
	// Metrics survive the reload: counters keep counting from where they were.
	body := s.metricsBody(t)
	if after := metricValue(body, "coredns_dns_requests_total", `type="A"`); after <= requestsBefore {
		t.Fatalf("requests_total %v after the reload, %v before; want it to keep growing", after, requestsBefore)
	}
	if v := metricValue(body, "coredns_reload_failed_total"); v != 1 {
		t.Fatalf("reload_failed_total = %v; want 1", v)
	}
	if v := metricValue(body, "coredns_reload_version_info", `hash="sha512"`); v != 1 {
		t.Fatalf("reload_version_info = %v; want 1", v)
	}
}
