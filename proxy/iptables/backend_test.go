package iptables

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
)

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
		if target := jumpTarget(line); strings.Contains(line, name) && strings.HasPrefix(target, ChainPrefix+"SVC-") {
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
	first := pt.Model(nil, clusterIPSvc, nodePortSvc)
	if _, err := b.Sync(ctx, first, true); err != nil {
		t.Fatal(err)
	}
	foreign := []string{"-t", "nat", "-A", "PREROUTING", "-j", serviceChain(t, fake.Dump(proxy.IPv4), "dev/service-nodeport")}
	if err := fake.Run(ctx, proxy.IPv4, foreign...); err != nil {
		t.Fatal(err)
	}
	before := fake.Dump(proxy.IPv4)
	moved := clusterIPSvc
	moved.Ready = nginxPods[:1]
	second := pt.Model(first, moved) // the node port Service is gone
	for i, full := range []bool{false, true, false} {
		if _, err := b.Sync(ctx, second, full); err == nil {
			t.Fatalf("sync %d (full %v) succeeded while a foreign rule holds a chain it deletes", i, full)
		}
		if got := fake.Dump(proxy.IPv4); got != before {
			t.Fatalf("refused sync %d changed the tables:\n%s", i, pt.LineDiff(got, before))
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
	if _, err := New(Config{Runner: ref, Families: []proxy.Family{proxy.IPv4}}).Sync(ctx, pt.Model(nil, moved), true); err != nil {
		t.Fatal(err)
	}
	if got, want := fake.Dump(proxy.IPv4), ref.Dump(proxy.IPv4); got != want {
		t.Errorf("tables after recovery differ from a clean full sync:\n%s", pt.LineDiff(got, want))
	}
}
