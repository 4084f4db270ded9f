package iptables

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/zone"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// traceCase sends one packet and lists where it may end up.
type traceCase struct {
	name     string
	pkt      packet
	fromNode bool
	family   proxy.Family
	want     []string
}

const nodeIP = "192.168.77.1"

func TestRenderGoldenAndTrace(t *testing.T) {
	withoutEndpoints := svcSpec{ns: "dev", name: "empty", typ: zone.TypeNodePort, ips: []string{"10.10.0.5"}, port: 8080, nodePort: 30080}
	dual := svcSpec{ns: "dev", name: "dual", ips: []string{"10.10.0.6", "fd00:10::6"}, port: 53, proto: zone.ProtocolUDP, portName: "dns",
		ready: []string{"172.16.79.83", "fd00:172::83", "fd00:172::84"}}
	changed := clusterIPSvc
	changed.ready = []string{"172.16.79.83", "172.16.69.207", "172.16.1.9"}
	draining := svcSpec{ns: "dev", name: "draining", ips: []string{"10.10.0.7"}, port: 80,
		notReady: []string{"172.16.1.1"}, draining: []string{"172.16.1.2", "172.16.1.3"}}
	mixed := svcSpec{ns: "dev", name: "mixed", ips: []string{"10.10.0.8"}, port: 80,
		ready: []string{"172.16.1.4"}, notReady: []string{"172.16.1.5"}, draining: []string{"172.16.1.6"}}
	affinity := nodePortSvc
	affinity.affinity = 10800

	cases := []struct {
		name   string
		cfg    Config
		steps  []*proxy.Model
		traces []traceCase
	}{
		{
			name:  "clusterip",
			steps: []*proxy.Model{modelOf(clusterIPSvc)},
			traces: []traceCase{
				{name: "pod to service", pkt: tcp("172.16.1.1", "10.10.97.97", 80), want: endpointsOf(nginxPods, 80, false)},
				{name: "node to service", pkt: tcp(nodeIP, "10.10.97.97", 80), fromNode: true, want: endpointsOf(nginxPods, 80, false)},
				{name: "wrong port", pkt: tcp("172.16.1.1", "10.10.97.97", 81), want: []string{"untranslated"}},
				{name: "hairpin", pkt: tcp("172.16.79.83", "10.10.97.97", 80),
					want: []string{"172.16.69.206:80", "172.16.69.207:80", "172.16.79.83:80 masq"}},
			},
		},
		{
			name:  "nodeport",
			cfg:   Config{Routing: proxy.Routing{ClusterCIDRs: prefixes("172.16.0.0/16")}},
			steps: []*proxy.Model{modelOf(nodePortSvc)},
			traces: []traceCase{
				{name: "outside to node port", pkt: tcp("192.168.77.2", nodeIP, 30002), want: endpointsOf(nginxPods, 80, true)},
				{name: "node to own node port", pkt: tcp(nodeIP, nodeIP, 30002), fromNode: true, want: endpointsOf(nginxPods, 80, true)},
				{name: "pod to service", pkt: tcp("172.16.1.1", "10.10.97.98", 80), want: endpointsOf(nginxPods, 80, false)},
				{name: "off-cluster to service", pkt: tcp("192.168.77.2", "10.10.97.98", 80), want: endpointsOf(nginxPods, 80, true)},
				{name: "loopback node port", pkt: tcp("127.0.0.1", "127.0.0.1", 30002), fromNode: true, want: []string{"untranslated"}},
				{name: "other port on node", pkt: tcp("192.168.77.2", nodeIP, 30003), want: []string{"untranslated"}},
			},
		},
		{
			name:  "nodeport-addresses",
			cfg:   Config{Routing: proxy.Routing{NodePortAddresses: prefixes("192.168.77.0/24")}},
			steps: []*proxy.Model{modelOf(nodePortSvc, withoutEndpoints)},
			traces: []traceCase{
				{name: "listed address", pkt: tcp("192.168.77.2", nodeIP, 30002), want: endpointsOf(nginxPods, 80, true)},
				{name: "unlisted local address", pkt: tcp("192.168.77.2", "10.99.0.1", 30002), want: []string{"untranslated"}},
			},
		},
		{
			name:  "affinity",
			steps: []*proxy.Model{modelOf(affinity)},
			traces: []traceCase{
				{name: "pod to service", pkt: tcp("172.16.1.1", "10.10.97.98", 80), want: endpointsOf(nginxPods, 80, false)},
				{name: "outside to node port", pkt: tcp("192.168.77.2", nodeIP, 30002), want: endpointsOf(nginxPods, 80, true)},
			},
		},
		{
			name:  "no-endpoints",
			steps: []*proxy.Model{modelOf(withoutEndpoints, clusterIPSvc)},
			traces: []traceCase{
				{name: "pod to service", pkt: tcp("172.16.1.1", "10.10.0.5", 8080), want: []string{"REJECT"}},
				{name: "node to service", pkt: tcp(nodeIP, "10.10.0.5", 8080), fromNode: true, want: []string{"REJECT"}},
				{name: "outside to node port", pkt: tcp("192.168.77.2", nodeIP, 30080), want: []string{"REJECT"}},
				{name: "other service still works", pkt: tcp("172.16.1.1", "10.10.97.97", 80), want: endpointsOf(nginxPods, 80, false)},
			},
		},
		{
			name:  "terminating-fallback",
			steps: []*proxy.Model{modelOf(draining, mixed)},
			traces: []traceCase{
				{name: "only draining endpoints", pkt: tcp("172.16.9.9", "10.10.0.7", 80), want: endpointsOf([]string{"172.16.1.2", "172.16.1.3"}, 80, false)},
				{name: "ready wins over draining", pkt: tcp("172.16.9.9", "10.10.0.8", 80), want: endpointsOf([]string{"172.16.1.4"}, 80, false)},
			},
		},
		{
			name:  "dual-stack",
			cfg:   Config{Routing: proxy.Routing{ClusterCIDRs: prefixes("172.16.0.0/16", "fd00:172::/64")}},
			steps: []*proxy.Model{modelOf(dual)},
			traces: []traceCase{
				{name: "v4", pkt: udp("172.16.1.1", "10.10.0.6", 53), want: endpointsOf([]string{"172.16.79.83"}, 53, false)},
				{name: "v6", family: proxy.IPv6, pkt: udp("fd00:172::99", "fd00:10::6", 53), want: endpointsOf([]string{"fd00:172::83", "fd00:172::84"}, 53, false)},
				{name: "v6 off-cluster", family: proxy.IPv6, pkt: udp("fd00:99::1", "fd00:10::6", 53), want: endpointsOf([]string{"fd00:172::83", "fd00:172::84"}, 53, true)},
			},
		},
		{
			name:  "masquerade-all",
			cfg:   Config{Routing: proxy.Routing{MasqueradeAll: true}},
			steps: []*proxy.Model{modelOf(clusterIPSvc)},
			traces: []traceCase{
				{name: "pod to service", pkt: tcp("172.16.1.1", "10.10.97.97", 80), want: endpointsOf(nginxPods, 80, true)},
			},
		},
		{
			name:  "partial-endpoint-change",
			steps: []*proxy.Model{modelOf(clusterIPSvc, nodePortSvc), modelOf(changed, nodePortSvc)},
			traces: []traceCase{
				{name: "new endpoints", pkt: tcp("172.16.1.1", "10.10.97.97", 80), want: endpointsOf(changed.ready, 80, false)},
				{name: "other service unchanged", pkt: tcp("172.16.1.1", "10.10.97.98", 80), want: endpointsOf(nginxPods, 80, false)},
			},
		},
		{
			name:  "partial-service-removed",
			steps: []*proxy.Model{modelOf(clusterIPSvc, nodePortSvc), modelOf(clusterIPSvc)},
			traces: []traceCase{
				{name: "removed service", pkt: tcp("172.16.1.1", "10.10.97.98", 80), want: []string{"untranslated"}},
				{name: "removed node port", pkt: tcp("192.168.77.2", nodeIP, 30002), want: []string{"untranslated"}},
				{name: "kept service", pkt: tcp("172.16.1.1", "10.10.97.97", 80), want: endpointsOf(nginxPods, 80, false)},
			},
		},
		{
			name:  "partial-endpoints-gone",
			steps: []*proxy.Model{modelOf(clusterIPSvc), modelOf(svcSpec{ns: "dev", name: "service-clusterip", ips: []string{"10.10.97.97"}, port: 80})},
			traces: []traceCase{
				{name: "now rejected", pkt: tcp("172.16.1.1", "10.10.97.97", 80), want: []string{"REJECT"}},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := NewFakeRunner()
			cfg := tc.cfg
			cfg.Runner = fake
			b := New(cfg)
			for i, m := range tc.steps {
				if _, err := b.Sync(context.Background(), m, i == 0); err != nil {
					t.Fatalf("sync %d: %v", i, err)
				}
			}
			// The golden file holds what the last sync applied.
			var got bytes.Buffer
			for _, r := range restoresOfLastSync(fake, len(tc.steps)) {
				fmt.Fprintf(&got, "# %s\n%s", r.Family, r.Data)
			}
			checkGolden(t, tc.name, got.Bytes())

			for _, tr := range tc.traces {
				fam := tr.family
				if fam == 0 {
					fam = proxy.IPv4
				}
				local := []string{nodeIP, "10.99.0.1", "127.0.0.1", "fd00:77::1", "::1"}
				gotV := newTracer(t, fake.Dump(fam), local...).trace(tr.pkt, tr.fromNode)
				if !slices.Equal(gotV, tr.want) {
					t.Errorf("%s: packet %+v reaches %v, want %v", tr.name, tr.pkt, gotV, tr.want)
				}
			}
		})
	}
}

