package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var buildOnce struct {
	sync.Once
	path string
	err  error
}

// clusterdnsBinary builds the real binary once per test run.
func clusterdnsBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "clusterdns-e2e-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "clusterdns")
		cmd := exec.Command("go", "build", "-o", buildOnce.path, "./cmd/clusterdns")
		cmd.Dir = repoRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// freePort finds a port free on 127.0.0.1 for both UDP and TCP.
func freePort(t testing.TB) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// process is a running clusterdns with its combined output captured.
type process struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{} // closed once the process ended and its output was read
}

// Write keeps output as it arrives; it is the pipe copier's destination.
func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// outputDrainWait bounds the wait for the output pipe's end after the process
// exited: a child it started could still hold the pipe open.
const outputDrainWait = 5 * time.Second

// start runs the binary with args; it is killed when the test ends.
func start(t testing.TB, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(clusterdnsBinary(t), args...), done: make(chan struct{})}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	drained := make(chan struct{})
	go func() {
		_, _ = io.Copy(p, pr)
		pr.Close()
		close(drained)
	}()
	go func() {
		_ = p.cmd.Wait()
		// The last lines may still be in the pipe when Wait returns; a test
		// reading the output after the exit must see them.
		select {
		case <-drained:
		case <-time.After(outputDrainWait):
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("clusterdns output:\n%s", p.output())
		}
	})
	return p
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitOutput waits (at most timeout) for the output to contain s.
func (p *process) waitOutput(t testing.TB, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.output(), s) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("output never contained %q", s)
}

// query asks server one question over udp or tcp.
func query(server, network, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, server)
	return r, err
}

// waitAnswer polls (boundedly) until the answer to name satisfies ok; it
// returns how long that took.
func waitAnswer(t testing.TB, server, network, name string, qtype uint16, timeout time.Duration, ok func(*dns.Msg) bool) time.Duration {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last *dns.Msg
	var lastErr error
	for ctx.Err() == nil {
		last, lastErr = query(server, network, name, qtype)
		if lastErr == nil && ok(last) {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s %s: no satisfying answer within %s; last %v err %v", name, dns.TypeToString[qtype], timeout, last, lastErr)
	return 0
}

// answers renders the answer section's data fields, for comparisons.
func answers(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		f := strings.Fields(rr.String())
		out = append(out, strings.Join(f[3:], " "))
	}
	return out
}
