package server

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterdns/clusterdns/resolver"
)

// Each directive this file covers parses the forms CoreDNS documents and
// rejects the rest with FILE:LINE: directive: message.
func TestParseDirectives(t *testing.T) {
	dir := t.TempDir()
	resolvConf := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolvConf, []byte("search example.\nnameserver 127.0.0.1\nnameserver ::1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.conf")
	if err := os.WriteFile(empty, []byte("# nothing\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	block := func(body string) string { return ".:1053 {\n" + body + "\n}\n" }
	tests := []struct {
		name, input, err string
	}{
		// forward
		{"forward addresses", block(" forward . 127.0.0.1 127.0.0.2:5353 dns://[::1]:53"), ""},
		{"forward resolv.conf", block(" forward . " + resolvConf), ""},
		{"forward every option", block(" forward . 127.0.0.1 {\n  except a.example b.example\n  force_tcp\n  expire 5s\n  max_fails 3\n  health_check 1s no_rec domain example.org\n  policy round_robin\n  max_concurrent 1000\n }"), ""},
		{"forward no upstream", block(" forward ."), "Corefile:2: forward: needs FROM and at least one TO"},
		{"forward bad upstream", block(" forward . not-an-ip"), `Corefile:2: forward: upstream "not-an-ip" is neither an IP address nor a readable resolv.conf`},
		{"forward empty resolv.conf", block(" forward . " + empty), "lists no nameserver"},
		{"forward tls", block(" forward . tls://127.0.0.1"), "only plain DNS"},
		{"forward bad policy", block(" forward . 127.0.0.1 {\n  policy fastest\n }"), `Corefile:3: forward: policy "fastest": want random, round_robin or sequential`},
		{"forward bad max_concurrent", block(" forward . 127.0.0.1 {\n  max_concurrent lots\n }"), `Corefile:3: forward: max_concurrent "lots"`},
		{"forward unknown option", block(" forward . 127.0.0.1 {\n  bogus\n }"), `Corefile:3: forward: unknown property "bogus"`},
		{"forward both transports", block(" forward . 127.0.0.1 {\n  force_tcp\n  prefer_udp\n }"), "force_tcp and prefer_udp cannot both be set"},
		{"forward twice", block(" forward . 127.0.0.1\n forward . 127.0.0.2"), "given more than once"},
		// cache
		{"cache bare", block(" cache"), ""},
		{"cache ttl and zones", block(" cache 30 example.org"), ""},
		{"cache every option", block(" cache 30 {\n  success 5000 60 10\n  denial 2000 20 1\n  prefetch 10 1m 20%\n  serve_stale 1h verify\n  disable success cluster.local\n  disable denial cluster.local\n }"), ""},
		{"cache zero ttl", block(" cache 0"), `Corefile:2: cache: ttl "0" must be positive`},
		{"cache bad capacity", block(" cache {\n  success many\n }"), `Corefile:3: cache: success: capacity "many"`},
		{"cache min above max", block(" cache {\n  success 10 5 10\n }"), "minimum ttl 10s is above the maximum 5s"},
		{"cache bad disable", block(" cache {\n  disable everything\n }"), `Corefile:3: cache: disable "everything": want success or denial`},
		{"cache bad stale mode", block(" cache {\n  serve_stale 1h sometimes\n }"), `refresh mode "sometimes"`},
		{"cache bad prefetch percentage", block(" cache {\n  prefetch 2 1m 95%\n }"), "percentage"},
		// health, ready, prometheus
		{"health default", block(" health"), ""},
		{"health lameduck", block(" health :8091 {\n  lameduck 5s\n }"), ""},
		{"health bad lameduck", block(" health {\n  lameduck soon\n }"), `Corefile:3: health: lameduck "soon" is not a duration`},
		{"health bad address", block(" health localhost"), "Corefile:2: health: address"},
		{"ready with address", block(" ready 127.0.0.1:8182"), ""},
		{"ready two addresses", block(" ready :1 :2"), "takes at most one address"},
		{"prometheus default", block(" prometheus"), ""},
		{"prometheus property", block(" prometheus {\n  bogus\n }"), `Corefile:3: prometheus: unknown property "bogus"`},
		// pprof
		{"pprof default", block(" pprof"), ""},
		{"pprof block", block(" pprof 127.0.0.1:6060 {\n  block 100\n }"), ""},
		{"pprof bad rate", block(" pprof {\n  block never\n }"), `Corefile:3: pprof: block rate "never"`},
		{"pprof unknown property", block(" pprof {\n  mutex\n }"), `Corefile:3: pprof: unknown property "mutex"`},
		// reload, loop, loadbalance, autopath
		{"reload default", block(" reload"), ""},
		{"reload interval jitter", block(" reload 10s 5s"), ""},
		{"reload too often", block(" reload 1s"), "Corefile:2: reload: interval \"1s\" must be a duration of at least 2s"},
		{"reload jitter too large", block(" reload 10s 6s"), "jitter 6s must be at most half the interval"},
		{"loop", block(" loop"), ""},
		{"loop argument", block(" loop now"), `Corefile:2: loop: unexpected argument "now"`},
		{"loadbalance", block(" loadbalance round_robin"), ""},
		{"loadbalance weighted", block(" loadbalance weighted /w"), "only the round_robin policy"},
		{"autopath", block(" autopath @kubernetes\n kubernetes cluster.local {\n  manifests /m\n  pods verified\n }"), ""},
		{"autopath from a file", block(" autopath /etc/resolv.conf"), "search path source \"/etc/resolv.conf\" is not supported"},
		// timeouts
		{"timeouts every option", block(" timeouts {\n  read 10s\n  write 20s\n  idle 1m\n  maxtcpqueries 128\n  max_connections 5000\n }"), ""},
		{"timeouts unlimited queries", block(" timeouts {\n  maxtcpqueries -1\n }"), ""},
		{"timeouts empty", block(" timeouts"), "Corefile:2: timeouts: give at least one of"},
		{"timeouts empty block", block(" timeouts {\n }"), "Corefile:2: timeouts: give at least one of"},
		{"timeouts argument", block(" timeouts 5s"), `Corefile:2: timeouts: unexpected argument "5s"`},
		{"timeouts too short", block(" timeouts {\n  read 500ms\n }"), `Corefile:3: timeouts: read "500ms" must be a duration from 1s to 24h0m0s`},
		{"timeouts too long", block(" timeouts {\n  idle 25h\n }"), `Corefile:3: timeouts: idle "25h" must be a duration`},
		{"timeouts not a duration", block(" timeouts {\n  write soon\n }"), `Corefile:3: timeouts: write "soon"`},
		{"timeouts no value", block(" timeouts {\n  idle\n }"), "Corefile:3: timeouts: idle needs one value, got 0"},
		{"timeouts zero queries", block(" timeouts {\n  maxtcpqueries 0\n }"), `Corefile:3: timeouts: maxtcpqueries "0" must be a positive number, or -1`},
		{"timeouts bad limit", block(" timeouts {\n  max_connections none\n }"), `Corefile:3: timeouts: max_connections "none" must be a positive number`},
		{"timeouts unknown property", block(" timeouts {\n  connect 1s\n }"), `Corefile:3: timeouts: unknown property "connect"`},
		{"timeouts twice", block(" timeouts {\n  read 5s\n }\n timeouts {\n  idle 5s\n }"), "Corefile:5: timeouts: given more than once"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("Corefile", []byte(tc.input))
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			}
		})
	}
}

