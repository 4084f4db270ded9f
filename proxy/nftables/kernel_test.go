package nftables

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mathrand "math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/internal/testenv"
	"github.com/clusterdns/clusterdns/proxy"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
	"github.com/clusterdns/clusterdns/zone"
)

// testNamespace creates a network namespace of the test's own (nothing in it
// routes anywhere) and returns a runner for nft inside it. The tests that use
// it need root, ip and nft: they are left out under -short, and fail
// without them otherwise (CI has them).
func testNamespace(t testing.TB) ExecRunner {
	t.Helper()
	testenv.Require(t, testenv.Root(), testenv.Tools("ip", "nft"))
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "cdns-nft-" + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return ExecRunner{Prefix: []string{"ip", "netns", "exec", name}}
}

// netlinkRunner programs the namespace r runs nft in through netlink.
func netlinkRunner(t testing.TB, r ExecRunner) *NetlinkRunner {
	t.Helper()
	f, err := os.Open("/run/netns/" + r.Prefix[len(r.Prefix)-1])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &NetlinkRunner{Exec: r, NetNS: int(f.Fd())}
}

// The kernel takes every transaction the golden cases make, full and
// partial (the partial ones through netlink), and after each sync it lists
// what the fake lists.
func TestKernelAcceptsGoldenScripts(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			runner := testNamespace(t)
			cfg := tc.cfg
			cfg.Runner = netlinkRunner(t, runner)
			b := New(cfg)
			fake := NewFake()
			cfg.Runner = fake
			fb := New(cfg)
			var prev *proxy.Model
			for i, services := range tc.steps {
				m := pt.Model(prev, services...)
				for _, be := range []*Backend{b, fb} {
					if _, err := be.Sync(context.Background(), m, i == 0); err != nil {
						t.Fatalf("sync %d: %v", i, err)
					}
				}
				compareWithFake(t, runner, fake, fmt.Sprintf("sync %d", i))
				prev = m
			}
			if err := b.Cleanup(context.Background()); err != nil {
				t.Fatal(err)
			}
			tables, err := runner.ListTables(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(tables), TableName) {
				t.Errorf("tables left after cleanup:\n%s", tables)
			}
		})
	}
}

// compareWithFake checks that the kernel lists each family's table as the
// fake dumps it, once both are in the same order.
func compareWithFake(t *testing.T, r ExecRunner, fake *Fake, when string) {
	t.Helper()
	for _, f := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
		want := fake.DumpTable(f)
		if want == "" {
			continue
		}
		out, err := r.command(context.Background(), "list", "table", familyOf(f).table).Output()
		if err != nil {
			t.Fatalf("%s: nft list table %s: %v", when, familyOf(f).table, err)
		}
		if got := canonicalListing(t, string(out)); got != want {
			t.Fatalf("%s: the kernel lists\n%s\nthe fake dumps\n%s", when, got, want)
		}
	}
}

// canonicalListing puts a table as `nft list table` prints it into the
// fake's order: sets and maps by name, base chains by name, other chains by
// name, elements sorted.
func canonicalListing(t *testing.T, listing string) string {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(listing, "\n"), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "table ") || lines[len(lines)-1] != "}" {
		t.Fatalf("not a table listing:\n%s", listing)
	}
	type block struct {
		order int // 0 sets and maps, 1 base chains, 2 chains
		name  string
		text  string
	}
	var blocks []block
	var cur *block
	var elements *[]string
	for _, line := range lines[1 : len(lines)-1] {
		switch {
		case line == "":
		case cur == nil:
			kind, name, _ := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(line, "\t"), " {"), " ")
			blocks = append(blocks, block{name: name, text: line + "\n"})
			cur = &blocks[len(blocks)-1]
			if kind == "chain" {
				cur.order = 2
			}
		case line == "\t}":
			cur.text += line + "\n"
			cur = nil
		case elements != nil || strings.HasPrefix(line, "\t\telements = { "):
			if elements == nil {
				elements = new([]string)
				line = strings.TrimPrefix(line, "\t\telements = { ")
			}
			last := strings.HasSuffix(line, " }")
			for _, e := range strings.Split(strings.TrimSuffix(line, " }"), ",") {
				if e = strings.TrimSpace(e); e != "" {
					*elements = append(*elements, e)
				}
			}
			if last {
				slices.Sort(*elements)
				cur.text += "\t\telements = { " + strings.Join(*elements, ",\n\t\t\t     ") + " }\n"
				elements = nil
			}
		default:
			if cur.order == 2 && strings.HasPrefix(line, "\t\ttype ") {
				cur.order = 1
			}
			cur.text += line + "\n"
		}
	}
	slices.SortStableFunc(blocks, func(a, b block) int {
		if a.order != b.order {
			return a.order - b.order
		}
		return strings.Compare(a.name, b.name)
	})
	texts := make([]string, len(blocks))
	for i, b := range blocks {
		texts[i] = b.text
	}
	return lines[0] + "\n" + strings.Join(texts, "\n") + "}\n"
}

