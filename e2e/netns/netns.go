// Package netns builds network-namespace topologies for end-to-end tests:
// namespaces with unique names, veth links between them, processes started
// inside them, and code run in them from the test process itself.
//
// Everything it creates is removed by t.Cleanup, processes first, even when
// the test fails. It never changes the test machine's own namespace: every
// command that configures a link, a route or a sysctl runs inside a namespace
// this package created. It needs root and the ip tool (iproute2).
package netns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/clusterdns/clusterdns/internal/testenv"
)

// commandTimeout bounds every configuration command.
const commandTimeout = 20 * time.Second

// Require is called first by every test that creates namespaces. It skips
// the test under -short and otherwise fails it unless it runs as root with
// the ip tool and the given tools present (see internal/testenv): CI runs
// these tests as root with everything installed.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	testenv.Require(t, testenv.Root(), testenv.Tools(append([]string{"ip"}, tools...)...))
}

// RunID returns a short random string to make names unique per test run.
func RunID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NS is a network namespace created by a test.
type NS struct {
	Name string
	t    testing.TB
}

// New creates a namespace called prefix plus a random suffix, with loopback
// up. It is deleted when the test ends.
func New(t testing.TB, prefix string) *NS {
	t.Helper()
	name := prefix + RunID()
	if len(name) > 32 {
		t.Fatalf("netns: name %q too long", name)
	}
	if out, err := run(context.Background(), "ip", "netns", "add", name); err != nil {
		t.Fatalf("netns: add %s: %v\n%s", name, err, out)
	}
	n := &NS{Name: name, t: t}
	t.Cleanup(func() {
		if out, err := run(context.Background(), "ip", "netns", "del", name); err != nil {
			t.Errorf("netns: delete %s: %v\n%s", name, err, out)
		}
	})
	n.MustRun("ip", "link", "set", "lo", "up")
	return n
}

func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}

// Run runs a command inside the namespace and returns its combined output.
func (n *NS) Run(ctx context.Context, args ...string) ([]byte, error) {
	return run(ctx, "ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// MustRun runs a command inside the namespace and fails the test if it fails.
func (n *NS) MustRun(args ...string) string {
	n.t.Helper()
	out, err := n.Run(context.Background(), args...)
	if err != nil {
		n.t.Fatalf("netns %s: %s: %v\n%s", n.Name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// SetSysctl writes a /proc/sys value inside the namespace, e.g.
// SetSysctl("net/ipv4/ip_forward", "1").
func (n *NS) SetSysctl(key, value string) {
	n.t.Helper()
	n.MustRun("sh", "-c", fmt.Sprintf("echo %s > /proc/sys/%s", value, key))
}

// Process is a command running inside a namespace.
type Process struct {
	Cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
	err  error
}

type lockedWriter struct{ p *Process }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.out.Write(b)
}

// Start starts a long-running command inside the namespace. It is killed
// (its whole process group) when the test ends, before the namespace goes.
func (n *NS) Start(args ...string) *Process {
	n.t.Helper()
	p := &Process{done: make(chan struct{})}
	p.Cmd = exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
	p.Cmd.Stdout = lockedWriter{p}
	p.Cmd.Stderr = lockedWriter{p}
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.Cmd.Start(); err != nil {
		n.t.Fatalf("netns %s: start %s: %v", n.Name, strings.Join(args, " "), err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	n.t.Cleanup(func() { p.Stop() })
	return p
}

// Output returns what the process wrote so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Exited reports whether the process has ended, and its error.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL after 5 seconds,
// and waits for the process. It returns the process's exit error.
func (p *Process) Stop() error {
	if exited, err := p.Exited(); exited {
		return err
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	return p.err
}

// Do runs fn on an OS thread switched into the namespace. Sockets fn opens
// belong to the namespace and keep working after Do returns.
func (n *NS) Do(fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: current namespace: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: open %s: %w", n.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("netns: enter %s: %w", n.Name, err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread is stuck in the test namespace; leaving it locked makes
		// the runtime end the thread when this goroutine exits.
		return errors.Join(fnErr, fmt.Errorf("netns: leave %s: %w", n.Name, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Dial connects from inside the namespace.
func (n *NS) Dial(network, address string, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	err := n.Do(func() error {
		var err error
		conn, err = net.DialTimeout(network, address, timeout)
		return err
	})
	return conn, err
}

// ListenUDP opens a UDP socket inside the namespace.
func (n *NS) ListenUDP(address string) (*net.UDPConn, error) {
	var conn *net.UDPConn
	err := n.Do(func() error {
		addr, err := net.ResolveUDPAddr("udp", address)
		if err != nil {
			return err
		}
		conn, err = net.ListenUDP("udp", addr)
		return err
	})
	return conn, err
}

// Veth links two namespaces with a veth pair named aName in a and bName in b.
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	// Create both ends inside a, then move one: no link ever exists in the
	// test machine's own namespace.
	a.MustRun("ip", "link", "add", aName, "type", "veth", "peer", "name", bName)
	a.MustRun("ip", "link", "set", bName, "netns", b.Name)
	a.MustRun("ip", "link", "set", aName, "up")
	b.MustRun("ip", "link", "set", bName, "up")
}
