package nftables

import (
	"bytes"
	"context"
	"os/exec"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/e2e/netns"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
)

// FuzzScript renders small random clusters (proxytest.FromBytes) into the
// script a first sync applies and has nft check it (-c: evaluated against
// the kernel, never committed) inside a network namespace of the target's
// own. Whatever the Services, names and options, the renderer writes a
// script the real nft accepts.
//
// It needs root, ip and nft, as CI has: netns.Require skips it under -short
// and fails it otherwise.
func FuzzScript(f *testing.F) {
	netns.Require(f, "nft")
	ns := netns.New(f, "cdns-fznft-")
	f.Add([]byte{})
	f.Add([]byte("\x03\x02\x00\x03\x00\x01\x00\x00\x00\x35\x13\xa5\x02\x02\x01\x02\x03\x04\x05\x06"))
	f.Fuzz(func(t *testing.T, data []byte) {
		services, routing := pt.FromBytes(data)
		m := pt.Model(nil, services...)
		var script bytes.Buffer
		if err := New(Config{Runner: &RecordingRunner{}, Routing: routing}).DryRun(m, &script); err != nil {
			t.Fatal(err)
		}
		var out []byte
		// Started from a thread inside the namespace, nft runs there too,
		// without the cost of ip netns exec.
		err := ns.Do(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "nft", "-c", "-f", "-")
			cmd.Stdin = bytes.NewReader(script.Bytes())
			var err error
			out, err = cmd.CombinedOutput()
			return err
		})
		if err != nil {
			t.Fatalf("nft -c rejects the script for %+v: %v\n%s\n%s", services, err, out, script.Bytes())
		}
	})
}