func TestUpstreamAddrs(t *testing.T) {
	dir := t.TempDir()
	rc := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver 127.0.0.53\nnameserver fd00::53\noptions edns0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"127.0.0.1":           "127.0.0.1:53",
		"127.0.0.1:5353":      "127.0.0.1:5353",
		"dns://127.0.0.1":     "127.0.0.1:53",
		"dns://127.0.0.1:553": "127.0.0.1:553",
		"::1":                 "[::1]:53",
		"[::1]:5353":          "[::1]:5353",
		rc:                    "127.0.0.53:53 [fd00::53]:53",
	} {
		got, err := upstreamAddrs(in)
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("upstreamAddrs(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
}

func TestReloadAndLameduckSettings(t *testing.T) {
	cfg, err := ParseConfig("Corefile", []byte(".:1053 {\n reload 10s 3s\n health 127.0.0.1:0 {\n  lameduck 4s\n }\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	shared := testShared()
	rt, err := Build(cfg, shared)
	if err != nil {
		t.Fatal(err)
	}
	for _, hook := range rt.onStart {
		if err := hook(rt); err != nil {
			t.Fatal(err)
		}
	}
	if rt.reload != 10*time.Second || rt.reloadJitter != 3*time.Second || rt.lameduck != 4*time.Second {
		t.Fatalf("reload %v jitter %v lameduck %v", rt.reload, rt.reloadJitter, rt.lameduck)
	}
}

// The timeouts reach each listener; blocks sharing one get the most
// generous value of each, and what no block set keeps its default.
func TestTimeoutsPerListener(t *testing.T) {
	cfg, err := ParseConfig("Corefile", []byte(`cluster.local:1053 {
 timeouts {
  read 5s
  max_connections 50
 }
}
.:1053 {
 timeouts {
  read 2s
  idle 30s
  maxtcpqueries 10
 }
}
.:1054 {
 errors
}
a.example:1055 {
 timeouts {
  maxtcpqueries 10
  idle 2s
 }
}
b.example:1055 {
 timeouts {
  maxtcpqueries 20
 }
}
`))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := Build(cfg, testShared())
	if err != nil {
		t.Fatal(err)
	}
	// Each block's unset values are the defaults, and the most generous
	// value wins: the first block's unlimited queries and default
	// connection limit, the second block's idle timeout, the first's read.
	want := map[string]tcpLimits{
		":1053": {read: 5 * time.Second, write: defaultTCPWrite, idle: 30 * time.Second, maxConns: defaultTCPLimits().maxConns, maxQueries: 0},
		":1054": defaultTCPLimits(),
		// Both limit queries: the larger wins; the idle timeout the second
		// left alone is the default, longer than the first's.
		":1055": {read: defaultTCPLimits().read, write: defaultTCPWrite, idle: defaultTCPLimits().idle, maxConns: defaultTCPLimits().maxConns, maxQueries: 20},
	}
	for addr, w := range want {
		if got := rt.tcp[addr]; got != w {
			t.Errorf("%s: %+v; want %+v", addr, got, w)
		}
	}
}

func TestForwardOptionsReachTheHandler(t *testing.T) {
	cfg, err := ParseConfig("Corefile", []byte(".:1053 {\n forward example.org 127.0.0.1:5300 127.0.0.2 {\n  policy sequential\n }\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := Build(cfg, testShared())
	if err != nil {
		t.Fatal(err)
	}
	h := rt.routers[":1053"].handler("www.example.org.")
	f, ok := h.(*resolver.Forward)
	if !ok {
		t.Fatalf("chain starts with %T, want the forwarder", h)
	}
	if got := strings.Join(f.Upstreams(), " "); got != "127.0.0.1:5300 127.0.0.2:53" {
		t.Fatalf("upstreams %s", got)
	}
	f.Close()
}

func testShared() Shared {
	reg := prometheus.NewRegistry()
	return Shared{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: reg, Metrics: NewMetrics(reg)}
}

func TestAutopathNeedsKubernetes(t *testing.T) {
	cfg, err := ParseConfig("Corefile", []byte(".:1053 {\n autopath @kubernetes\n forward . 127.0.0.1\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	rt, err := Build(cfg, testShared())
	if err != nil {
		t.Fatal(err)
	}
	var hookErr error
	for _, hook := range rt.onStart {
		if err := hook(rt); err != nil {
			hookErr = err
		}
	}
	if hookErr == nil || !strings.Contains(hookErr.Error(), "Corefile:2: autopath: @kubernetes needs a kubernetes directive") {
		t.Fatalf("error %v; want the autopath line to be named", hookErr)
	}
}
