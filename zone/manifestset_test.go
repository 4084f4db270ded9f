package zone

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// referenceBuild is a fresh load done the simple way, the way the manifests
// source did every change before it became incremental: every file's objects
// in file-name order into a new builder, then every selector Service derived.
func referenceBuild(files map[string]manifestObjects) *Cluster {
	names := make([]string, 0, len(files))
	for f := range files {
		names = append(names, f)
	}
	sort.Strings(names)
	b := NewBuilder()
	owned := make(map[Key]bool)
	for _, f := range names {
		objs := files[f]
		for _, n := range objs.namespaces {
			b.SetNamespace(n)
		}
		for _, n := range objs.nodes {
			b.SetNode(n)
		}
		for _, s := range objs.services {
			b.SetService(s)
		}
		for _, s := range objs.slices {
			b.SetSlice(s)
			owned[Key{Namespace: s.Namespace, Name: s.Service}] = true
		}
		for _, p := range objs.pods {
			b.SetPod(p)
		}
	}
	for _, s := range DeriveSlices(b.services, owned, b.pods) {
		base := s.Name
		for i := 1; b.slices[s.Key] != nil; i++ {
			s.Name = base + "-" + itoa(i)
		}
		b.SetSlice(s)
	}
	return b.Snapshot()
}

// dump renders what a snapshot holds, by value, sorted.
func dump(c *Cluster) string {
	var lines []string
	for k, s := range c.Services {
		lines = append(lines, fmt.Sprintf("svc %v %#v", k, *s))
	}
	for k, s := range c.Slices {
		lines = append(lines, fmt.Sprintf("slice %v %#v", k, *s))
	}
	for k, p := range c.Pods {
		lines = append(lines, fmt.Sprintf("pod %v %#v", k, *p))
	}
	for k, n := range c.Namespaces {
		lines = append(lines, fmt.Sprintf("ns %v %#v", k, *n))
	}
	for k, n := range c.Nodes {
		lines = append(lines, fmt.Sprintf("node %v %#v", k, *n))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// serviceView renders one Service and its slices, by value.
func serviceView(c *Cluster, k Key) string {
	var b strings.Builder
	if s := c.Services[k]; s != nil {
		fmt.Fprintf(&b, "%#v", *s)
	}
	for _, s := range c.SlicesFor(k) {
		fmt.Fprintf(&b, "|%#v", *s)
	}
	return b.String()
}

// randomFile makes a file's objects from a small universe, so that files
// often define the same objects, Pods move between Services' selectors and
// hand-written slices take derived slices' names.
func randomFile(rng *rand.Rand) manifestObjects {
	var objs manifestObjects
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	for range rng.IntN(4) {
		svc := &Service{
			Key:  Key{Namespace: pick("a", "b"), Name: pick("web", "db", "cache", "api")},
			Type: TypeClusterIP,
			Ports: []ServicePort{{Name: "http", Protocol: ProtocolTCP, Port: 80, TargetPort: int32(8080 + rng.IntN(2))},
				{Name: "named", Protocol: ProtocolTCP, Port: 81, TargetPortName: "metrics"}},
			ClusterIPs:               []netip.Addr{netip.AddrFrom4([4]byte{10, 96, 0, byte(rng.IntN(4))})},
			PublishNotReadyAddresses: rng.IntN(4) == 0,
		}
		switch rng.IntN(5) {
		case 0:
			svc.Type, svc.ClusterIPs, svc.ExternalName = TypeExternalName, nil, "example.com"
			svc.Selector = map[string]string{"app": "web"}
		case 1: // no selector
		default:
			svc.Selector = map[string]string{"app": pick("web", "db")}
		}
		objs.services = append(objs.services, svc)
	}
	for range rng.IntN(4) {
		p := &Pod{
			Key:      Key{Namespace: pick("a", "b"), Name: pick("p0", "p1", "p2", "p3", "p4")},
			Labels:   map[string]string{"app": pick("web", "db", "none")},
			Ready:    rng.IntN(3) != 0,
			Hostname: pick("", "h"), Subdomain: pick("", "web"),
			NodeName: pick("n1", "n2"),
		}
		p.IPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 244, byte(rng.IntN(2)), byte(rng.IntN(8))})}
		if rng.IntN(4) == 0 {
			p.IPs = append(p.IPs, netip.AddrFrom16([16]byte{0xfd, 15: byte(rng.IntN(8))}))
		}
		if rng.IntN(2) == 0 {
			p.Ports = []ContainerPort{{Name: "metrics", Protocol: ProtocolTCP, Port: int32(9000 + rng.IntN(2))}}
		}
		objs.pods = append(objs.pods, p)
	}
	for range rng.IntN(3) {
		objs.slices = append(objs.slices, &EndpointSlice{
			Key:         Key{Namespace: pick("a", "b"), Name: pick("web-derived", "db-derived", "cache-1", "api-1", "web-derived-1")},
			Service:     pick("web", "db", "cache", "api", "gone"),
			AddressType: AddressIPv4,
			Endpoints:   []Endpoint{{Addresses: []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 2, byte(rng.IntN(4))})}, Ready: true}},
			Ports:       []EndpointPort{{Name: "http", Protocol: ProtocolTCP, Port: 8080}},
		})
	}
	for range rng.IntN(2) {
		objs.namespaces = append(objs.namespaces, &Namespace{Name: pick("a", "b", "c"), Labels: map[string]string{"team": pick("x", "y")}})
	}
	for range rng.IntN(2) {
		objs.nodes = append(objs.nodes, &Node{Name: pick("n1", "n2"), Zone: pick("", "zone-a", "zone-b")})
	}
	return objs
}

