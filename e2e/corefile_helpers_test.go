package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/e2e/internal/promtext"
)

// upstream is a second DNS server on loopback that clusterdns forwards to.
// Its handler may be swapped while it runs.
type upstream struct {
	addr     string
	udp, tcp *dns.Server
	queries  atomic.Int64
	handler  atomic.Pointer[dns.HandlerFunc]
	mu       sync.Mutex // protects names
	names    map[string]int
}

// startUpstream serves handle on addr ("127.0.0.1:0" picks a port); it stops
// when the test ends.
func startUpstream(t *testing.T, addr string, handle dns.HandlerFunc) *upstream {
	t.Helper()
	var pc net.PacketConn
	var ln net.Listener
	// With port 0 the UDP port the kernel picks may be taken for TCP: try a few.
	for i := 0; ; i++ {
		var err error
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			t.Fatalf("upstream: %v", err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
		if i >= 20 || !strings.HasSuffix(addr, ":0") {
			t.Fatalf("upstream: %v", err)
		}
	}
	u := &upstream{addr: pc.LocalAddr().String(), names: make(map[string]int)}
	u.handler.Store(&handle)
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		u.queries.Add(1)
		u.mu.Lock()
		u.names[strings.ToLower(r.Question[0].Name)]++
		u.mu.Unlock()
		(*u.handler.Load())(w, r)
	})
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	u.udp = &dns.Server{PacketConn: pc, Handler: h, NotifyStartedFunc: notify}
	u.tcp = &dns.Server{Listener: ln, Handler: h, NotifyStartedFunc: notify}
	go func() { _ = u.udp.ActivateAndServe() }()
	go func() { _ = u.tcp.ActivateAndServe() }()
	<-started
	<-started
	t.Cleanup(func() { _ = u.udp.Shutdown(); _ = u.tcp.Shutdown() })
	return u
}

func (u *upstream) setHandler(h dns.HandlerFunc) { u.handler.Store(&h) }

// asked is how often the upstream saw name.
func (u *upstream) asked(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.names[dns.Fqdn(strings.ToLower(name))]
}

// world answers like a small slice of the Internet: A records for a few
// names, NXDOMAIN with an SOA for the rest, PTR for one reverse name.
func world(w dns.ResponseWriter, r *dns.Msg) {
	q := r.Question[0]
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	name := strings.ToLower(q.Name)
	addrs := map[string]string{
		"example.com.":   "192.0.2.10",
		"www.baidu.com.": "192.0.2.20",
		"www.other.org.": "192.0.2.30",
	}
	switch {
	case q.Qtype == dns.TypeA && addrs[name] != "":
		rr, _ := dns.NewRR(q.Name + " 300 IN A " + addrs[name])
		m.Answer = []dns.RR{rr}
	case q.Qtype == dns.TypePTR && name == "4.3.2.1.in-addr.arpa.":
		rr, _ := dns.NewRR(q.Name + " 300 IN PTR one.two.example.")
		m.Answer = []dns.RR{rr}
	case addrs[name] != "":
		// NODATA for other types of a known name.
		m.Ns = []dns.RR{worldSOA()}
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = []dns.RR{worldSOA()}
	}
	_ = w.WriteMsg(m)
}

func worldSOA() dns.RR {
	rr, _ := dns.NewRR(". 3600 IN SOA a.root-servers.net. nstld.verisign-grs.com. 2026010100 1800 900 604800 60")
	return rr
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// copyExamples copies the example manifests into dir/manifests.
func copyExamples(t *testing.T, dir string) string {
	t.Helper()
	manifests := filepath.Join(dir, "manifests")
	if err := os.CopyFS(manifests, os.DirFS(filepath.Join(repoRoot(), "deploy", "examples"))); err != nil {
		t.Fatal(err)
	}
	return manifests
}

// httpGet fetches a URL and returns the status and body.
func httpGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitHTTP polls url until it answers want.
func waitHTTP(t *testing.T, url string, want int) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body, err := httpGet(url)
		if err == nil && code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %q %v; want %d", url, code, body, err, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricValue sums the samples of a series whose labels include every
// key="value" given, or returns -1 when there is none.
func metricValue(body, name string, labels ...string) float64 {
	if v, ok := promtext.Value(body, name, labels...); ok {
		return v
	}
	return -1
}

// stop sends SIGTERM and waits (boundedly) for the exit; it returns the exit
// code.
func (p *process) stop(t *testing.T, timeout time.Duration) int {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("no exit %s after SIGTERM", timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// exited waits (boundedly) for the process to end by itself.
func (p *process) exited(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("still running after %s", timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// listenAddr is a free 127.0.0.1 address for an HTTP endpoint.
func listenAddr(t *testing.T) string {
	return fmt.Sprintf("127.0.0.1:%d", freePort(t))
}
