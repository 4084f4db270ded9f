package zone

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestParseManifestFile(t *testing.T) {
	tests := []struct {
		name     string
		content  string
		services []string
		slices   []string
		pods     []string
		ns       []string
		nodes    []string
		err      string // substring; "" for success
	}{
		{name: "multi-document with comments and skipped kinds", content: `# leading comment
apiVersion: v1
kind: Service
metadata: {name: a, namespace: dev}
spec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
---
# only a comment
---
apiVersion: v1
kind: Namespace
metadata: {name: dev}
`, services: []string{"dev/a"}, ns: []string{"dev"}},
		{name: "kind List", content: `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: p}
  status: {podIP: 10.1.0.1}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: s, namespace: dev, labels: {kubernetes.io/service-name: a}}
  addressType: IPv4
  endpoints: [{addresses: [10.1.0.1]}]
`, pods: []string{"default/p"}, slices: []string{"dev/s"}},
		{name: "Node with its zone", content: `apiVersion: v1
kind: Node
metadata: {name: n1, labels: {topology.kubernetes.io/zone: z1}}
`, nodes: []string{"n1=z1"}},
		{name: "JSON", content: `{"apiVersion":"v1","kind":"Service","metadata":{"name":"j"},"spec":{"clusterIP":"None"}}`,
			services: []string{"default/j"}},
		{name: "YAML syntax error reports the absolute line", content: `apiVersion: v1
kind: Namespace
metadata: {name: ok}
---
apiVersion: v1
kind: Service
metadata:
  name: a
 bad: indentation
`, err: "f.yaml:8: yaml: did not find expected key"},
		{name: "bad clusterIP", content: `apiVersion: v1
kind: Service
metadata: {name: a}
spec: {clusterIP: 10.0.0.300}
`, err: `f.yaml:1: Service default/a: clusterIP "10.0.0.300" is not an IP address`},
		{name: "bad item of a List names the file and line first", content: `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a}
  spec: {clusterIP: 10.0.0.300}
`, err: `f.yaml:1: item 0: Service default/a: clusterIP "10.0.0.300" is not an IP address`},
		{name: "missing kind", content: `apiVersion: v1
metadata: {name: a}
`, err: "f.yaml:1: object has no kind or apiVersion"},
		{name: "slice without service label", content: `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: s}
addressType: IPv4
endpoints: []
`, err: "has no kubernetes.io/service-name label"},
		{name: "unknown field type", content: `apiVersion: v1
kind: Service
metadata: {name: a}
spec: {ports: "eighty"}
`, err: "f.yaml:1:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "f.yaml")
			if err := os.WriteFile(f, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			objs, err := parseManifestFile(f, quiet())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range objs.services {
				got = append(got, s.Key.String())
			}
			check(t, "services", got, tc.services)
			got = nil
			for _, s := range objs.slices {
				got = append(got, s.Key.String())
			}
			check(t, "slices", got, tc.slices)
			got = nil
			for _, p := range objs.pods {
				got = append(got, p.Key.String())
			}
			check(t, "pods", got, tc.pods)
			got = nil
			for _, n := range objs.namespaces {
				got = append(got, n.Name)
			}
			check(t, "namespaces", got, tc.ns)
			got = nil
			for _, n := range objs.nodes {
				got = append(got, n.Name+"="+n.Zone)
			}
			check(t, "nodes", got, tc.nodes)
		})
	}
}

func check(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s: got %q, want %q", what, got, want)
	}
}

// watchSource runs a manifests source and hands its snapshots to the test.
func watchSource(t *testing.T, path string) <-chan *Cluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan *Cluster, 16)
	done := make(chan error, 1)
	src := &ManifestSource{Path: path, Debounce: 20 * time.Millisecond, Logger: quiet()}
	go func() { done <- src.Run(ctx, func(c *Cluster) { ch <- c }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("source: %v", err)
		}
	})
	return ch
}

// next waits (boundedly) for a snapshot satisfying ok.
func next(t *testing.T, ch <-chan *Cluster, ok func(*Cluster) bool) *Cluster {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case c := <-ch:
			if ok(c) {
				return c
			}
		case <-deadline:
			t.Fatal("no matching snapshot")
			return nil
		}
	}
}

func TestManifestSourceWatchesAndKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	svc := func(ip string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: dev}\nspec: {clusterIP: " + ip + "}\n"
	}
	write := func(name, content string) {
		t.Helper()
		// Write then rename, as editors and ConfigMap updates do.
		tmp := filepath.Join(dir, ".tmp-"+name)
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", svc("10.0.0.1"))
	ch := watchSource(t, dir)
	ip := func(c *Cluster) string {
		if s := c.Services[Key{Namespace: "dev", Name: "a"}]; s != nil && len(s.ClusterIPs) > 0 {
			return s.ClusterIPs[0].String()
		}
		return ""
	}
	next(t, ch, func(c *Cluster) bool { return ip(c) == "10.0.0.1" })

	write("a.yaml", svc("10.0.0.2"))
	next(t, ch, func(c *Cluster) bool { return ip(c) == "10.0.0.2" })

	// A broken edit keeps the file's previous objects; another file's change
	// still comes through.
	write("a.yaml", "apiVersion: v1\nkind: Service\nmetadata: [oops\n")
	write("b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n")
	c := next(t, ch, func(c *Cluster) bool { return c.Namespaces["extra"] != nil })
	if ip(c) != "10.0.0.2" {
		t.Fatalf("after a broken edit the service is %q, want the last good 10.0.0.2", ip(c))
	}

	// Removing a file removes its objects.
	if err := os.Remove(filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	next(t, ch, func(c *Cluster) bool { return c.Namespaces["extra"] == nil && ip(c) == "10.0.0.2" })
}

func TestManifestSourceDerivesEndpoints(t *testing.T) {
	ch := watchSource(t, "../deploy/examples")
	c := next(t, ch, func(*Cluster) bool { return true })
	slices := c.SlicesFor(Key{Namespace: "dev", Name: "service-clusterip"})
	if len(slices) != 1 || len(slices[0].Endpoints) != 3 {
		t.Fatalf("service-clusterip has slices %v, want one derived slice of 3 endpoints", sliceSummary(slices))
	}
	if c.SlicesFor(Key{Namespace: "dev", Name: "service-externalname"}) != nil {
		t.Fatal("an ExternalName service got endpoints")
	}
}

func TestManifestSourceMissingPath(t *testing.T) {
	src := &ManifestSource{Path: filepath.Join(t.TempDir(), "nope"), Logger: quiet()}
	err := src.Run(context.Background(), func(*Cluster) {})
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("error %v, want a missing-path error", err)
	}
}

// A slice derived for a selector Service never replaces a hand-written one
// that happens to have its name. Found by FuzzDeriveSlices.
func TestDerivedSliceNameTaken(t *testing.T) {
	web := &Service{Key: Key{Namespace: "a", Name: "web"}, Type: TypeClusterIP, Selector: map[string]string{"app": "web"},
		Ports: []ServicePort{{Protocol: ProtocolTCP, Port: 80, TargetPort: 8080}}}
	db := &Service{Key: Key{Namespace: "a", Name: "db"}, Type: TypeClusterIP, Ports: []ServicePort{{Protocol: ProtocolTCP, Port: 5432, TargetPort: 5432}}}
	written := &EndpointSlice{Key: Key{Namespace: "a", Name: "web-derived"}, Service: "db", AddressType: AddressIPv4,
		Endpoints: []Endpoint{{Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, Ready: true}}}
	pod := &Pod{Key: Key{Namespace: "a", Name: "web-1"}, Labels: map[string]string{"app": "web"}, IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}, Ready: true}
	c := buildFromManifests(map[string]manifestObjects{"f.yaml": {services: []*Service{web, db}, slices: []*EndpointSlice{written}, pods: []*Pod{pod}}}, quiet())
	if got := c.SlicesFor(db.Key); len(got) != 1 || got[0] != written {
		t.Errorf("db's slices %+v, want its own", got)
	}
	if got := c.SlicesFor(web.Key); len(got) != 1 || got[0].Name == "web-derived" || got[0].Endpoints[0].Addresses[0] != pod.IPs[0] {
		t.Errorf("web's slices %+v, want one derived under another name", got)
	}
}
