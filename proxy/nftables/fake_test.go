package nftables

import (
	"context"
	"errors"
	"fmt"
	"maps"
	mathrand "math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
	"github.com/clusterdns/clusterdns/zone"
)

// fakeBase is a table with a nat hook, a chain it jumps to, a verdict map
// the chain looks up, a filter hook and a set.
func fakeBase() []Op {
	f := proxy.IPv4
	return []Op{
		{Add, &Table{Family: f}},
		{Add, &Chain{Family: f, Name: "pre", Hook: &Hook{"nat", "prerouting", "dstnat"}}},
		{Add, &Chain{Family: f, Name: "filter", Hook: &Hook{"filter", "input", "filter"}}},
		{Add, &Chain{Family: f, Name: "dispatch"}},
		{Add, &Chain{Family: f, Name: "svc"}},
		{Add, &Set{Family: f, Name: "ips", Key: []KeyType{KeyAddr, KeyProto, KeyPort}, Map: true}},
		{Add, &Set{Family: f, Name: "pairs", Key: []KeyType{KeyAddr, KeyAddr}}},
		{Add, &Rule{Family: f, Chain: "pre", Stmts: []Stmt{Jump{"dispatch"}}}},
		{Add, &Rule{Family: f, Chain: "dispatch", Stmts: []Stmt{VMap{"ips", true}}}},
		{Add, &Rule{Family: f, Chain: "svc", Stmts: []Stmt{Numgen{2}, Goto{"svc-b"}}}}, // refused: no chain svc-b
	}
}

func elem(addr string, target string) *Element {
	return &Element{Family: proxy.IPv4, Set: "ips", Key: serviceKey(netip.MustParseAddr(addr), "tcp", 80), Goto: target}
}

func rule(chain string, stmts ...Stmt) *Rule {
	return &Rule{Family: proxy.IPv4, Chain: chain, Stmts: stmts}
}

type refusal struct {
	name string
	ops  []Op // applied after the base (without its last, refused, rule)
	want error
}

