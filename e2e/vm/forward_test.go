package vm

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestForwardReachesOnlyItsPort gives the guest one forwarded port and checks
// that several connections through it each reach the host's listener both
// ways, and that neither another port on the host's loopback nor another
// port on the forward's address can be reached.
func TestForwardReachesOnlyItsPort(t *testing.T) {
	assets := requireVM(t)
	// The forwarded listener answers each line with its connection's number.
	forwarded := listen(t, func(n int, c net.Conn) {
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil {
			fmt.Fprintf(c, "host got %q on connection %d\n", strings.TrimSpace(line), n)
		}
	})
	// The other listener must never see a connection.
	var otherAccepts atomic.Int32
	other := listen(t, func(int, net.Conn) { otherAccepts.Add(1) })
	otherPort := other.Addr().(*net.TCPAddr).Port
	guestHost, _, _ := strings.Cut(ForwardAddr, ":")
	_, guestPort, _ := strings.Cut(ForwardAddr, ":")

	// nc gets its input from a subshell that stays open long enough for the
	// answer to come back; the port that must fail gets a short -w.
	script := fmt.Sprintf(`for i in 1 2 3; do (echo ping-$i; sleep 2) | nc -w 5 %[1]s %[2]s; done
ip route
for target in "10.0.2.2 %[3]d" "%[1]s %[3]d" "10.0.2.3 53"; do
	if (echo x; sleep 1) | nc -w 3 $target >/dev/null 2>&1; then echo "reached $target"; else echo "unreachable $target"; fi
done
`, guestHost, guestPort, otherPort)
	out, err := assets.Run(t.Context(), Spec{Script: script, Forward: forwarded.Addr().String(), Timeout: 4 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot to power-off %v:\n%s", out.Elapsed.Round(time.Millisecond), out.Result)
	for i := 1; i <= 3; i++ {
		if want := fmt.Sprintf("host got \"ping-%d\" on connection %d", i, i); !strings.Contains(out.Result, want) {
			t.Errorf("result lacks %q", want)
		}
	}
	for _, target := range []string{fmt.Sprintf("10.0.2.2 %d", otherPort), fmt.Sprintf("%s %d", guestHost, otherPort), "10.0.2.3 53"} {
		if !strings.Contains(out.Result, "unreachable "+target) {
			t.Errorf("the guest reached %s, or did not try", target)
		}
	}
	if strings.Contains(out.Result, "default") {
		t.Errorf("the guest has a default route")
	}
	if n := otherAccepts.Load(); n != 0 {
		t.Errorf("the other host port accepted %d connections", n)
	}
}

func TestForwardRejectsNonLoopback(t *testing.T) {
	assets := requireVM(t)
	for _, addr := range []string{"192.0.2.1:80", "localhost:80", "127.0.0.1"} {
		if _, err := assets.Run(t.Context(), Spec{Script: "true\n", Forward: addr}); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("Forward %q: error %v, want a refusal", addr, err)
		}
	}
}

// listen serves connections on the host's loopback with serve, numbering
// them from 1, until the test ends.
func listen(t *testing.T, serve func(n int, c net.Conn)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for n := 1; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				serve(n, c)
			})
		}
	})
	return ln
}