// resolvedListing is a family's table as `nft list table` prints it, in the
// fake's order and with each draw from the endpoints map resolved.
func resolvedListing(t *testing.T, r ExecRunner, f proxy.Family) string {
	t.Helper()
	out, err := r.command(context.Background(), "list", "table", familyOf(f).table).Output()
	if err != nil {
		t.Fatalf("nft list table %s: %v", familyOf(f).table, err)
	}
	return resolveSlots(t, canonicalListing(t, string(out)))
}

// tableState is a table as the kernel lists it, reduced to what a sync
// decides: each chain's rules in order, each map's and set's declaration and
// elements as a set. Handles and element order are left out.
type tableState map[string][]string

// drawOffset is the offset of a draw from the endpoints map in nft's JSON.
var drawOffset = regexp.MustCompile(`,?"offset": ?[0-9]+`)

// listState reads a family's table through `nft -j list table`, leaving out
// the endpoints map's elements and the draws' offsets.
func listState(t *testing.T, r ExecRunner, f proxy.Family) tableState {
	t.Helper()
	fam := "ip"
	if f == proxy.IPv6 {
		fam = "ip6"
	}
	out, err := r.command(context.Background(), "-j", "list", "table", fam, TableName).Output()
	if err != nil {
		t.Fatalf("nft list table %s: %v", fam, err)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	st := tableState{}
	for _, item := range doc.Nftables {
		for kind, raw := range item {
			var obj map[string]any
			if err := json.Unmarshal(raw, &obj); err != nil {
				t.Fatal(err)
			}
			delete(obj, "handle")
			switch kind {
			case "chain":
				name := "chain " + obj["name"].(string)
				delete(obj, "name")
				enc, _ := json.Marshal(obj)
				st[name] = append([]string{string(enc)}, st[name]...)
			case "rule":
				name := "chain " + obj["chain"].(string)
				enc, _ := json.Marshal(obj["expr"])
				// Which slots a draw takes depends on past syncs;
				// resolveSlots compares what they hold.
				enc = drawOffset.ReplaceAll(enc, nil)
				st[name] = append(st[name], string(enc))
			case "map", "set":
				var elems []string
				if list, ok := obj["elem"].([]any); ok {
					for _, e := range list {
						enc, _ := json.Marshal(e)
						elems = append(elems, string(enc))
					}
				}
				if strings.HasPrefix(obj["name"].(string), mapEndpoints) {
					elems = nil
				}
				slices.Sort(elems)
				delete(obj, "elem")
				enc, _ := json.Marshal(obj)
				st[kind+" "+obj["name"].(string)] = append([]string{string(enc)}, elems...)
			}
		}
	}
	return st
}

// After any sequence of partial (and periodic full) syncs the kernel holds exactly what one full
// sync of the last model makes in an empty namespace.
//
// The partial syncs go through nft in one run and through netlink in the
// other: the netlink runner must make what nft makes of the same script. The
// IPv4 cluster CIDR is not cut at a byte, so that its match needs a mask.
func TestKernelPartialSyncsEqualFullSync(t *testing.T) {
	for _, via := range []string{"nft", "netlink"} {
		t.Run(via, func(t *testing.T) { testPartialSyncsEqualFullSync(t, via) })
	}
}

func testPartialSyncsEqualFullSync(t *testing.T, via string) {
	incremental, reference := testNamespace(t), testNamespace(t)
	cfg := Config{Routing: proxy.Routing{ClusterCIDRs: pt.Prefixes("172.16.0.0/12", "fd00:172::/64")}}
	cfg.Runner = incremental
	if via == "netlink" {
		cfg.Runner = netlinkRunner(t, incremental)
	}
	b := New(cfg)
	// A fake takes the same syncs; it must list what the kernel lists.
	fake := NewFake()
	fakeCfg := cfg
	fakeCfg.Runner = fake
	fb := New(fakeCfg)
	rnd := mathrand.New(mathrand.NewPCG(1, 2))
	services := map[string]pt.Service{}
	var prev *proxy.Model
	// Addresses and node ports are unique, as the API server keeps them.
	created := 0
	next := func() int { created++; return created }
	const steps = 40
	for step := 0; step < steps; step++ {
		// Change a few Services at random: add, remove, move endpoints,
		// toggle affinity, node port, external IP, port and protocol.
		for n := 1 + rnd.IntN(3); n > 0; n-- {
			name := fmt.Sprintf("svc-%d", rnd.IntN(6))
			s, ok := services[name]
			if !ok || rnd.IntN(5) == 0 {
				n := next()
				s = pt.Service{Namespace: "ns", Name: name, Port: 80,
					ClusterIPs: []string{fmt.Sprintf("10.96.%d.%d", n/250, n%250+1), fmt.Sprintf("fd00:96::%x", n)}}
			}
			switch rnd.IntN(8) {
			case 0:
				delete(services, name)
				continue
			case 1:
				s.Affinity = int32(rnd.IntN(2) * (60 + rnd.IntN(3)))
			case 2:
				if s.NodePort == 0 {
					s.Type, s.NodePort = zone.TypeNodePort, int32(30000+next()%2000)
				} else {
					s.Type, s.NodePort = zone.TypeClusterIP, 0
				}
			case 3:
				if len(s.ExternalIPs) == 0 {
					s.ExternalIPs = []string{fmt.Sprintf("192.0.2.%d", 1+next()%250)}
				} else {
					s.ExternalIPs = nil
				}
			case 4:
				s.Protocol = []zone.Protocol{zone.ProtocolTCP, zone.ProtocolUDP}[rnd.IntN(2)]
				s.Port = int32(80 + rnd.IntN(3))
			}
			s.Ready = nil
			for k := rnd.IntN(4); k > 0; k-- {
				s.Ready = append(s.Ready, fmt.Sprintf("172.16.%d.%d", rnd.IntN(3), 1+rnd.IntN(4)))
				if rnd.IntN(2) == 0 {
					s.Ready = append(s.Ready, fmt.Sprintf("fd00:172::%d", 1+rnd.IntN(4)))
				}
			}
			services[name] = s
		}
		list := make([]pt.Service, 0, len(services))
		for _, s := range services {
			list = append(list, s)
		}
		m := pt.Model(prev, list...)
		// Now and then a periodic full sync, over a table already there.
		full := step == 0 || rnd.IntN(6) == 0
		if _, err := b.Sync(context.Background(), m, full); err != nil {
			t.Fatalf("step %d: sync (full %v): %v", step, full, err)
		}
		if _, err := fb.Sync(context.Background(), m, full); err != nil {
			t.Fatalf("step %d: fake sync (full %v): %v", step, full, err)
		}
		compareWithFake(t, incremental, fake, fmt.Sprintf("step %d", step))
		refCfg := cfg
		refCfg.Runner = reference
		if _, err := New(refCfg).Sync(context.Background(), pt.Model(nil, list...), true); err != nil {
			t.Fatalf("step %d: full sync: %v", step, err)
		}
		for _, f := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
			got, want := resolvedListing(t, incremental, f), resolvedListing(t, reference, f)
			if got != want {
				t.Fatalf("step %d, %s: after partial syncs:\n%s\nafter one full sync:\n%s", step, f, got, want)
			}
		}
		for _, f := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
			got, want := listState(t, incremental, f), listState(t, reference, f)
			for name, w := range want {
				if g := got[name]; !slices.Equal(g, w) {
					t.Fatalf("step %d, %s: %s after partial syncs:\n%s\nafter one full sync:\n%s", step, f, name, strings.Join(g, "\n"), strings.Join(w, "\n"))
				}
			}
			for name := range got {
				if _, ok := want[name]; !ok {
					t.Fatalf("step %d, %s: %s is left over after partial syncs", step, f, name)
				}
			}
		}
		prev = m
	}
}