// Random writes, removals and renames of files, each applied alone, leave
// what a fresh load of the same files gives; each snapshot lists exactly the
// Services that differ from the previous one, so consumers sync only those.
func TestManifestSetIncrementalEqualsFreshLoad(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 15))
			log := slog.New(slog.DiscardHandler)
			names := []string{"a.yaml", "b.yaml", "c.yaml", "sub/d.yaml", "sub/e.yaml", "z.json"}
			disk := make(map[string]manifestObjects) // the files' last good contents
			set := newManifestSet(log)
			set.Apply(nil)
			prev := set.b.Snapshot()
			for step := range 200 {
				changes := make(map[string]*manifestObjects)
				var what string
				for range 1 + rng.IntN(2) { // a debounced burst may hold two events
					f := names[rng.IntN(len(names))]
					switch op := rng.IntN(10); {
					case op < 6:
						objs := randomFile(rng)
						disk[f] = objs
						changes[f] = &objs
						what += " write " + f
					case op < 8:
						if _, ok := disk[f]; ok {
							delete(disk, f)
							changes[f] = nil
						}
						what += " remove " + f
					default:
						to := names[rng.IntN(len(names))]
						if objs, ok := disk[f]; ok && to != f {
							delete(disk, f)
							disk[to] = objs
							changes[f], changes[to] = nil, &objs
						}
						what += " rename " + f + " " + to
					}
				}
				set.Apply(changes)
				got := set.b.Snapshot()
				want := referenceBuild(disk)
				if g, w := dump(got), dump(want); g != w {
					t.Fatalf("step %d (%s): incremental\n%s\nfresh load\n%s", step, what, g, w)
				}
				_, changed, ok := got.ChangedServices()
				if !ok {
					t.Fatalf("step %d: a later snapshot does not say what changed", step)
				}
				keys := make(map[Key]bool)
				for _, c := range []*Cluster{prev, got} {
					for k := range c.Services {
						keys[k] = true
					}
					for k := range c.byService {
						keys[k] = true
					}
				}
				for k := range keys {
					differs := serviceView(prev, k) != serviceView(got, k)
					if listed := slices.Contains(changed, k); differs != listed {
						t.Fatalf("step %d (%s): Service %v differs %v but listed %v in %v", step, what, k, differs, listed, changed)
					}
				}
				prev = got
			}
		})
	}
}