// refusals are transactions the kernel refuses; TestKernelRefusesWhatTheFakeRefuses
// holds the fake to it.
func refusals() []refusal {
	dnat := DNAT{"tcp", netip.MustParseAddrPort("10.0.0.1:80")}
	return []refusal{
		{"rule in a missing chain", []Op{{Add, rule("nope", dnat)}}, errNotFound},
		{"jump to a missing chain", []Op{{Add, rule("svc", Jump{"nope"})}}, errNotFound},
		{"goto a base chain", []Op{{Add, rule("svc", Goto{"pre"})}}, errNotSupp},
		{"lookup of a missing set", []Op{{Add, rule("svc", SaddrIn{"nope"}, Goto{"svc"})}}, errNotFound},
		{"lookup of a set of another type", []Op{{Add, rule("svc", SaddrIn{"pairs"})}}, errInvalid},
		{"element of a missing map", []Op{{Add, &Element{Family: proxy.IPv4, Set: "nope", Key: nodePortKey("tcp", 80), Goto: "svc"}}}, errNotFound},
		{"element leading to a missing chain", []Op{{Add, elem("10.96.0.1", "nope")}}, errNotFound},
		{"element of the wrong key", []Op{{Add, &Element{Family: proxy.IPv4, Set: "ips", Key: nodePortKey("tcp", 80), Goto: "svc"}}}, errInvalid},
		{"element of the other family", []Op{{Add, elem("fd00::1", "svc")}}, errInvalid},
		{"element without a verdict in a map", []Op{{Add, elem("10.96.0.1", "")}}, errInvalid},
		{"element changing its verdict", []Op{{Add, &Chain{Family: proxy.IPv4, Name: "other"}}, {Add, elem("10.96.0.1", "svc")}, {Add, elem("10.96.0.1", "other")}}, errBusy},
		{"deleting a missing element", []Op{{Delete, elem("10.96.0.1", "svc")}}, errNotFound},
		{"deleting a missing chain", []Op{{Delete, &Chain{Family: proxy.IPv4, Name: "nope"}}}, errNotFound},
		{"deleting a chain a rule jumps to", []Op{{Delete, &Chain{Family: proxy.IPv4, Name: "dispatch"}}}, errBusy},
		{"deleting a chain a map element leads to", []Op{{Add, elem("10.96.0.1", "svc")}, {Delete, &Chain{Family: proxy.IPv4, Name: "svc"}}}, errBusy},
		{"deleting a map a rule looks up", []Op{{Delete, &Set{Family: proxy.IPv4, Name: "ips", Map: true}}}, errBusy},
		{"redeclaring a set with another type", []Op{{Add, &Set{Family: proxy.IPv4, Name: "pairs", Key: []KeyType{KeyAddr}}}}, errExists},
		{"a chain in a missing table", []Op{{Add, &Chain{Family: proxy.IPv6, Name: "svc"}}}, errNotFound},
		{"a loop through a map", []Op{{Add, elem("10.96.0.1", "svc")}, {Add, rule("svc", Jump{"dispatch"})}}, errLoop},
		{"dnat reached from a filter hook", []Op{{Add, rule("svc", dnat)}, {Add, rule("filter", Jump{"svc"})}}, errNotSupp},
		{"reject reached from postrouting", []Op{{Add, &Chain{Family: proxy.IPv4, Name: "post", Hook: &Hook{"nat", "postrouting", "srcnat"}}},
			{Add, rule("svc", Reject{})}, {Add, rule("post", Jump{"svc"})}}, errNotSupp},
		{"masquerade reached from prerouting", []Op{{Add, rule("svc", Masquerade{})}, {Add, elem("10.96.0.1", "svc")}}, errNotSupp},
		{"an address of the other family", []Op{{Add, rule("svc", AddrCmp{Src: true, Not: true, Prefix: netip.MustParsePrefix("fd00::/64")})}}, errInvalid},
	}
}

func TestFakeRefusesWhatTheKernelRefuses(t *testing.T) {
	for _, tc := range refusals() {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFake()
			base := fakeBase()
			if err := f.Apply(context.Background(), &Transaction{Ops: base[:len(base)-1]}); err != nil {
				t.Fatalf("base: %v", err)
			}
			before := f.Dump()
			err := f.Apply(context.Background(), &Transaction{Ops: tc.ops})
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if after := f.Dump(); after != before {
				t.Errorf("a refused transaction changed the tables:\n%s", after)
			}
		})
	}
	t.Run("base refused whole", func(t *testing.T) {
		f := NewFake()
		if err := f.Apply(context.Background(), &Transaction{Ops: fakeBase()}); !errors.Is(err, errNotFound) {
			t.Fatalf("got %v, want %v", err, errNotFound)
		}
		if d := f.Dump(); d != "" {
			t.Errorf("the refused transaction left tables:\n%s", d)
		}
	})
}

