package e2e

import (
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// SIGTERM: keep answering for the lameduck, then stop taking queries, let the
// ones in flight finish, and exit 0.
func TestCorefileShutdownFinishesQueriesInFlight(t *testing.T) {
	up := startUpstream(t, "127.0.0.1:0", func(w dns.ResponseWriter, r *dns.Msg) {
		if strings.HasPrefix(r.Question[0].Name, "slow.") {
			time.Sleep(1500 * time.Millisecond)
			answerWith("192.0.2.77")(w, r)
			return
		}
		world(w, r)
	})
	health := listenAddr(t)
	s := serveCorefile(t, `.:{PORT} {
    bind 127.0.0.1
    health {HEALTH} {
        lameduck 500ms
    }
    kubernetes cluster.local {
        manifests {MANIFESTS}
    }
    forward . {UP}
}
`, "{UP}", up.addr, "{HEALTH}", health)

	type result struct {
		m   *dns.Msg
		err error
	}
	slow := make(chan result, 1)
	go func() {
		q := new(dns.Msg)
		q.SetQuestion("slow.example.com.", dns.TypeA)
		c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
		m, _, err := c.Exchange(q, s.dns)
		slow <- result{m, err}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for up.asked("slow.example.com") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the slow query never reached the upstream")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := s.p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// During the lameduck a new query is still answered.
	m, err := query(s.dns, "udp", "service-clusterip.dev.svc.cluster.local", dns.TypeA)
	if err != nil || !slices.Equal(answers(m), []string{"A 10.10.97.97"}) {
		t.Fatalf("during lameduck: %v %v", m, err)
	}
	// The query that was in flight when the listeners closed gets its answer.
	r := <-slow
	if r.err != nil || !slices.Equal(answers(r.m), []string{"A 192.0.2.77"}) {
		t.Fatalf("in-flight query: %v %v; want its answer", r.m, r.err)
	}
	if code := s.p.exited(t, 10*time.Second); code != 0 {
		t.Fatalf("exit code %d; want 0", code)
	}
	s.p.waitOutput(t, "lameduck", 2*time.Second)
}
