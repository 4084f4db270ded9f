package server

import (
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/zone/dnsindex"
)

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name  string
		input string
		err   string // "" means it must parse
	}{
		{name: "minimal", input: ".:1053 {\n  kubernetes cluster.local {\n    manifests /tmp\n  }\n}\n"},
		{name: "unknown directive", input: ".:53 {\n  errors\n  bogus\n}\n", err: "Corefile:3: Unknown directive 'bogus'"},
		{name: "unknown kubernetes property", input: ".:53 {\n kubernetes cluster.local {\n  manifests /m\n  bogus 1\n }\n}\n",
			err: `Corefile:4: kubernetes: unknown property "bogus"`},
		{name: "bad pods mode", input: ".:53 {\n kubernetes cluster.local {\n  manifests /m\n  pods maybe\n }\n}\n",
			err: `Corefile:4: kubernetes: pods "maybe": want disabled, insecure or verified`},
		{name: "ttl too large", input: ".:53 {\n kubernetes cluster.local {\n  manifests /m\n  ttl 3601\n }\n}\n",
			err: `Corefile:4: kubernetes: ttl "3601" must be a whole number of seconds from 0 to 3600`},
		{name: "ttl not a number", input: ".:53 {\n kubernetes cluster.local {\n  manifests /m\n  ttl five\n }\n}\n",
			err: `Corefile:4: kubernetes: ttl "five"`},
		{name: "manifests without a path", input: ".:53 {\n kubernetes {\n  manifests\n }\n}\n",
			err: "Corefile:3: kubernetes: manifests: wrong number of arguments (0)"},
		{name: "ignore something else", input: ".:53 {\n kubernetes {\n  manifests /m\n  ignore everything\n }\n}\n",
			err: `Corefile:4: kubernetes: ignore "everything": only empty_service is known`},
		{name: "zone outside the block", input: "cluster.local:53 {\n kubernetes example.org {\n  manifests /m\n }\n}\n",
			err: "Corefile:2: kubernetes: zone example.org. is not inside this server block's zones"},
		{name: "kubernetes twice", input: ".:53 {\n kubernetes {\n  manifests /m\n }\n kubernetes {\n  manifests /m\n }\n}\n",
			err: "given more than once"},
		{name: "manifests with kubeconfig", input: ".:53 {\n kubernetes {\n  manifests /m\n  kubeconfig /k\n }\n}\n",
			err: "manifests cannot be combined"},
		{name: "bad startup_timeout", input: ".:53 {\n kubernetes {\n  manifests /m\n  startup_timeout soon\n }\n}\n",
			err: `Corefile:4: kubernetes: startup_timeout "soon" is not a positive duration`},
		{name: "bad port", input: ".:99999 {\n errors\n}\n", err: `bad port "99999"`},
		{name: "same zone twice on one port", input: ".:53 {\n errors\n}\n.:53 {\n log\n}\n", err: "zone . on port 53 is already served"},
		{name: "bind needs an address", input: ".:53 {\n bind\n}\n", err: "Corefile:2: bind: needs at least one address"},
		{name: "bind to nonsense", input: ".:53 {\n bind not-an-interface-xyz\n}\n", err: `Corefile:2: bind: "not-an-interface-xyz" is neither`},
		{name: "errors takes no argument", input: ".:53 {\n errors loud\n}\n", err: `Corefile:2: errors: unexpected argument "loud"`},
		{name: "newline inside an unknown directive", input: ".:53 {\n \"bo\ngus\"\n}\n", err: "Corefile:2: Unknown directive 'bo\ngus'"},
		{name: "bad port names the block's line", input: "# comment\n\n.:99999 {\n errors\n}\n", err: `Corefile:3: server block ".:99999": bad port "99999"`},
		{name: "unclosed block", input: ".:53 {\n errors\n", err: "Corefile:"},
		{name: "empty file", input: "", err: "no server blocks"},
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

func TestParseKubernetesOptions(t *testing.T) {
	cfg, err := ParseConfig("/etc/coredns/Corefile", []byte(`cluster.local:1053 in-addr.arpa:1053 {
    bind 127.0.0.1 ::1
    kubernetes cluster.local in-addr.arpa {
        manifests examples
        pods verified
        ttl 30
        fallthrough in-addr.arpa
        namespaces dev Prod
        noendpoints
        endpoint_pod_names
        ignore empty_service
    }
}`))
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.Blocks[0]
	if b.Port != "1053" || strings.Join(b.Zones, " ") != "cluster.local. in-addr.arpa." || strings.Join(b.Bind, " ") != "127.0.0.1 ::1" {
		t.Fatalf("block: port %q zones %q bind %q", b.Port, b.Zones, b.Bind)
	}
	h := b.services[0].(*kubernetesHolder)
	o := h.cfg.index
	if o.TTL != 30 || o.Pods != dnsindex.PodsVerified || !o.NoEndpoints || !o.EndpointPodNames || !o.IgnoreEmptyService ||
		!o.Namespaces["dev"] || !o.Namespaces["prod"] || strings.Join(o.Zones, " ") != "cluster.local. in-addr.arpa." {
		t.Fatalf("index options %+v", o)
	}
	if strings.Join(h.cfg.fallthroughZones, " ") != "in-addr.arpa." || h.cfg.fallthroughAll {
		t.Fatalf("fallthrough %q all=%t", h.cfg.fallthroughZones, h.cfg.fallthroughAll)
	}
	if h.cfg.manifests != "/etc/coredns/examples" {
		t.Fatalf("manifests path %q, want it relative to the Corefile", h.cfg.manifests)
	}
	if got := b.listenAddrs(); strings.Join(got, " ") != "127.0.0.1:1053 [::1]:1053" {
		t.Fatalf("listen addresses %q", got)
	}
}

func TestKubernetesDefaults(t *testing.T) {
	cfg, err := ParseConfig("Corefile", []byte(".:53 {\n kubernetes cluster.local {\n  manifests m\n  fallthrough\n }\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Blocks[0].services[0].(*kubernetesHolder)
	if h.cfg.index.TTL != 5 || h.cfg.index.Pods != dnsindex.PodsDisabled || !h.cfg.fallthroughAll {
		t.Fatalf("defaults: ttl %d pods %v fallthroughAll %t", h.cfg.index.TTL, h.cfg.index.Pods, h.cfg.fallthroughAll)
	}
}