// restoresOfLastSync returns the restore inputs of the last Sync. The first
// sync of a backend applies one restore per family; every later sync of these
// tests changes IPv4 only.
func restoresOfLastSync(fake *FakeRunner, syncs int) []FakeRestore {
	if syncs == 1 {
		return fake.Restores
	}
	return fake.Restores[len(fake.Restores)-1:]
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./proxy/iptables -run %s -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("rendered rules differ from %s (run with -update if the change is intended)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// randomCluster makes n services with a random number of endpoints each.
func randomCluster(rng *rand.Rand, n int) []svcSpec {
	specs := make([]svcSpec, n)
	for i := range specs {
		s := svcSpec{ns: "ns" + fmt.Sprint(i%3), name: fmt.Sprintf("svc%d", i), ips: []string{fmt.Sprintf("10.10.%d.%d", i/250, i%250+1)}, port: 80}
		if rng.IntN(3) == 0 {
			s.typ, s.nodePort = zone.TypeNodePort, int32(30000+i)
		}
		if rng.IntN(4) == 0 {
			s.proto = zone.ProtocolUDP
		}
		if rng.IntN(5) == 0 {
			s.affinity = 60
		}
		for e := rng.IntN(5); e > 0; e-- {
			s.ready = append(s.ready, fmt.Sprintf("172.16.%d.%d", rng.IntN(4), rng.IntN(250)+1))
		}
		if rng.IntN(6) == 0 {
			s.ips = append(s.ips, fmt.Sprintf("fd00:10::%x", i+1))
			s.ready = append(s.ready, fmt.Sprintf("fd00:172::%x", rng.IntN(250)+1))
		}
		specs[i] = s
	}
	return specs
}

// TestPartialSyncsEqualFullSync changes a cluster at random and checks, after
// every partial sync, that the tables are exactly what one full sync of the
// same model makes in empty tables.
func TestPartialSyncsEqualFullSync(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	specs := randomCluster(rng, 40)
	fake := NewFakeRunner()
	b := New(Config{Runner: fake, Routing: proxy.Routing{ClusterCIDRs: prefixes("172.16.0.0/16")}})
	ctx := context.Background()
	m := modelOf(specs...)
	if _, err := b.Sync(ctx, m, true); err != nil {
		t.Fatal(err)
	}
	for step := range 60 {
		i := rng.IntN(len(specs))
		switch rng.IntN(5) {
		case 0: // remove a service
			specs = slices.Delete(specs, i, i+1)
		case 1: // add one
			specs = append(specs, randomCluster(rng, 1)[0])
			specs[len(specs)-1].name = fmt.Sprintf("new%d", step)
			specs[len(specs)-1].ips = []string{fmt.Sprintf("10.20.0.%d", step+1)}
		case 2: // drop all endpoints
			specs[i].ready = nil
		case 3: // change the node port or the port
			specs[i].typ, specs[i].nodePort = zone.TypeNodePort, int32(31000+step)
			specs[i].port = int32(8000 + step)
		default: // endpoints change
			specs[i].ready = append(slices.Clone(specs[i].ready[:len(specs[i].ready)/2]), fmt.Sprintf("172.16.9.%d", step+1))
		}
		// Odd steps build the model from the previous one (the backend then
		// looks only at its list of changes), even steps from scratch.
		if step%2 == 1 {
			m = modelFrom(m, specs...)
		} else {
			m = modelOf(specs...)
		}
		res, err := b.Sync(ctx, m, false)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		ref := NewFakeRunner()
		refRes, err := New(Config{Runner: ref, Routing: proxy.Routing{ClusterCIDRs: prefixes("172.16.0.0/16")}}).Sync(ctx, m, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
			if got, want := fake.Dump(f), ref.Dump(f); got != want {
				t.Fatalf("step %d %s: tables after partial sync differ from a full sync:\n%s", step, f, lineDiff(got, want))
			}
		}
		if res.Rules != refRes.Rules || res.Rules+12 != fake.RuleCount(proxy.IPv4)+fake.RuleCount(proxy.IPv6) {
			t.Fatalf("step %d: rule count %d, full sync says %d, tables hold %d (+12 hooks)", step, res.Rules, refRes.Rules,
				fake.RuleCount(proxy.IPv4)+fake.RuleCount(proxy.IPv6))
		}
	}
	if fake.Saves != 4 {
		t.Errorf("the backend listed the kernel's chains %d times, want 4 (nat and filter, two families, at start only)", fake.Saves)
	}
}

func lineDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	var out []string
	for _, l := range g {
		if !slices.Contains(w, l) {
			out = append(out, "+ "+l)
		}
	}
	for _, l := range w {
		if !slices.Contains(g, l) {
			out = append(out, "- "+l)
		}
	}
	return strings.Join(out, "\n")
}

// TestPartialSyncWritesOnlyTheChangedService checks that an endpoint change
// at scale rewrites one service's chains and no dispatch chain.
func TestPartialSyncWritesOnlyTheChangedService(t *testing.T) {
	specs := make([]svcSpec, 500)
	for i := range specs {
		specs[i] = svcSpec{ns: "dev", name: fmt.Sprintf("s%d", i), ips: []string{fmt.Sprintf("10.10.%d.%d", i/200, i%200+1)}, port: 80,
			ready: []string{fmt.Sprintf("172.16.%d.%d", i/200, i%200+1), fmt.Sprintf("172.17.%d.%d", i/200, i%200+1)}}
	}
	fake := NewFakeRunner()
	b := New(Config{Runner: fake, Families: []proxy.Family{proxy.IPv4}})
	ctx := context.Background()
	if _, err := b.Sync(ctx, modelOf(specs...), true); err != nil {
		t.Fatal(err)
	}
	specs[250].ready = specs[250].ready[:1]
	n := len(fake.Restores)
	res, err := b.Sync(ctx, modelOf(specs...), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(fake.Restores) != n+1 {
		t.Fatalf("%d restores for one change, want 1", len(fake.Restores)-n)
	}
	in := fake.Restores[n].Data
	if res.Rewritten != 1 || strings.Count(in, ":CDNS-SVC-") != 1 || strings.Contains(in, ":"+chainServices) || strings.Contains(in, "*filter") {
		t.Errorf("partial sync rewrote %d service ports; input:\n%s", res.Rewritten, in)
	}
	if !strings.Contains(in, "-X CDNS-SEP-") {
		t.Errorf("the removed endpoint's chain is not deleted:\n%s", in)
	}
	// Nothing changed: nothing applied.
	if _, err := b.Sync(ctx, modelOf(specs...), false); err != nil {
		t.Fatal(err)
	}
	if len(fake.Restores) != n+1 {
		t.Errorf("a sync without changes applied %d restores", len(fake.Restores)-n-1)
	}
}

// TestFailedSyncIsRepairedByFullSync makes one restore fail and checks the
// next full sync lists the kernel's chains again and converges.
func TestFailedSyncIsRepairedByFullSync(t *testing.T) {
	fake := NewFakeRunner()
	b := New(Config{Runner: fake, Families: []proxy.Family{proxy.IPv4}})
	ctx := context.Background()
	if _, err := b.Sync(ctx, modelOf(clusterIPSvc, nodePortSvc), true); err != nil {
		t.Fatal(err)
	}
	fake.FailRestores = 1
	if _, err := b.Sync(ctx, modelOf(clusterIPSvc), false); err == nil {
		t.Fatal("sync succeeded although the restore failed")
	}
	saves := fake.Saves
	// Even a sync asked to be partial becomes full after a failure.
	if _, err := b.Sync(ctx, modelOf(clusterIPSvc), false); err != nil {
		t.Fatal(err)
	}
	if fake.Saves == saves {
		t.Error("the sync after a failure did not list the kernel's chains")
	}
	ref := NewFakeRunner()
	if _, err := New(Config{Runner: ref, Families: []proxy.Family{proxy.IPv4}}).Sync(ctx, modelOf(clusterIPSvc), true); err != nil {
		t.Fatal(err)
	}
	if got, want := fake.Dump(proxy.IPv4), ref.Dump(proxy.IPv4); got != want {
		t.Errorf("tables after recovery differ from a fresh full sync:\n%s", lineDiff(got, want))
	}
}

// TestStaleChainsFromAnEarlierRunAreDeleted starts a backend on tables an
// earlier run left behind.
func TestStaleChainsFromAnEarlierRunAreDeleted(t *testing.T) {
	fake := NewFakeRunner()
	ctx := context.Background()
	if _, err := New(Config{Runner: fake}).Sync(ctx, modelOf(clusterIPSvc, nodePortSvc), true); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Runner: fake}).Sync(ctx, modelOf(clusterIPSvc), true); err != nil {
		t.Fatal(err)
	}
	ref := NewFakeRunner()
	if _, err := New(Config{Runner: ref}).Sync(ctx, modelOf(clusterIPSvc), true); err != nil {
		t.Fatal(err)
	}
	if got, want := fake.Dump(proxy.IPv4), ref.Dump(proxy.IPv4); got != want {
		t.Errorf("leftovers of the earlier run:\n%s", lineDiff(got, want))
	}
}

