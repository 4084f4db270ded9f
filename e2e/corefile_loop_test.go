package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
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