// A transaction the kernel refuses changes nothing: here a chain of someone
// else's, in our table, jumps to the service chain a partial sync deletes,
// and the kernel answers EBUSY. The table stays as it was; the next sync,
// which replaces the tables after a failure, makes exactly what a clean full
// sync makes.
func TestKernelRefusedSyncKeepsTable(t *testing.T) {
	ctx := context.Background()
	runner, reference := testNamespace(t), testNamespace(t)
	cfg := Config{Runner: netlinkRunner(t, runner), Families: []proxy.Family{proxy.IPv4}}
	b := New(cfg)
	kept := pt.Service{Namespace: "ns", Name: "kept", Port: 80, ClusterIPs: []string{"10.96.0.1"}, Ready: []string{"172.16.0.1", "172.16.0.2"}}
	gone := pt.Service{Namespace: "ns", Name: "gone", Port: 80, ClusterIPs: []string{"10.96.0.2"}, Ready: []string{"172.16.0.3"}}
	first := pt.Model(nil, kept, gone)
	if _, err := b.Sync(ctx, first, true); err != nil {
		t.Fatal(err)
	}
	var held string
	for name := range listState(t, runner, proxy.IPv4) {
		if strings.HasPrefix(name, "chain service-") && strings.Contains(name, "gone") {
			held = strings.TrimPrefix(name, "chain ")
		}
	}
	if held == "" {
		t.Fatalf("no service chain for ns/gone in %v", listState(t, runner, proxy.IPv4))
	}
	for _, args := range [][]string{{"add", "chain", "ip", TableName, "intruder"}, {"add", "rule", "ip", TableName, "intruder", "jump", held}} {
		if out, err := runner.command(ctx, args...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v: %s", args, err, out)
		}
	}
	before := listState(t, runner, proxy.IPv4)
	kept.Ready = kept.Ready[:1]
	second := pt.Model(first, kept)
	if _, err := b.Sync(ctx, second, false); err == nil {
		t.Fatal("the kernel took a transaction deleting a chain someone else jumps to")
	}
	after := listState(t, runner, proxy.IPv4)
	for name, want := range before {
		if got := after[name]; !slices.Equal(got, want) {
			t.Errorf("refused sync changed %s:\n%s\nwas:\n%s", name, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	if len(after) != len(before) {
		t.Errorf("refused sync changed the table's objects: %d, was %d", len(after), len(before))
	}

	if _, err := b.Sync(ctx, second, false); err != nil {
		t.Fatalf("sync after the refusal: %v", err)
	}
	refCfg := cfg
	refCfg.Runner = reference
	if _, err := New(refCfg).Sync(ctx, pt.Model(nil, kept), true); err != nil {
		t.Fatal(err)
	}
	got, want := listState(t, runner, proxy.IPv4), listState(t, reference, proxy.IPv4)
	if len(got) != len(want) {
		t.Errorf("after recovery %d objects, a clean full sync makes %d", len(got), len(want))
	}
	for name, w := range want {
		if g := got[name]; !slices.Equal(g, w) {
			t.Errorf("after recovery %s:\n%s\nafter a clean full sync:\n%s", name, strings.Join(g, "\n"), strings.Join(w, "\n"))
		}
	}
}

// The kernel (through nft) refuses every transaction the fake refuses.
func TestKernelRefusesWhatTheFakeRefuses(t *testing.T) {
	runner := testNamespace(t)
	ctx := context.Background()
	base := fakeBase()
	base = base[:len(base)-1]
	for _, tc := range refusals() {
		t.Run(tc.name, func(t *testing.T) {
			reset := &Transaction{Ops: []Op{{Add, &Table{Family: proxy.IPv4}}, {Delete, &Table{Family: proxy.IPv4}}}}
			if err := runner.Apply(ctx, reset); err != nil {
				t.Fatal(err)
			}
			if err := runner.Apply(ctx, &Transaction{Ops: base}); err != nil {
				t.Fatalf("base: %v", err)
			}
			if err := runner.Apply(ctx, &Transaction{Ops: tc.ops}); err == nil {
				t.Errorf("the kernel took it:\n%s", (&Transaction{Ops: tc.ops}).Script())
			}
		})
	}
}
