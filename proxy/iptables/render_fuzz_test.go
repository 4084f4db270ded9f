package iptables

import (
	"bytes"
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/e2e/netns"
	"github.com/clusterdns/clusterdns/proxy"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
)

// FuzzRestoreInput renders small random clusters (proxytest.FromBytes) and
// has iptables-restore and ip6tables-restore check each family's input
// (--test: parsed and built, never committed), inside a network namespace
// of the target's own. Whatever the Services, names and options, the
// renderer writes input the real tools accept.
//
// It needs root and the tools, as CI has: netns.Require skips it under
// -short and fails it otherwise.
func FuzzRestoreInput(f *testing.F) {
	netns.Require(f, "iptables-restore", "ip6tables-restore")
	ns := netns.New(f, "cdns-fzipt-")
	f.Add([]byte{})
	f.Add([]byte("\x01\x00\x00\x03\x00\x00\x00\x00\x00\x50\x1f\x90\x00\x02\x00\x01\x02\x03\x04\x05\x06"))
	f.Fuzz(func(t *testing.T, data []byte) {
		services, routing := pt.FromBytes(data)
		m := pt.Model(nil, services...)
		for _, family := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
			var input bytes.Buffer
			b := New(Config{Runner: NewFakeRunner(), Families: []proxy.Family{family}, Routing: routing})
			if err := b.DryRun(m, &input); err != nil {
				t.Fatal(err)
			}
			tool := "iptables-restore"
			if family == proxy.IPv6 {
				tool = "ip6tables-restore"
			}
			var out []byte
			// Started from a thread inside the namespace, the tool runs
			// there too, without the cost of ip netns exec.
			err := ns.Do(func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, tool, "--test", "--noflush")
				cmd.Stdin = bytes.NewReader(input.Bytes())
				var err error
				out, err = cmd.CombinedOutput()
				return err
			})
			if err != nil {
				t.Fatalf("%s --test rejects the input for %+v: %v\n%s%s\n%s", tool, services, err, out, failingLine(string(out), input.Bytes()), input.Bytes())
			}
		}
	})
}
