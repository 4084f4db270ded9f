package iptables

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
	"github.com/clusterdns/clusterdns/zone"
)

// randomCluster makes n services with a random number of endpoints each.
func randomCluster(rng *rand.Rand, n int) []pt.Service {
	specs := make([]pt.Service, n)
	for i := range specs {
		s := pt.Service{Namespace: "ns" + fmt.Sprint(i%3), Name: fmt.Sprintf("svc%d", i), ClusterIPs: []string{fmt.Sprintf("10.10.%d.%d", i/250, i%250+1)}, Port: 80}
		if rng.IntN(3) == 0 {
			s.Type, s.NodePort = zone.TypeNodePort, int32(30000+i)
		}
		if rng.IntN(4) == 0 {
			s.Protocol = zone.ProtocolUDP
		}
		if rng.IntN(5) == 0 {
			s.Affinity = 60
		}
		for e := rng.IntN(5); e > 0; e-- {
			s.Ready = append(s.Ready, fmt.Sprintf("172.16.%d.%d", rng.IntN(4), rng.IntN(250)+1))
		}
		if rng.IntN(6) == 0 {
			s.ClusterIPs = append(s.ClusterIPs, fmt.Sprintf("fd00:10::%x", i+1))
			s.Ready = append(s.Ready, fmt.Sprintf("fd00:172::%x", rng.IntN(250)+1))
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
	b := New(Config{Runner: fake, Routing: proxy.Routing{ClusterCIDRs: pt.Prefixes("172.16.0.0/16")}})
	ctx := context.Background()
	m := pt.Model(nil, specs...)
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
			specs[len(specs)-1].Name = fmt.Sprintf("new%d", step)
			specs[len(specs)-1].ClusterIPs = []string{fmt.Sprintf("10.20.0.%d", step+1)}
		case 2: // drop all endpoints
			specs[i].Ready = nil
		case 3: // change the node port or the port
			specs[i].Type, specs[i].NodePort = zone.TypeNodePort, int32(31000+step)
			specs[i].Port = int32(8000 + step)
		default: // endpoints change
			specs[i].Ready = append(slices.Clone(specs[i].Ready[:len(specs[i].Ready)/2]), fmt.Sprintf("172.16.9.%d", step+1))
		}
		// Odd steps build the model from the previous one (the backend then
		// looks only at its list of changes), even steps from scratch.
		if step%2 == 1 {
			m = pt.Model(m, specs...)
		} else {
			m = pt.Model(nil, specs...)
		}
		res, err := b.Sync(ctx, m, false)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		ref := NewFakeRunner()
		refRes, err := New(Config{Runner: ref, Routing: proxy.Routing{ClusterCIDRs: pt.Prefixes("172.16.0.0/16")}}).Sync(ctx, m, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
			if got, want := fake.Dump(f), ref.Dump(f); got != want {
				t.Fatalf("step %d %s: tables after partial sync differ from a full sync:\n%s", step, f, pt.LineDiff(got, want))
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

// TestPartialSyncWritesOnlyTheChangedService checks that an endpoint change
// at scale rewrites one service's chains and no dispatch chain.
func TestPartialSyncWritesOnlyTheChangedService(t *testing.T) {
	specs := make([]pt.Service, 500)
	for i := range specs {
		specs[i] = pt.Service{Namespace: "dev", Name: fmt.Sprintf("s%d", i), ClusterIPs: []string{fmt.Sprintf("10.10.%d.%d", i/200, i%200+1)}, Port: 80,
			Ready: []string{fmt.Sprintf("172.16.%d.%d", i/200, i%200+1), fmt.Sprintf("172.17.%d.%d", i/200, i%200+1)}}
	}
	fake := NewFakeRunner()
	b := New(Config{Runner: fake, Families: []proxy.Family{proxy.IPv4}})
	ctx := context.Background()
	if _, err := b.Sync(ctx, pt.Model(nil, specs...), true); err != nil {
		t.Fatal(err)
	}
	specs[250].Ready = specs[250].Ready[:1]
	n := len(fake.Restores)
	res, err := b.Sync(ctx, pt.Model(nil, specs...), false)
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
	if _, err := b.Sync(ctx, pt.Model(nil, specs...), false); err != nil {
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
	if _, err := b.Sync(ctx, pt.Model(nil, clusterIPSvc, nodePortSvc), true); err != nil {
		t.Fatal(err)
	}
	fake.FailRestores = 1
	if _, err := b.Sync(ctx, pt.Model(nil, clusterIPSvc), false); err == nil {
		t.Fatal("sync succeeded although the restore failed")
	}
	saves := fake.Saves
	// Even a sync asked to be partial becomes full after a failure.
	if _, err := b.Sync(ctx, pt.Model(nil, clusterIPSvc), false); err != nil {
		t.Fatal(err)
	}
	if fake.Saves == saves {
		t.Error("the sync after a failure did not list the kernel's chains")
	}
	ref := NewFakeRunner()
	if _, err := New(Config{Runner: ref, Families: []proxy.Family{proxy.IPv4}}).Sync(ctx, pt.Model(nil, clusterIPSvc), true); err != nil {
		t.Fatal(err)
	}
	if got, want := fake.Dump(proxy.IPv4), ref.Dump(proxy.IPv4); got != want {
		t.Errorf("tables after recovery differ from a fresh full sync:\n%s", pt.LineDiff(got, want))
	}
}

// TestStaleChainsFromAnEarlierRunAreDeleted starts a backend on tables an
// earlier run left behind.
func TestStaleChainsFromAnEarlierRunAreDeleted(t *testing.T) {
	fake := NewFakeRunner()
	ctx := context.Background()
	if _, err := New(Config{Runner: fake}).Sync(ctx, pt.Model(nil, clusterIPSvc, nodePortSvc), true); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Runner: fake}).Sync(ctx, pt.Model(nil, clusterIPSvc), true); err != nil {
		t.Fatal(err)
	}
	ref := NewFakeRunner()
	if _, err := New(Config{Runner: ref}).Sync(ctx, pt.Model(nil, clusterIPSvc), true); err != nil {
		t.Fatal(err)
	}
	if got, want := fake.Dump(proxy.IPv4), ref.Dump(proxy.IPv4); got != want {
		t.Errorf("leftovers of the earlier run:\n%s", pt.LineDiff(got, want))
	}
}

func TestCleanupRemovesEverything(t *testing.T) {
	fake := NewFakeRunner()
	pristine4, pristine6 := fake.Dump(proxy.IPv4), fake.Dump(proxy.IPv6)
	ctx := context.Background()
	if _, err := New(Config{Runner: fake}).Sync(ctx, pt.Model(nil, clusterIPSvc, nodePortSvc, pt.Service{Namespace: "a", Name: "v6", ClusterIPs: []string{"fd00::1"}, Port: 1, Ready: []string{"fd00::2"}}), true); err != nil {
		t.Fatal(err)
	}
	// A fresh backend (as `clusterdns proxy --cleanup` is) cleans up what
	// another run programmed.
	b := New(Config{Runner: fake})
	if err := b.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fake.Dump(proxy.IPv4); got != pristine4 {
		t.Errorf("IPv4 tables after cleanup:\n%s", pt.LineDiff(got, pristine4))
	}
	if got := fake.Dump(proxy.IPv6); got != pristine6 {
		t.Errorf("IPv6 tables after cleanup:\n%s", pt.LineDiff(got, pristine6))
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
	if _, err := b.Sync(ctx, pt.Model(nil, clusterIPSvc), true); err != nil {
		t.Fatal(err)
	}
	if err := New(Config{Runner: fake}).Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fake.Dump(proxy.IPv4); got != withIPVS {
		t.Errorf("after cleanup:\n%s", pt.LineDiff(got, withIPVS))
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	fake := NewFakeRunner()
	b := New(Config{Runner: fake})
	var out bytes.Buffer
	if err := b.DryRun(pt.Model(nil, clusterIPSvc), &out); err != nil {
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
	if _, err := b.Sync(context.Background(), pt.Model(nil, clusterIPSvc), true); err != nil {
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
	m := pt.Model(nil, clusterIPSvc, nodePortSvc)
	if _, err := b.Sync(ctx, m, true); err != nil {
		t.Fatal(err)
	}
	dump := fake.Dump(proxy.IPv4)
	for _, h := range hooks() {
		if !strings.Contains(dump, "-A "+h.Chain+" ") || !strings.Contains(dump, "-j "+h.Target()) {
			t.Fatalf("hook %s %s missing after the first sync:\n%s", h.Table, h.Chain, dump)
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
