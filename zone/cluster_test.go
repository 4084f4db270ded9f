package zone

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
)

// fingerprint renders a snapshot's maps and derived lookups, sorted.
func fingerprint(c *Cluster) string {
	var lines []string
	for k, s := range c.Services {
		lines = append(lines, fmt.Sprintf("svc %v %p", k, s))
	}
	for k, s := range c.Slices {
		lines = append(lines, fmt.Sprintf("slice %v %p", k, s))
	}
	for k, p := range c.Pods {
		lines = append(lines, fmt.Sprintf("pod %v %p", k, p))
	}
	for k, n := range c.Namespaces {
		lines = append(lines, fmt.Sprintf("ns %v %p", k, n))
	}
	for k, list := range c.byService {
		lines = append(lines, fmt.Sprintf("by %v %p", k, list))
		for _, s := range list {
			lines = append(lines, fmt.Sprintf("by %v has %v", k, s.Key))
		}
	}
	for ns := range c.inUse {
		lines = append(lines, "inuse "+ns)
	}
	for ip, p := range c.podsByIP {
		lines = append(lines, fmt.Sprintf("ip %v %v", ip, p.Key))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// expectedViews computes a snapshot's derived lookups from its maps alone.
func expectedViews(c *Cluster) (byService map[Key][]Key, inUse []string, podsByIP map[netip.Addr]Key) {
	byService = make(map[Key][]Key)
	used := make(map[string]bool)
	for k := range c.Services {
		used[k.Namespace] = true
	}
	for k, s := range c.Slices {
		used[k.Namespace] = true
		if s.Service != "" {
			svc := Key{Namespace: s.Namespace, Name: s.Service}
			byService[svc] = append(byService[svc], k)
		}
	}
	for _, list := range byService {
		slices.SortFunc(list, func(a, b Key) int { return strings.Compare(a.Name, b.Name) })
	}
	podsByIP = make(map[netip.Addr]Key)
	for k, p := range c.Pods {
		used[k.Namespace] = true
		for _, ip := range p.IPs {
			podsByIP[ip] = k
		}
	}
	inUse = slices.Sorted(maps.Keys(used))
	return byService, inUse, podsByIP
}

// Snapshots cut after any sequence of changes have the lookups a full
// computation gives, and never change once cut, however much they share.
func TestSnapshotsStayCorrectAndImmutable(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	b := NewBuilder()
	type kept struct {
		c     *Cluster
		print string
	}
	var history []kept
	for step := 0; step < 500; step++ {
		for range rng.IntN(3) + 1 {
			i, n := rng.IntN(12), rng.IntN(3)
			ns := fmt.Sprintf("ns%d", n)
			switch rng.IntN(8) {
			case 0:
				b.SetService(&Service{Key: Key{Namespace: ns, Name: fmt.Sprintf("s%d", i)}})
			case 1:
				b.DeleteService(Key{Namespace: ns, Name: fmt.Sprintf("s%d", i)})
			case 2, 3:
				// Slices move between Services now and then.
				b.SetSlice(&EndpointSlice{Key: Key{Namespace: ns, Name: fmt.Sprintf("x%d", i)}, Service: fmt.Sprintf("s%d", rng.IntN(4))})
			case 4:
				b.DeleteSlice(Key{Namespace: ns, Name: fmt.Sprintf("x%d", i)})
			case 5:
				b.SetPod(&Pod{Key: Key{Namespace: ns, Name: fmt.Sprintf("p%d", i)}, IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(n), byte(i)})}})
			case 6:
				b.DeletePod(Key{Namespace: ns, Name: fmt.Sprintf("p%d", i)})
			case 7:
				b.SetNamespace(&Namespace{Name: ns})
			}
		}
		c := b.Snapshot()
		wantBy, wantInUse, wantIPs := expectedViews(c)
		gotBy := make(map[Key][]Key)
		for k, list := range c.byService {
			for _, s := range list {
				gotBy[k] = append(gotBy[k], s.Key)
			}
		}
		if !maps.EqualFunc(gotBy, wantBy, slices.Equal) {
			t.Fatalf("step %d: slices by Service %v, want %v", step, gotBy, wantBy)
		}
		if got := slices.Sorted(maps.Keys(c.inUse)); !slices.Equal(got, wantInUse) {
			t.Fatalf("step %d: namespaces in use %v, want %v", step, got, wantInUse)
		}
		gotIPs := make(map[netip.Addr]Key)
		for ip, p := range c.podsByIP {
			gotIPs[ip] = p.Key
		}
		if !maps.Equal(gotIPs, wantIPs) {
			t.Fatalf("step %d: pods by IP %v, want %v", step, gotIPs, wantIPs)
		}
		// Every Service whose object or slices differ from the previous
		// snapshot's is listed as changed.
		since, changed, ok := c.ChangedServices()
		if step == 0 {
			if ok {
				t.Fatal("a first snapshot claims to know what changed")
			}
		} else {
			prev := history[len(history)-1].c
			if !ok || since != prev.Generation {
				t.Fatalf("step %d: changes since %d (ok %v), want since %d", step, since, ok, prev.Generation)
			}
			keys := make(map[Key]bool)
			for k := range c.Services {
				keys[k] = true
			}
			for k := range prev.Services {
				keys[k] = true
			}
			for k := range c.byService {
				keys[k] = true
			}
			for k := range prev.byService {
				keys[k] = true
			}
			for k := range keys {
				if (c.Services[k] != prev.Services[k] || !slices.Equal(c.SlicesFor(k), prev.SlicesFor(k))) && !slices.Contains(changed, k) {
					t.Fatalf("step %d: Service %v changed but is not listed in %v", step, k, changed)
				}
			}
		}
		history = append(history, kept{c, fingerprint(c)})
	}
	for i, h := range history {
		if got := fingerprint(h.c); got != h.print {
			t.Fatalf("snapshot %d changed after it was cut", i)
		}
	}
}

// BenchmarkSnapshotAfterOneSliceChange is what cutting a snapshot costs a
// source after one endpoint change.
func BenchmarkSnapshotAfterOneSliceChange(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			builder := NewBuilder()
			slice := func(i, variant int) *EndpointSlice {
				return &EndpointSlice{Key: Key{Namespace: "bench", Name: fmt.Sprintf("s%d-x", i)}, Service: fmt.Sprintf("s%d", i),
					Endpoints: []Endpoint{{Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, byte(variant), byte(i >> 8), byte(i)})}, Ready: true}}}
			}
			for i := range n {
				builder.SetService(&Service{Key: Key{Namespace: "bench", Name: fmt.Sprintf("s%d", i)}})
				builder.SetSlice(slice(i, 0))
			}
			builder.Snapshot()
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				builder.SetSlice(slice(n/2, 1+i%2))
				builder.Snapshot()
			}
		})
	}
}
