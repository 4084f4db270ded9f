package dnsindex

import (
	"github.com/clusterdns/clusterdns/zone"

	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// dump renders every name of an index with its records, sorted: the names
// kept and those made when asked.
func dump(ix *Index) []string {
	names := make(map[string]bool)
	for _, m := range ix.shards {
		for name, n := range m {
			names[name] = true
			if n.hosts != nil {
				for _, ep := range *n.hosts {
					names[ep.label()+"."+name] = true
				}
			}
		}
	}
	for _, m := range ix.ptrs {
		for a := range m.one {
			rev, err := dns.ReverseAddr(a.String())
			if err != nil {
				panic(err)
			}
			names[rev] = true
		}
	}
	var out []string
	for name := range names {
		n := ix.Lookup(name)
		var rrs []string
		for _, t := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypePTR, dns.TypeTXT, dns.TypeNS, dns.TypeCNAME} {
			for _, rr := range n.Records(t) {
				rrs = append(rrs, rr.String())
			}
		}
		for _, rr := range n.Extra {
			rrs = append(rrs, "extra "+rr.String())
		}
		slices.Sort(rrs)
		out = append(out, name+" => "+strings.Join(rrs, " | "))
	}
	slices.Sort(out)
	return out
}

// An index built from the previous one must equal one built from scratch,
// whatever changed in between.
func TestIncrementalIndexMatchesFullBuild(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	opts := Options{Zones: []string{"cluster.local.", "in-addr.arpa.", "ip6.arpa."}, TTL: 5, Pods: PodsVerified}
	b := zone.NewBuilder()
	svc := func(i int) *zone.Service {
		s := &zone.Service{Key: zone.Key{Namespace: fmt.Sprintf("ns%d", i%7), Name: fmt.Sprintf("s%d", i)}, Type: zone.TypeClusterIP,
			Ports: []zone.ServicePort{{Name: "p", Protocol: zone.ProtocolTCP, Port: 80, TargetPort: 80}}}
		switch rng.IntN(4) {
		case 0:
			s.Headless = true
		case 1:
			s.Type, s.ExternalName = zone.TypeExternalName, "x.example."
		default:
			s.ClusterIPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 96, 0, byte(rng.IntN(50))})}
		}
		return s
	}
	slice := func(i int) *zone.EndpointSlice {
		s := &zone.EndpointSlice{Key: zone.Key{Namespace: fmt.Sprintf("ns%d", i%7), Name: fmt.Sprintf("s%d-x", i)}, Service: fmt.Sprintf("s%d", i),
			AddressType: zone.AddressIPv4, Ports: []zone.EndpointPort{{Name: "p", Protocol: zone.ProtocolTCP, Port: 8080}}}
		for j := 0; j < rng.IntN(4); j++ {
			// Few distinct addresses, so Services share PTR names.
			s.Endpoints = append(s.Endpoints, zone.Endpoint{Addresses: []netip.Addr{netip.AddrFrom4([4]byte{10, 1, 0, byte(rng.IntN(20))})}, Ready: rng.IntN(3) > 0})
		}
		return s
	}
	var prev *Index
	for step := 0; step < 300; step++ {
		i := rng.IntN(40)
		switch rng.IntN(6) {
		case 0, 1:
			b.SetService(svc(i))
		case 2:
			b.SetSlice(slice(i))
		case 3:
			b.DeleteService(zone.Key{Namespace: fmt.Sprintf("ns%d", i%7), Name: fmt.Sprintf("s%d", i)})
		case 4:
			b.SetPod(&zone.Pod{Key: zone.Key{Namespace: fmt.Sprintf("ns%d", i%7), Name: fmt.Sprintf("p%d", i)}, IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 2, 0, byte(i)})}})
		case 5:
			b.SetNamespace(&zone.Namespace{Name: fmt.Sprintf("extra%d", i%3)})
		}
		c := b.Snapshot()
		inc := Build(c, opts, prev)
		full := Build(c, opts, nil)
		if got, want := dump(inc), dump(full); !slices.Equal(got, want) {
			t.Fatalf("step %d: incremental index differs from a full build\n got %d names\nwant %d names\nfirst got:  %q\nfirst want: %q",
				step, len(got), len(want), first(got, want), first(want, got))
		}
		prev = inc
	}
}

// first returns the first line of a that b lacks.
func first(a, b []string) string {
	for _, l := range a {
		if !slices.Contains(b, l) {
			return l
		}
	}
	return ""
}

// One change rebuilds only the shards it touches.
func TestOneChangeSharesUntouchedShards(t *testing.T) {
	b := zone.NewBuilder()
	for i := 0; i < 2000; i++ {
		b.SetService(&zone.Service{Key: zone.Key{Namespace: "ns", Name: fmt.Sprintf("s%d", i)}, Type: zone.TypeClusterIP,
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})}})
	}
	opts := Options{Zones: []string{"cluster.local.", "in-addr.arpa."}, TTL: 5}
	first := Build(b.Snapshot(), opts, nil)
	b.SetService(&zone.Service{Key: zone.Key{Namespace: "ns", Name: "s7"}, Type: zone.TypeClusterIP, ClusterIPs: []netip.Addr{netip.MustParseAddr("10.200.0.1")}})
	second := Build(b.Snapshot(), opts, first)
	shared := 0
	for s := range second.shards {
		if fmt.Sprintf("%p", second.shards[s]) == fmt.Sprintf("%p", first.shards[s]) {
			shared++
		}
	}
	// The change touches the old and new names and PTRs, plus the apexes.
	if shared < shardCount-12 {
		t.Fatalf("only %d of %d shards shared after one change", shared, shardCount)
	}
	if n := second.Lookup("s7.ns.svc.cluster.local."); n == nil || n.Records(dns.TypeA)[0].(*dns.A).A.String() != "10.200.0.1" {
		t.Fatalf("changed service not served: %v", n)
	}
	if second.Lookup("7.0.96.10.in-addr.arpa.") != nil {
		t.Fatal("the old PTR is still there")
	}
}
