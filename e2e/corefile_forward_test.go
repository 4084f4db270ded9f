package e2e

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// corefileServer is a clusterdns started from a Corefile template.
type corefileServer struct {
	dns       string // 127.0.0.1:PORT
	metrics   string // 127.0.0.1:PORT of the prometheus endpoint
	dir       string
	corefile  string
	manifests string
	p         *process
	vars      *strings.Replacer
}

// serveCorefile writes conf with its placeholders filled and starts
// clusterdns on it: {PORT} the DNS port, {METRICS} a free address for
// prometheus, {MANIFESTS} a copy of the example manifests, and any extra
// pairs given. It waits until the cluster zone answers.
func serveCorefile(t *testing.T, conf string, extra ...string) *corefileServer {
	t.Helper()
	dir := t.TempDir()
	s := &corefileServer{dir: dir, manifests: copyExamples(t, dir), metrics: listenAddr(t)}
	port := freePort(t)
	s.dns = fmt.Sprintf("127.0.0.1:%d", port)
	s.vars = strings.NewReplacer(append([]string{"{PORT}", fmt.Sprint(port), "{METRICS}", s.metrics, "{MANIFESTS}", s.manifests}, extra...)...)
	s.corefile = writeFile(t, dir, "Corefile", s.vars.Replace(conf))
	s.p = start(t, "serve", "--conf", s.corefile)
	waitAnswer(t, s.dns, "udp", "dns-version.cluster.local", dns.TypeTXT, 15*time.Second, func(m *dns.Msg) bool { return m.Rcode == dns.RcodeSuccess })
	return s
}

// rewrite replaces the Corefile with conf (placeholders filled as before).
func (s *corefileServer) rewrite(t *testing.T, conf string) {
	t.Helper()
	writeFile(t, s.dir, "Corefile", s.vars.Replace(conf))
}

func (s *corefileServer) metricsBody(t *testing.T) string {
	t.Helper()
	return waitHTTP(t, "http://"+s.metrics+"/metrics", 200)
}

func TestCorefileForwardRetriesTruncatedOverTCP(t *testing.T) {
	// Over UDP the upstream only ever says "truncated".
	up := startUpstream(t, "127.0.0.1:0", func(w dns.ResponseWriter, r *dns.Msg) {
		if w.RemoteAddr().Network() == "udp" {
			m := new(dns.Msg)
			m.SetReply(r)
			m.Truncated = true
			_ = w.WriteMsg(m)
			return
		}
		world(w, r)
	})
	s := serveCorefile(t, `.:{PORT} {
    bind 127.0.0.1
    kubernetes cluster.local {
        manifests {MANIFESTS}
    }
    forward . {UP}
}
`, "{UP}", up.addr)
	m, err := query(s.dns, "udp", "example.com", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if m.Truncated || !slices.Equal(answers(m), []string{"A 192.0.2.10"}) {
		t.Fatalf("tc=%t %q; want the answer fetched over TCP", m.Truncated, answers(m))
	}
}

func TestCorefileForwardHealthCheckFailover(t *testing.T) {
	first := startUpstream(t, "127.0.0.1:0", world)
	second := startUpstream(t, "127.0.0.1:0", world)
	s := serveCorefile(t, `.:{PORT} {
    bind 127.0.0.1
    prometheus {METRICS}
    kubernetes cluster.local {
        manifests {MANIFESTS}
    }
    forward . {FIRST} {SECOND} {
        policy sequential
        health_check 100ms
        max_fails 2
    }
}
`, "{FIRST}", first.addr, "{SECOND}", second.addr)
	ask := func() {
		t.Helper()
		m, err := query(s.dns, "udp", "example.com", dns.TypeA)
		if err != nil || !slices.Equal(answers(m), []string{"A 192.0.2.10"}) {
			t.Fatalf("example.com: %v %v", m, err)
		}
	}
	ask()
	if first.queries.Load() == 0 || second.queries.Load() != 0 {
		t.Fatalf("sequential policy: first saw %d, second %d", first.queries.Load(), second.queries.Load())
	}
	// The first upstream goes away: queries keep being answered by the second.
	first.udp.Shutdown()
	first.tcp.Shutdown()
	for i := 0; i < 5; i++ {
		ask()
	}
	if second.queries.Load() == 0 {
		t.Fatal("the second upstream never took over")
	}
	// Health checks fail and are counted.
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(s.metricsBody(t), "coredns_forward_healthcheck_failures_total", `to="`+first.addr+`"`) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("no failed health checks counted for the dead upstream")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Marked down, it is skipped: queries go straight to the second.
	before := second.queries.Load()
	ask()
	if second.queries.Load() != before+1 {
		t.Fatal("query did not reach the second upstream")
	}
	// It comes back: the health check notices and sequential order uses it again.
	back := startUpstream(t, first.addr, world)
	deadline = time.Now().Add(10 * time.Second)
	for {
		n := back.queries.Load()
		if _, err := query(s.dns, "udp", fmt.Sprintf("n%d.example.com", n), dns.TypeA); err != nil {
			t.Fatal(err)
		}
		if back.asked(fmt.Sprintf("n%d.example.com", n)) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the restored upstream was never used again")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCorefileForwardMaxConcurrentAndServfail(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	entered := make(chan struct{}, 16)
	up := startUpstream(t, "127.0.0.1:0", func(w dns.ResponseWriter, r *dns.Msg) {
		if strings.HasPrefix(r.Question[0].Name, "slow") {
			entered <- struct{}{}
			<-release
		}
		world(w, r)
	})
	dead := listenAddr(t) // nothing listens there
	s := serveCorefile(t, `example.com:{PORT} {
    bind 127.0.0.1
    prometheus {METRICS}
    forward . {UP} {
        max_concurrent 2
    }
}
.:{PORT} {
    bind 127.0.0.1
    errors
    kubernetes cluster.local {
        manifests {MANIFESTS}
    }
    forward . {DEAD}
}
`, "{UP}", up.addr, "{DEAD}", dead)

	// Two queries hold both slots; a third is refused at once.
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = query(s.dns, "udp", fmt.Sprintf("slow%d.example.com", i), dns.TypeA)
		}()
	}
	<-entered
	<-entered
	m, err := query(s.dns, "udp", "www.example.com", dns.TypeA)
	once.Do(func() { close(release) })
	wg.Wait()
	if err != nil || m.Rcode != dns.RcodeRefused {
		t.Fatalf("third concurrent query: %v %v; want REFUSED", m, err)
	}
	if v := metricValue(s.metricsBody(t), "coredns_forward_max_concurrent_rejects_total"); v != 1 {
		t.Fatalf("max_concurrent_rejects_total = %v; want 1", v)
	}
	m, err = query(s.dns, "udp", "example.com", dns.TypeA)
	if err != nil || !slices.Equal(answers(m), []string{"A 192.0.2.10"}) {
		t.Fatalf("after the burst: %v %v", m, err)
	}

	// No upstream answers: SERVFAIL, in bounded time (the client gives the
	// server 8s; forwarding gives up after 5s at most).
	q := new(dns.Msg)
	q.SetQuestion("www.other.org.", dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: 8 * time.Second}
	m, _, err = c.Exchange(q, s.dns)
	if err != nil || m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("dead upstream: %v %v; want SERVFAIL", m, err)
	}
	s.p.waitOutput(t, "query failed", 2*time.Second)
}