func TestCleanupRemovesEverything(t *testing.T) {
	fake := NewFakeRunner()
	pristine4, pristine6 := fake.Dump(proxy.IPv4), fake.Dump(proxy.IPv6)
	ctx := context.Background()
	if _, err := New(Config{Runner: fake}).Sync(ctx, modelOf(clusterIPSvc, nodePortSvc, svcSpec{ns: "a", name: "v6", ips: []string{"fd00::1"}, port: 1, ready: []string{"fd00::2"}}), true); err != nil {
		t.Fatal(err)
	}
	// A fresh backend (as `clusterdns proxy --cleanup` is) cleans up what
	// another run programmed.
	b := New(Config{Runner: fake})
	if err := b.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fake.Dump(proxy.IPv4); got != pristine4 {
		t.Errorf("IPv4 tables after cleanup:\n%s", lineDiff(got, pristine4))
	}
	if got := fake.Dump(proxy.IPv6); got != pristine6 {
		t.Errorf("IPv6 tables after cleanup:\n%s", lineDiff(got, pristine6))
	}
	n := len(fake.Restores)
	if err := b.Cleanup(ctx); err != nil {
		t.Fatalf("second cleanup: %v", err)
	}
	if len(fake.Restores) != n {
		t.Error("cleanup of clean tables applied a restore")
	}
}

