// Package testenv decides, in one place, what a test does when it needs more
// than Go and loopback sockets: root, a network namespace, a VM, a real API
// server, or an external tool (ip, nft, iptables, dig, etcd, dnsperf, qemu).
//
// There are two ways to run the tests. `make unit` (go test -short) is for a
// contributor without root on a machine with nothing installed: every such
// test is skipped there, whether or not the machine could run it, so the run
// is quick and the same everywhere. `make test` (no -short) is CI's, as root
// after installing and building everything: there a missing prerequisite
// fails the test, because a skip would look like a pass.
package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Need is one thing a test needs beyond Go and loopback sockets.
type Need struct {
	// What names it in messages: "root", "nft", "the e2e VM".
	What string
	// Check reports why it is missing, or nil when it is there.
	Check func() error
}

// Root is the need for root, for network namespaces and kernel rules.
func Root() Need {
	return Need{What: "root", Check: func() error {
		if os.Geteuid() != 0 {
			return errors.New("not running as root")
		}
		return nil
	}}
}

// Tools is the need for programs in PATH.
func Tools(names ...string) Need {
	return Need{What: strings.Join(names, ", "), Check: func() error {
		var missing []string
		for _, name := range names {
			if _, err := exec.LookPath(name); err != nil {
				missing = append(missing, name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("not in PATH: %s", strings.Join(missing, ", "))
		}
		return nil
	}}
}

// Require is called first by every test that needs something beyond Go and
// loopback sockets. Under -short it skips the test. Otherwise it fails the
// test, naming everything that is missing, unless every need is met.
func Require(t testing.TB, needs ...Need) {
	t.Helper()
	whats := make([]string, len(needs))
	for i, n := range needs {
		whats[i] = n.What
	}
	if testing.Short() {
		t.Skipf("needs %s: left out under -short", strings.Join(whats, ", "))
	}
	var missing []string
	for _, n := range needs {
		if err := n.Check(); err != nil {
			missing = append(missing, fmt.Sprintf("%s: %v", n.What, err))
		}
	}
	if len(missing) > 0 {
		t.Fatalf("missing %s. `make test` installs and builds what the tests need and runs them as root; "+
			"`make unit` (go test -short) leaves such tests out", strings.Join(missing, "; "))
	}
}
