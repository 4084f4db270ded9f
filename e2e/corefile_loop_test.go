package e2e

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// A forward that leads back to the server itself is found at start, and the
// server exits with a message saying so, as CoreDNS's loop does.
func TestCorefileLoopDetected(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	corefile := writeFile(t, dir, "Corefile", fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    loop
    forward . 127.0.0.1:%d
}
`, port, port))
	p := start(t, "serve", "--conf", corefile)
	if code := p.exited(t, 30*time.Second); code == 0 {
		t.Fatalf("exit code 0 with a forwarding loop:\n%s", p.output())
	}
	out := p.output()
	if !strings.Contains(out, "loop: a forwarding loop") || !strings.Contains(out, "HINFO") {
		t.Fatalf("no clear loop message:\n%s", out)
	}
}

// Through a second server that forwards back: the loop is found as well.
func TestCorefileLoopThroughAnotherServer(t *testing.T) {
	dir := t.TempDir()
	port, relayPort := freePort(t), freePort(t)
	corefile := writeFile(t, dir, "Corefile", fmt.Sprintf(`.:%d {
    bind 127.0.0.1
    loop
    forward . 127.0.0.1:%d
}
.:%d {
    bind 127.0.0.1
    forward . 127.0.0.1:%d
}
`, port, relayPort, relayPort, port))
	p := start(t, "serve", "--conf", corefile)
	if code := p.exited(t, 30*time.Second); code == 0 {
		t.Fatalf("exit code 0 with a forwarding loop:\n%s", p.output())
	}
	if !strings.Contains(p.output(), "loop: a forwarding loop") {
		t.Fatalf("no clear loop message:\n%s", p.output())
	}
}

// An upstream that never answers, or answers SERVFAIL, is no loop: with the
// stock kubeadm Corefile (loop directive included) the server keeps serving
// the cluster zone through the whole probing window and past it.
func TestCorefileLoopUpstreamFailureKeepsServing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		upstream func(t *testing.T) string
	}{
		{"black-holed upstream", startBlackHole},
		{"SERVFAIL upstream", func(t *testing.T) string {
			return startUpstream(t, "127.0.0.1:0", func(w dns.ResponseWriter, r *dns.Msg) {
				m := new(dns.Msg)
				m.SetRcode(r, dns.RcodeServerFailure)
				_ = w.WriteMsg(m)
			}).addr
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			port := freePort(t)
			conf := substituteOnce(t, kubeadmCorefile, ".:53 {", fmt.Sprintf(".:%d {", port))
			conf = substituteOnce(t, conf, "/etc/resolv.conf", tc.upstream(t))
			conf = substituteOnce(t, conf, "    health {", "    health "+listenAddr(t)+" {")
			conf = substituteOnce(t, conf, "    ready\n", "    ready "+listenAddr(t)+"\n")
			conf = substituteOnce(t, conf, "prometheus :9153", "prometheus "+listenAddr(t))
			conf = substituteOnce(t, conf, "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n",
				"    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       manifests "+copyExamples(t, dir)+"\n")
			p := start(t, "serve", "--conf", writeFile(t, dir, "Corefile", conf))
			server := fmt.Sprintf("127.0.0.1:%d", port)
			waitAnswer(t, server, "udp", "dns-version.cluster.local", dns.TypeTXT, 15*time.Second, func(m *dns.Msg) bool { return m.Rcode == dns.RcodeSuccess })
			// Old behaviour: the third unanswered probe (about 9 s in) was
			// taken for a loop and the server exited. Watch past that.
			deadline := time.Now().Add(15 * time.Second)
			for time.Now().Before(deadline) {
				select {
				case <-p.done:
					t.Fatalf("server exited:\n%s", p.output())
				default:
				}
				m, err := query(server, "udp", "service-clusterip.dev.svc.cluster.local", dns.TypeA)
				if err != nil || m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
					t.Fatalf("cluster name not answered: %v %v", m, err)
				}
				time.Sleep(500 * time.Millisecond)
			}
			if strings.Contains(p.output(), "forwarding loop") {
				t.Fatalf("a loop reported:\n%s", p.output())
			}
		})
	}
}

// startBlackHole is an upstream on loopback that takes queries over UDP and
// TCP and never answers; it returns its address.
func startBlackHole(t *testing.T) string {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			continue
		}
		var conns sync.WaitGroup
		go func() {
			buf := make([]byte, 512)
			for {
				if _, _, err := pc.ReadFrom(buf); err != nil {
					return
				}
			}
		}()
		var held []net.Conn
		var mu sync.Mutex
		conns.Go(func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}
		})
		t.Cleanup(func() {
			pc.Close()
			ln.Close()
			conns.Wait()
			mu.Lock()
			for _, c := range held {
				c.Close()
			}
			mu.Unlock()
		})
		return pc.LocalAddr().String()
	}
	t.Fatal("no free port pair for the black hole")
	return ""
}