// Starting IPVS mode cleans up after iptables mode; that must leave IPVS
// mode's own chains (from its previous run) in place.
func TestCleanupLeavesIPVSModeChains(t *testing.T) {
	fake := NewFakeRunner()
	ctx := context.Background()
	ipvsRules := "*nat\n:CDNS-IPVS-SERVICES - [0:0]\n-A PREROUTING -j CDNS-IPVS-SERVICES\n-A CDNS-IPVS-SERVICES -j RETURN\nCOMMIT\n"
	if err := fake.Restore(ctx, proxy.IPv4, []byte(ipvsRules)); err != nil {
		t.Fatal(err)
	}
	withIPVS := fake.Dump(proxy.IPv4)
	b := New(Config{Runner: fake})
	if _, err := b.Sync(ctx, modelOf(clusterIPSvc), true); err != nil {
		t.Fatal(err)
	}
	if err := New(Config{Runner: fake}).Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fake.Dump(proxy.IPv4); got != withIPVS {
		t.Errorf("after cleanup:\n%s", lineDiff(got, withIPVS))
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	fake := NewFakeRunner()
	b := New(Config{Runner: fake})
	var out bytes.Buffer
	if err := b.DryRun(modelOf(clusterIPSvc), &out); err != nil {
		t.Fatal(err)
	}
	if len(fake.Restores) != 0 || fake.Saves != 0 {
		t.Errorf("dry run touched the runner: %d restores, %d saves", len(fake.Restores), fake.Saves)
	}
	for _, want := range []string{"*nat\n", "-j DNAT --to-destination 172.16.79.83:80", "# hook: iptables -t nat -I PREROUTING 1", "# ip6tables-restore"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry-run output lacks %q:\n%s", want, out.String())
		}
	}
	// What the dry run prints is what a first sync applies.
	if _, err := b.Sync(context.Background(), modelOf(clusterIPSvc), true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), fake.Restores[0].Data) {
		t.Errorf("dry-run output does not contain the first sync's input:\n%s", fake.Restores[0].Data)
	}
}