// Through the watcher: a rewritten file yields a snapshot listing only the
// Service it changed, an object moving between files changes nothing, and
// removing a folder removes its files' objects.
func TestManifestSourcePublishesOnlyWhatChanged(t *testing.T) {
	dir := t.TempDir()
	svc := func(name, ip string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: " + name + ", namespace: dev}\nspec: {clusterIP: " + ip + "}\n---\n"
	}
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(filepath.Dir(p), ".tmp-"+filepath.Base(name))
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
	var all strings.Builder
	for i := range 50 {
		all.WriteString(svc(fmt.Sprintf("s%d", i), fmt.Sprintf("10.0.0.%d", i+1)))
	}
	write("all.yaml", all.String())
	write("sub/one.yaml", svc("one", "10.0.1.1"))
	ch := watchSource(t, dir)
	first := next(t, ch, func(c *Cluster) bool { return len(c.Services) == 51 })
	if _, _, ok := first.ChangedServices(); ok {
		t.Fatal("the first snapshot claims to know what changed")
	}

	write("sub/one.yaml", svc("one", "10.0.1.2"))
	c := next(t, ch, func(*Cluster) bool { return true })
	if _, changed, ok := c.ChangedServices(); !ok || !slices.Equal(changed, []Key{{Namespace: "dev", Name: "one"}}) {
		t.Fatalf("after rewriting one file the changes are %v (ok %v), want only dev/one", changed, ok)
	}
	if got := c.Services[Key{Namespace: "dev", Name: "s7"}]; got != first.Services[Key{Namespace: "dev", Name: "s7"}] {
		t.Fatal("an unchanged Service got a new object")
	}

	// The same Service moves to another file (written first, then the old
	// one removed): nothing differs, so the last step changes nothing.
	write("moved.yaml", svc("one", "10.0.1.2"))
	if err := os.Remove(filepath.Join(dir, "sub", "one.yaml")); err != nil {
		t.Fatal(err)
	}
	write("marker.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: marker}\n")
	c = next(t, ch, func(c *Cluster) bool { return c.Namespaces["marker"] != nil })
	if c.Services[Key{Namespace: "dev", Name: "one"}] == nil {
		t.Fatal("the moved Service is gone")
	}

	// A folder removed takes its files' objects with it.
	write("sub/two.yaml", svc("two", "10.0.2.1"))
	next(t, ch, func(c *Cluster) bool { return c.Services[Key{Namespace: "dev", Name: "two"}] != nil })
	if err := os.RemoveAll(filepath.Join(dir, "sub")); err != nil {
		t.Fatal(err)
	}
	next(t, ch, func(c *Cluster) bool {
		return c.Services[Key{Namespace: "dev", Name: "two"}] == nil && len(c.Services) == 51
	})
}

// BenchmarkManifestSetOneFileChange is what a manifests source spends on one
// rewritten slice file (parsed already) in a folder of n selector-less
// Services with a slice file each: applying it and cutting the snapshot.
func BenchmarkManifestSetOneFileChange(b *testing.B) {
	for _, n := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			set := newManifestSet(slog.New(slog.DiscardHandler))
			slice := func(i, gen int) *manifestObjects {
				return &manifestObjects{slices: []*EndpointSlice{{
					Key: Key{Namespace: "ns", Name: fmt.Sprintf("s%d", i)}, Service: fmt.Sprintf("s%d", i), AddressType: AddressIPv4,
					Endpoints: []Endpoint{{Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, byte(gen >> 16), byte(gen >> 8), byte(gen)})}, Ready: true}},
				}}}
			}
			all := &manifestObjects{}
			changes := map[string]*manifestObjects{"services.yaml": all}
			for i := range n {
				all.services = append(all.services, &Service{Key: Key{Namespace: "ns", Name: fmt.Sprintf("s%d", i)}, Type: TypeClusterIP,
					ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})}})
				changes[fmt.Sprintf("slices/s%d.yaml", i)] = slice(i, 0)
			}
			set.Apply(changes)
			set.b.Snapshot()
			b.ResetTimer()
			for i := range b.N {
				k := i % n
				set.Apply(map[string]*manifestObjects{fmt.Sprintf("slices/s%d.yaml", k): slice(k, i+1)})
				if _, changed, _ := set.b.Snapshot().ChangedServices(); len(changed) != 1 {
					b.Fatalf("%d Services changed, want 1", len(changed))
				}
			}
		})
	}
}