// What the kernel takes, the fake takes: declaring twice, flushing and
// deleting in the order the backend writes.
func TestFakeAcceptsIdempotentAddsAndOrderedDeletes(t *testing.T) {
	f := NewFake()
	base := fakeBase()
	base = base[:len(base)-1]
	dnat := DNAT{"tcp", netip.MustParseAddrPort("10.0.0.1:80")}
	steps := [][]Op{
		base,
		append(base[:len(base):len(base)], Op{Add, rule("svc", dnat)}, Op{Add, elem("10.96.0.1", "svc")}, Op{Add, elem("10.96.0.1", "svc")}),
		{{Delete, elem("10.96.0.1", "svc")}, {Flush, &Chain{Family: proxy.IPv4, Name: "svc"}}, {Delete, &Chain{Family: proxy.IPv4, Name: "svc"}}},
		{{Delete, &Table{Family: proxy.IPv4}}, {Add, &Table{Family: proxy.IPv4}}},
	}
	for i, ops := range steps {
		if err := f.Apply(context.Background(), &Transaction{Ops: ops}); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if got, want := f.Dump(), "table ip clusterdns {\n}\n"; got != want {
		t.Errorf("dump %q, want %q", got, want)
	}
	tables, _ := f.ListTables(context.Background())
	if string(tables) != "table ip clusterdns\n" {
		t.Errorf("tables %q", tables)
	}
	if !strings.Contains(f.Scripts[1], "add element ip clusterdns ips { 10.96.0.1 . tcp . 80 : goto svc }") {
		t.Errorf("script not recorded:\n%s", f.Scripts[1])
	}
}

// Through any sequence of partial syncs the fake ends where one full sync of
// the last model puts it, and every Service's cluster IP leads to exactly
// its ready endpoints (or is rejected without any). The kernel version of
// this is TestKernelPartialSyncsEqualFullSync; this one needs no root.
func TestFakePartialSyncsEqualFullSync(t *testing.T) {
	cfg := Config{Families: []proxy.Family{proxy.IPv4}, Routing: proxy.Routing{ClusterCIDRs: pt.Prefixes("172.16.0.0/12")}}
	fake := NewFake()
	cfg.Runner = fake
	b := New(cfg)
	rnd := mathrand.New(mathrand.NewPCG(3, 4))
	services := map[string]pt.Service{}
	created := 0
	var prev *proxy.Model
	for step := 0; step < 60; step++ {
		for n := 1 + rnd.IntN(3); n > 0; n-- {
			name := fmt.Sprintf("svc-%d", rnd.IntN(8))
			s, ok := services[name]
			if !ok {
				created++
				s = pt.Service{Namespace: "ns", Name: name, Port: 80, ClusterIPs: []string{fmt.Sprintf("10.96.0.%d", created)}}
			}
			switch rnd.IntN(6) {
			case 0:
				delete(services, name)
				continue
			case 1:
				s.Affinity = int32(rnd.IntN(2) * 60)
			case 2:
				if s.NodePort == 0 {
					created++ // node ports are unique, as the API server keeps them
					s.Type, s.NodePort = zone.TypeNodePort, int32(30000+created)
				} else {
					s.Type, s.NodePort = zone.TypeClusterIP, 0
				}
			}
			s.Ready = nil
			for _, i := range rnd.Perm(5)[:rnd.IntN(4)] {
				s.Ready = append(s.Ready, fmt.Sprintf("172.16.0.%d", i+1))
			}
			services[name] = s
		}
		list := slices.Collect(maps.Values(services))
		m := pt.Model(prev, list...)
		full := step == 0 || rnd.IntN(8) == 0
		if _, err := b.Sync(context.Background(), m, full); err != nil {
			t.Fatalf("step %d: sync (full %v): %v", step, full, err)
		}
		prev = m

		ref := NewFake()
		refCfg := cfg
		refCfg.Runner = ref
		if _, err := New(refCfg).Sync(context.Background(), pt.Model(nil, list...), true); err != nil {
			t.Fatalf("step %d: full sync: %v", step, err)
		}
		if got, want := resolveSlots(t, fake.Dump()), resolveSlots(t, ref.Dump()); got != want {
			t.Fatalf("step %d: after partial syncs\n%s\nafter one full sync\n%s", step, got, want)
		}
		tr := newTracer(t, fake, proxy.IPv4, nodeIP)
		for _, s := range list {
			want := []string{"REJECT"}
			if len(s.Ready) > 0 {
				want = endpointsOf(s.Ready, 80, false)
			}
			if got := tr.trace(tcp("172.16.9.9", s.ClusterIPs[0], 80), false); !slices.Equal(got, want) {
				t.Fatalf("step %d: %s: %v, want %v", step, s.Name, got, want)
			}
		}
	}
}