// Hook rules are put in before the first restore and only when missing, so a
// periodic full sync of a large table issues no single iptables command:
// with iptables-legacy each one rewrites the whole table.
func TestFullSyncAddsOnlyMissingHooks(t *testing.T) {
	fake := NewFakeRunner()
	b := New(Config{Runner: fake, Families: []proxy.Family{proxy.IPv4}})
	ctx := context.Background()
	m := modelOf(clusterIPSvc, nodePortSvc)
	if _, err := b.Sync(ctx, m, true); err != nil {
		t.Fatal(err)
	}
	dump := fake.Dump(proxy.IPv4)
	for _, h := range hooks() {
		if !strings.Contains(dump, "-A "+h.chain+" ") || !strings.Contains(dump, "-j "+h.spec[len(h.spec)-1]) {
			t.Fatalf("hook %s %s missing after the first sync:\n%s", h.table, h.chain, dump)
		}
	}
	if fake.Runs == 0 {
		t.Fatal("the first sync inserted no hook")
	}
	runs := fake.Runs
	if _, err := b.Sync(ctx, m, true); err != nil {
		t.Fatal(err)
	}
	if fake.Runs != runs {
		t.Errorf("a full sync with every hook in place ran %d single commands, want 0", fake.Runs-runs)
	}
	if got := strings.Count(fake.Dump(proxy.IPv4), "clusterdns service portals"); got != 5 {
		t.Errorf("%d portal hooks after two syncs, want 5 (no duplicates)", got)
	}
}

