package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/inspect"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
	"github.com/clusterdns/clusterdns/zone"
)

// exampleCluster loads deploy/examples as explain does.
func exampleCluster(t *testing.T) *zone.Cluster {
	t.Helper()
	c, err := firstSnapshot(context.Background(), &zone.ManifestSource{Path: filepath.Join("..", "..", "deploy", "examples")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// kernelOf is a kernel that routes exactly as the model says, then edit
// changes it.
func kernelOf(m *proxy.Model, edit func(k *inspect.Kernel)) func() (*inspect.Kernel, error) {
	return func() (*inspect.Kernel, error) {
		k := &inspect.Kernel{Mode: "iptables"}
		add := func(f inspect.Frontend, lists ...[]netip.AddrPort) {
			k.Add(f, netip.AddrPort{})
			for _, ep := range slices.Concat(lists...) {
				k.Add(f, ep)
			}
		}
		for _, p := range m.Ports {
			add(inspect.Frontend{Addr: p.ClusterIP, Protocol: p.Protocol, Port: p.Port}, p.Endpoints)
			for _, ip := range slices.Concat(p.ExternalIPs, p.LoadBalancerIPs) {
				add(inspect.Frontend{Addr: ip, Protocol: p.Protocol, Port: p.Port}, p.ExternalEndpoints, p.ClusterEndpoints)
			}
			if p.NodePort != 0 {
				add(inspect.NodePortFrontend(p.Key.Family, p.Protocol, p.NodePort), p.ExternalEndpoints, p.ClusterEndpoints)
			}
		}
		if edit != nil {
			edit(k)
		}
		return k, nil
	}
}

// TestExplainGolden holds the text and JSON output for the example cluster
// to golden files (go test ./cmd/clusterdns -run ExplainGolden -update).
func TestExplainGolden(t *testing.T) {
	c := exampleCluster(t)
	m := proxy.BuildModel(nil, c)
	clusterIP := inspect.Frontend{Addr: netip.MustParseAddr("10.10.97.97"), Protocol: zone.ProtocolTCP, Port: 80}
	for _, tc := range []struct {
		name, query string
		kernel      func() (*inspect.Kernel, error)
		// want are substrings of the text output, so that a wrong golden
		// file cannot be accepted by -update unnoticed.
		want []string
	}{
		{"in-sync", "service-clusterip.dev", kernelOf(m, nil),
			[]string{"10.10.97.97 80/TCP -> 172.16.69.206:80, 172.16.69.207:80, 172.16.79.83:80: in sync", "Problems:  none"}},
		{"differs", "service-clusterip.dev.svc.cluster.local.", kernelOf(m, func(k *inspect.Kernel) {
			k.Endpoints[clusterIP] = []netip.AddrPort{netip.MustParseAddrPort("172.16.69.206:80"), netip.MustParseAddrPort("172.16.99.1:80")}
			k.Add(inspect.Frontend{Addr: clusterIP.Addr, Protocol: zone.ProtocolUDP, Port: 53}, netip.MustParseAddrPort("172.16.69.206:53"))
		}), []string{
			"10.10.97.97:80/TCP: the kernel does not send to 172.16.69.207:80",
			"10.10.97.97:80/TCP: the kernel still sends to 172.16.99.1:80",
			"the kernel still routes 10.10.97.97:53/UDP, which the model does not have (stale rules)"}},
		{"missing-port", "10.10.25.194:80", kernelOf(m, func(k *inspect.Kernel) {
			delete(k.Endpoints, inspect.Frontend{Addr: netip.MustParseAddr("10.10.25.194"), Protocol: zone.ProtocolTCP, Port: 80})
		}), []string{"the kernel has no rules for 10.10.25.194:80/TCP", "-> no rules: DIFFERS"}},
		{"no-rules", "service-nodeport.dev", func() (*inspect.Kernel, error) { return nil, nil },
			[]string{"no clusterdns rules on this node"}},
		{"unreadable", "service-nodeport.dev", func() (*inspect.Kernel, error) { return nil, errors.New("iptables-save: permission denied") },
			[]string{"could not read this node's rules: iptables-save: permission denied"}},
		{"unknown", "service-clusterip.devv", kernelOf(m, nil),
			[]string{"DNS:       NXDOMAIN", "no Service service-clusterip in namespace devv", "Did you mean: dev/service-clusterip"}},
		{"headless", "service-headliness.dev", kernelOf(m, nil),
			[]string{"IN\tA\t172.16.79.83", "headless Service"}},
		{"stale-address", "10.10.0.1", kernelOf(m, func(k *inspect.Kernel) {
			k.Add(inspect.Frontend{Addr: netip.MustParseAddr("10.10.0.1"), Protocol: zone.ProtocolTCP, Port: 80}, netip.MustParseAddrPort("172.16.69.206:80"))
		}), []string{"no Service has 10.10.0.1", "the kernel still routes 10.10.0.1:80/TCP, which the model does not have (stale rules)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := explain(c, explainInput{query: tc.query, zone: "cluster.local", node: "k8s-worker01", readKernel: tc.kernel})
			checkReport(t, r, tc.name, tc.want)
		})
	}
}

// TestExplainJSONFields holds the field names the README documents.
func TestExplainJSONFields(t *testing.T) {
	c := exampleCluster(t)
	r := explain(c, explainInput{query: "service-nodeport.dev", zone: "cluster.local", readKernel: kernelOf(proxy.BuildModel(nil, c), nil)})
	js, _ := json.Marshal(r)
	var doc struct {
		DNS     []string `json:"dns"`
		Service struct {
			Namespace, Name, Type string
			ClusterIPs            []string `json:"clusterIPs"`
			Ports                 []struct{ Port string }
		} `json:"service"`
		Endpoints []struct {
			Address, Node, Zone         string
			Ready, Serving, Terminating *bool
		} `json:"endpoints"`
		Node struct {
			Mode  string
			Ports []struct {
				Port, Kind string
				NodePort   int `json:"nodePort"`
				Kernel     []string
				InSync     *bool `json:"inSync"`
			}
		} `json:"node"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.DNS) == 0 || doc.Service.Namespace != "dev" || doc.Service.Type != "NodePort" || !slices.Equal(doc.Service.ClusterIPs, []string{"10.10.25.194"}) ||
		len(doc.Service.Ports) != 1 || doc.Service.Ports[0].Port != "80/TCP" {
		t.Errorf("dns and service: %s", js)
	}
	if len(doc.Endpoints) != 3 || doc.Endpoints[0].Ready == nil || doc.Endpoints[0].Serving == nil || doc.Endpoints[0].Terminating == nil || doc.Endpoints[0].Node == "" {
		t.Errorf("endpoints: %s", js)
	}
	// The Service's port on its cluster IP, then on the node port.
	if doc.Node.Mode != "iptables" || len(doc.Node.Ports) != 2 {
		t.Fatalf("node: %s", js)
	}
	for i, kind := range []string{"clusterIP", "nodePort"} {
		p := doc.Node.Ports[i]
		if p.Port != "80/TCP" || p.Kind != kind || len(p.Kernel) != 3 || p.InSync == nil || !*p.InSync || (kind == "nodePort") != (p.NodePort == 30002) {
			t.Errorf("node port %d: %s", i, js)
		}
	}
}

func TestSplitQueryPort(t *testing.T) {
	type hp struct {
		host string
		port uint16
		ok   bool
	}
	for in, want := range map[string]hp{
		"web.dev":          {"web.dev", 0, false},
		"web.dev:8080":     {"web.dev", 8080, true},
		"10.0.0.1":         {"10.0.0.1", 0, false},
		"10.0.0.1:53":      {"10.0.0.1", 53, true},
		"fd00::1":          {"fd00::1", 0, false},
		"[fd00::1]:443":    {"fd00::1", 443, true},
		"web.dev:http":     {"web.dev:http", 0, false},
		"web.dev:99999999": {"web.dev:99999999", 0, false},
	} {
		h, p, ok := splitQueryPort(in)
		if got := (hp{h, p, ok}); got != want {
			t.Errorf("splitQueryPort(%q) = %+v, want %+v", in, got, want)
		}
	}
}

func TestServiceKeyOf(t *testing.T) {
	for in, want := range map[string]string{
		"web.dev":                        "dev/web",
		"web.dev.svc":                    "dev/web",
		"Web.Dev.svc.cluster.local.":     "dev/web",
		"web.dev.svc.cluster.local":      "dev/web",
		"web":                            "",
		"a.web.dev.svc.cluster.local":    "",
		"web.dev.svc.other.example.":     "",
		".dev":                           "",
		"web.dev.svc.cluster.local.evil": "",
	} {
		k, ok := serviceKeyOf(in, "cluster.local.")
		got := ""
		if ok {
			got = k.String()
		}
		if got != want {
			t.Errorf("serviceKeyOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for in, want := range map[[2]string]int{
		{"", ""}: 0, {"web", "web"}: 0, {"web", "wbe"}: 2, {"web.dev", "web.de"}: 1, {"", "abc"}: 3, {"kitten", "sitting"}: 3,
	} {
		if got := editDistance(in[0], in[1]); got != want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", in[0], in[1], got, want)
		}
	}
}

// TestRunExplainFlags runs the subcommand as the binary does, without the
// kernel part (which needs root and a node).
func TestRunExplainFlags(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "examples")
	for _, tc := range []struct {
		args    []string
		wantErr string
		wantOut string
	}{
		{args: []string{"--manifests", dir, "--kernel=false", "service-nodeport.dev"}, wantOut: "port 80/TCP (http) -> 80, node port 30002"},
		{args: []string{"--manifests", dir, "--kernel=false", "-o", "json", "10.10.25.194"}, wantOut: `"clusterIPs": [`},
		{args: []string{"--manifests", dir, "--kernel=false", "-o", "json", "nope.dev"}, wantOut: `"service": null`},
		{args: []string{"--manifests", dir, "--kernel=false"}, wantErr: "want one NAME or IP[:PORT]"},
		{args: []string{"--manifests", dir, "-o", "yaml", "a.b"}, wantErr: `-o "yaml"`},
		{args: []string{"--manifests", dir, "--proxy-mode", "userspace", "a.b"}, wantErr: `--proxy-mode "userspace"`},
		{args: []string{"--manifests", dir, "--kubeconfig", "x", "a.b"}, wantErr: "--manifests excludes"},
		{args: []string{"--manifests", dir, "--iptables-variant", "old", "a.b"}, wantErr: `--iptables-variant "old"`},
	} {
		var stdout, stderr bytes.Buffer
		err := runExplain(context.Background(), tc.args, &stdout, &stderr)
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: %v\n%s", tc.args, err, stderr.String())
		case !strings.Contains(stdout.String(), tc.wantOut):
			t.Errorf("%q: output lacks %q:\n%s", tc.args, tc.wantOut, stdout.String())
		}
	}
}

// TestExplainNodeView holds that --node shows that node's view of a
// LoadBalancer Service with externalTrafficPolicy Local and topology hints:
// what the kernel of node-a holds is in sync for node-a and differs, exactly,
// for node-b, whose own endpoint and (zone unknown) whole cluster it wants.
func TestExplainNodeView(t *testing.T) {
	b := zone.NewBuilder()
	b.SetNode(&zone.Node{Name: pt.NodeName, Zone: pt.NodeZone})
	pt.Service{Namespace: "dev", Name: "lb", Type: zone.TypeLoadBalancer, ClusterIPs: []string{"10.10.0.50"}, LoadBalancerIPs: []string{"203.0.113.50"},
		ProxyLoadBalancerIPs: []string{"203.0.113.51"}, Port: 80, NodePort: 30050, Ready: []string{"172.16.1.50", "172.16.2.50"}, ExternalLocal: true,
		Local: []string{"172.16.1.50"}, ZoneHints: map[string][]string{"172.16.1.50": {pt.NodeZone}, "172.16.2.50": {"zone-b"}}}.Add(b)
	c := b.Snapshot()
	// The test's own snapshot: give the endpoints the zones their hints name.
	for _, s := range c.Slices {
		for i := range s.Endpoints {
			s.Endpoints[i].Zone = s.Endpoints[i].Hints.ForZones[0]
		}
	}
	kernel := kernelOf(proxy.BuildNodeModel(nil, c, pt.NodeName), nil)
	for _, tc := range []struct {
		name, query, node string
		want              []string
	}{
		{"node-view", "203.0.113.50:80", pt.NodeName, []string{
			"Service:   dev/lb, LoadBalancer, cluster IP 10.10.0.50",
			"traffic policy internal Cluster, external Local, load balancer IPs 203.0.113.50, 203.0.113.51 (ipMode Proxy: 203.0.113.51)",
			"172.16.1.50      node node-a, zone zone-a: ready, serving, hints zone:zone-a",
			"10.10.0.50 80/TCP -> 172.16.1.50:80: in sync",
			"203.0.113.50 80/TCP -> 172.16.1.50:80: in sync",
			"node port 30050 (80/TCP) -> 172.16.1.50:80: in sync",
			"Problems:  none"}},
		{"proxy-lb-ip", "203.0.113.51", pt.NodeName, []string{
			"Service:   dev/lb, LoadBalancer",
			"203.0.113.51 is a load balancer IP of ipMode Proxy: nodes do not take its traffic"}},
		{"other-node-view", "lb.dev", "node-b", []string{
			"10.10.0.50 80/TCP -> 172.16.1.50:80: DIFFERS from the model, which wants 172.16.1.50:80, 172.16.2.50:80",
			"203.0.113.50:80/TCP: the kernel does not send to 172.16.2.50:80",
			"node port 30050/TCP: the kernel does not send to 172.16.2.50:80"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := explain(c, explainInput{query: tc.query, zone: "cluster.local", node: tc.node, readKernel: kernel})
			checkReport(t, r, tc.name, tc.want)
		})
	}
}

// checkReport holds a report's text and JSON to the golden files named
// explain-NAME, and requires the text to contain each of want, so that a
// careless -update cannot hide a wrong output.
func checkReport(t *testing.T, r *explainReport, name string, want []string) {
	t.Helper()
	var text bytes.Buffer
	if err := r.writeText(&text); err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		if !strings.Contains(text.String(), w) {
			t.Errorf("text output lacks %q:\n%s", w, text.String())
		}
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	pt.Golden(t, "explain-"+name+".txt", text.Bytes())
	pt.Golden(t, "explain-"+name+".json", append(js, '\n'))
}