// Service names from a manifests folder are not validated: rule comments
// keep them from breaking iptables-restore's input. Found by
// FuzzRestoreInput.
func TestCommentText(t *testing.T) {
	for in, want := range map[string]string{
		"dev/web:http":           "dev/web:http",
		`dev/we"b:http`:          "dev/we?b:http",
		`a\"; -j ACCEPT #/b`:     "a??? -j ACCEPT ?/b",
		"dev/café":               "dev/caf??",
		strings.Repeat("n", 300): strings.Repeat("n", maxCommentName),
	} {
		if got := commentText(in); got != want {
			t.Errorf("commentText(%q) = %q, want %q", in, got, want)
		}
	}
}

// serviceChain finds, in a dump, the CDNS-SVC- chain of the Service whose
// comment contains name.
func serviceChain(t *testing.T, dump, name string) string {
	t.Helper()
	for _, line := range strings.Split(dump, "\n") {
		if target := jumpTarget(line); strings.Contains(line, name) && strings.HasPrefix(target, chainPrefix+"SVC-") {
			return target
		}
	}
	t.Fatalf("no service chain for %s in:\n%s", name, dump)
	return ""
}

// A sync the kernel refuses changes nothing, and every sync after it is
// refused too while the cause stays; once it is gone the next sync makes
// exactly what a clean full sync makes. The cause here is one the real
// kernel has too: someone else's rule jumps to a chain the sync deletes.
func TestRefusedSyncKeepsPreviousRules(t *testing.T) {
	fake := NewFakeRunner()
	b := New(Config{Runner: fake, Families: []proxy.Family{proxy.IPv4}})
	ctx := context.Background()
	first := modelOf(clusterIPSvc, nodePortSvc)
	if _, err := b.Sync(ctx, first, true); err != nil {
		t.Fatal(err)
	}
	foreign := []string{"-t", "nat", "-A", "PREROUTING", "-j", serviceChain(t, fake.Dump(proxy.IPv4), "dev/service-nodeport")}
	if err := fake.Run(ctx, proxy.IPv4, foreign...); err != nil {
		t.Fatal(err)
	}
	before := fake.Dump(proxy.IPv4)
	moved := clusterIPSvc
	moved.ready = nginxPods[:1]
	second := modelFrom(first, moved) // the node port Service is gone
	for i, full := range []bool{false, true, false} {
		if _, err := b.Sync(ctx, second, full); err == nil {
			t.Fatalf("sync %d (full %v) succeeded while a foreign rule holds a chain it deletes", i, full)
		}
		if got := fake.Dump(proxy.IPv4); got != before {
			t.Fatalf("refused sync %d changed the tables:\n%s", i, lineDiff(got, before))
		}
	}
	foreign[2] = "-D"
	if err := fake.Run(ctx, proxy.IPv4, foreign...); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Sync(ctx, second, false); err != nil {
		t.Fatalf("sync after the cause went: %v", err)
	}
	ref := NewFakeRunner()
	if _, err := New(Config{Runner: ref, Families: []proxy.Family{proxy.IPv4}}).Sync(ctx, modelOf(moved), true); err != nil {
		t.Fatal(err)
	}
	if got, want := fake.Dump(proxy.IPv4), ref.Dump(proxy.IPv4); got != want {
		t.Errorf("tables after recovery differ from a clean full sync:\n%s", lineDiff(got, want))
	}
}
