package ipvs

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/iptables"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
	"github.com/clusterdns/clusterdns/zone"
)

const nodeIP = "192.168.77.1"

// fixture is a backend over fakes, on a node with one address on eth0.
type fixture struct {
	kernel *FakeKernel
	ipt    *iptables.FakeRunner
	b      *Backend
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	f := &fixture{
		kernel: NewFakeKernel(map[string][]string{"eth0": {nodeIP, "fe80::1"}}),
		ipt:    iptables.NewFakeRunner(),
	}
	f.b = f.backend(cfg)
	return f
}

// backend returns a new backend (as after a restart) over the same fakes.
func (f *fixture) backend(cfg Config) *Backend {
	cfg.IPVS, cfg.Links, cfg.IPSets, cfg.Sysctl, cfg.Runner = f.kernel, f.kernel, f.kernel, f.kernel, f.ipt
	if cfg.Families == nil {
		cfg.Families = []proxy.Family{proxy.IPv4}
	}
	return New(cfg)
}

func (f *fixture) sync(t *testing.T, m *proxy.Model, full bool) proxy.SyncResult {
	t.Helper()
	res, err := f.b.Sync(t.Context(), m, full)
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	return res
}

// dump is the whole kernel state: IPVS, links, sets, settings and iptables.
func (f *fixture) dump() string {
	return f.kernel.Dump() + "# iptables (IPv4)\n" + f.ipt.Dump(proxy.IPv4)
}

func TestSyncGolden(t *testing.T) {
	udp := pt.Service{Namespace: "kube-system", Name: "dns", ClusterIPs: []string{"10.10.0.10"}, Port: 53, Protocol: zone.ProtocolUDP, PortName: "dns",
		Ready: []string{"172.16.1.1", "172.16.1.2"}}
	affinity := nodePortSvc
	affinity.Affinity = 10800
	external := clusterIPSvc
	external.ExternalIPs = []string{"203.0.113.7", nodeIP}
	fewer := clusterIPSvc
	fewer.Ready = nginxPods[:2]
	fewerUDP := udp
	fewerUDP.Ready = udp.Ready[:1]
	draining := pt.Service{Namespace: "dev", Name: "draining", ClusterIPs: []string{"10.10.0.7"}, Port: 80,
		NotReady: []string{"172.16.1.1"}, Draining: []string{"172.16.1.2", "172.16.1.3"}}
	empty := pt.Service{Namespace: "dev", Name: "empty", Type: zone.TypeNodePort, ClusterIPs: []string{"10.10.0.5"}, Port: 8080, NodePort: 30080}
	dual := pt.Service{Namespace: "dev", Name: "dual", ClusterIPs: []string{"10.10.0.6", "fd00:10::6"}, Port: 53, Protocol: zone.ProtocolUDP, PortName: "dns",
		Ready: []string{"172.16.79.83", "fd00:172::83", "fd00:172::84"}}

	lbLocal := pt.Service{Namespace: "dev", Name: "lb", Type: zone.TypeLoadBalancer, ClusterIPs: []string{"10.10.0.30"}, Port: 80,
		NodePort: 30030, LoadBalancerIPs: []string{"203.0.113.30"}, ProxyLoadBalancerIPs: []string{"203.0.113.31"}, ExternalLocal: true,
		Ready: []string{"172.16.1.30", "172.16.2.30"}, Local: []string{"172.16.1.30"}}
	lbNoLocal := pt.With(lbLocal, func(s *pt.Service) { s.Local = nil })
	ranged := pt.Service{Namespace: "dev", Name: "ranged", Type: zone.TypeLoadBalancer, ClusterIPs: []string{"10.10.0.50", "fd00:10::50"}, Port: 80,
		NodePort: 30050, LoadBalancerIPs: []string{"203.0.113.50", "2001:db8::50"},
		SourceRanges: []string{"198.51.100.0/24", "192.0.2.128/25", "2001:db8:1::/64"}, Ready: []string{"172.16.2.50", "fd00:172::50"}}
	narrowed := pt.With(ranged, func(s *pt.Service) { s.SourceRanges = []string{"198.51.100.0/24", "2001:db8:2::/64"} })
	internalNoLocal := pt.Service{Namespace: "dev", Name: "internal", ClusterIPs: []string{"10.10.0.40"}, Port: 80, InternalLocal: true,
		Ready: []string{"172.16.2.40"}}

	type step struct {
		specs []pt.Service
		full  bool
		// conns sets connection counts before the step, as "vs real active".
		conns []string
	}
	cases := []struct {
		name  string
		cfg   Config
		steps []step
		// check asserts what the golden file cannot say plainly.
		check func(t *testing.T, f *fixture)
	}{
		{name: "clusterip", steps: []step{{specs: []pt.Service{clusterIPSvc}, full: true}}},
		{name: "nodeport", steps: []step{{specs: []pt.Service{nodePortSvc}, full: true}}},
		{name: "affinity", steps: []step{{specs: []pt.Service{affinity}, full: true}}},
		{name: "external-ip", steps: []step{{specs: []pt.Service{external}, full: true}},
			check: func(t *testing.T, f *fixture) {
				// The node's own address is not bound again on the dummy link.
				addrs, _ := f.kernel.Addrs(DefaultDummyLink)
				if len(addrs) != 2 {
					t.Errorf("dummy link holds %v, want the cluster IP and the foreign external IP", addrs)
				}
			}},
		{name: "udp", steps: []step{{specs: []pt.Service{udp}, full: true}}},
		{name: "loadbalancer-local", cfg: Config{Routing: proxy.Routing{ClusterCIDRs: pt.Prefixes("172.16.0.0/16")}},
			steps: []step{
				{specs: []pt.Service{lbLocal}, full: true},
				{specs: []pt.Service{lbNoLocal}},
			}},
		// The second step changes the ranges in a partial sync: the dropped
		// ranges leave the sets, the new one joins.
		{name: "source-ranges", cfg: Config{Families: []proxy.Family{proxy.IPv4, proxy.IPv6}},
			steps: []step{
				{specs: []pt.Service{ranged}, full: true},
				{specs: []pt.Service{narrowed}},
			},
			check: func(t *testing.T, f *fixture) {
				got, err := f.kernel.Members("CDNS-LB-SOURCE-CIDR")
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != 1 || got[0].String() != "203.0.113.50,tcp:80,198.51.100.0/24" {
					t.Errorf("CDNS-LB-SOURCE-CIDR after narrowing: %v", got)
				}
				v6, err := f.kernel.Members("CDNS6-LB-SOURCE-CIDR")
				if err != nil {
					t.Fatal(err)
				}
				if len(v6) != 1 || v6[0].String() != "2001:db8::50,tcp:80,2001:db8:2::/64" {
					t.Errorf("CDNS6-LB-SOURCE-CIDR after the change: %v", v6)
				}
			}},
		{name: "internal-local-without-local-endpoints", steps: []step{{specs: []pt.Service{internalNoLocal}, full: true}}},
		{name: "no-endpoints", steps: []step{{specs: []pt.Service{empty}, full: true}}},
		{name: "terminating-fallback", steps: []step{{specs: []pt.Service{draining}, full: true}}},
		{name: "dual-stack", cfg: Config{Families: []proxy.Family{proxy.IPv4, proxy.IPv6}},
			steps: []step{{specs: []pt.Service{dual}, full: true}}},
		{name: "scheduler-and-settings", cfg: Config{Scheduler: "lc", StrictARP: true, TCPTimeout: 900 * time.Second,
			Routing: proxy.Routing{ClusterCIDRs: pt.Prefixes("172.16.0.0/16")}},
			steps: []step{{specs: []pt.Service{clusterIPSvc}, full: true}}},
		{name: "masquerade-all", cfg: Config{Routing: proxy.Routing{MasqueradeAll: true, NodePortAddresses: pt.Prefixes("10.0.0.0/8")}},
			steps: []step{{specs: []pt.Service{nodePortSvc}, full: true}}},
		{
			name: "endpoint-removed-without-connections",
			steps: []step{
				{specs: []pt.Service{clusterIPSvc}, full: true},
				{specs: []pt.Service{fewer}},
			},
		},
		{
			// A TCP real server with connections stays at weight 0 until they
			// end; the golden file shows it draining.
			name: "graceful-termination-tcp",
			steps: []step{
				{specs: []pt.Service{clusterIPSvc}, full: true},
				{specs: []pt.Service{fewer}, conns: []string{"TCP 10.10.97.97:80 172.16.69.207:80 2"}},
			},
			check: func(t *testing.T, f *fixture) {
				m := pt.Model(nil, fewer)
				vs := VSKey{"TCP", netip.MustParseAddrPort("10.10.97.97:80")}
				gone := netip.MustParseAddrPort("172.16.69.207:80")
				// A periodic full sync keeps it while connections last...
				f.sync(t, m, true)
				if w := weightOf(t, f, vs, gone); w != 0 {
					t.Fatalf("draining real server has weight %d after a full sync, want 0", w)
				}
				// ...and deletes it once they are gone.
				f.kernel.SetConns(vs, gone, 0, 0)
				f.sync(t, m, false)
				if w := weightOf(t, f, vs, gone); w != -1 {
					t.Errorf("drained real server still there with weight %d", w)
				}
			},
		},
		{
			name: "graceful-termination-comes-back",
			steps: []step{
				{specs: []pt.Service{clusterIPSvc}, full: true},
				{specs: []pt.Service{fewer}, conns: []string{"TCP 10.10.97.97:80 172.16.69.207:80 1"}},
				{specs: []pt.Service{clusterIPSvc}},
			},
		},
		{
			// UDP real servers go at once.
			name: "udp-endpoint-removed",
			steps: []step{
				{specs: []pt.Service{udp}, full: true},
				{specs: []pt.Service{fewerUDP}, conns: []string{"UDP 10.10.0.10:53 172.16.1.2:53 3"}},
			},
		},
		{
			name: "service-removed",
			steps: []step{
				{specs: []pt.Service{clusterIPSvc, nodePortSvc}, full: true},
				{specs: []pt.Service{clusterIPSvc}},
			},
		},
		{
			name: "affinity-added",
			steps: []step{
				{specs: []pt.Service{nodePortSvc}, full: true},
				{specs: []pt.Service{affinity}},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.cfg)
			var m *proxy.Model
			for _, s := range tc.steps {
				for _, c := range s.conns {
					var proto, vs, real string
					var n int
					if _, err := fmt.Sscan(c, &proto, &vs, &real, &n); err != nil {
						t.Fatal(err)
					}
					f.kernel.SetConns(VSKey{proto, netip.MustParseAddrPort(vs)}, netip.MustParseAddrPort(real), n, 0)
				}
				m = pt.Model(m, s.specs...)
				f.sync(t, m, s.full)
			}
			pt.Golden(t, tc.name, []byte(f.dump()))
			// Whatever the steps, a full sync changes nothing more, and a
			// second full sync writes nothing at all.
			before := f.dump()
			f.sync(t, m, true)
			writes := f.kernel.Writes
			f.sync(t, m, true)
			if f.kernel.Writes != writes {
				t.Errorf("a repeated full sync made %d kernel writes, want none", f.kernel.Writes-writes)
			}
			if after := f.dump(); after != before && !strings.Contains(tc.name, "graceful-termination-tcp") {
				t.Errorf("a full sync after the steps changed the state:\n--- before\n%s\n--- after\n%s", before, after)
			}
			if tc.check != nil {
				tc.check(t, f)
			}
		})
	}
}

// weightOf returns a real server's weight in the fake kernel, -1 when absent.
func weightOf(t *testing.T, f *fixture, vs VSKey, real netip.AddrPort) int {
	t.Helper()
	reals, err := f.kernel.RealServers(vs)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reals {
		if r.Address == real {
			return r.Weight
		}
	}
	return -1
}

func TestFullSyncRepairsDrift(t *testing.T) {
	f := newFixture(t, Config{})
	m := pt.Model(nil, clusterIPSvc, nodePortSvc)
	f.sync(t, m, true)
	want := f.dump()

	vs := VSKey{"TCP", netip.MustParseAddrPort("10.10.97.97:80")}
	if err := f.kernel.DeleteRealServer(vs, netip.MustParseAddrPort("172.16.79.83:80")); err != nil {
		t.Fatal(err)
	}
	if err := f.kernel.Del("CDNS-NODE-PORT", Member{IP: netip.MustParseAddr(nodeIP), Protocol: "tcp", Port: 30002}); err != nil {
		t.Fatal(err)
	}
	if err := f.kernel.DelAddr(DefaultDummyLink, netip.MustParseAddr("10.10.97.98")); err != nil {
		t.Fatal(err)
	}
	// Leftovers of an earlier run: a virtual server on a node address and an
	// address on the dummy link nobody wants.
	f.kernel.AddForeignVirtualServer(VirtualServer{Protocol: "TCP", Address: netip.MustParseAddrPort(nodeIP + ":31111"), Scheduler: "rr"},
		RealServer{Address: netip.MustParseAddrPort("172.16.9.9:80"), Weight: 1})
	if err := f.kernel.AddAddr(DefaultDummyLink, netip.MustParseAddr("10.10.44.44")); err != nil {
		t.Fatal(err)
	}
	// A virtual server on an address that is not ours is left alone.
	foreign := VirtualServer{Protocol: "TCP", Address: netip.MustParseAddrPort("198.51.100.1:80"), Scheduler: "wrr"}
	f.kernel.AddForeignVirtualServer(foreign)

	// A partial sync trusts its memory and sees none of it...
	f.sync(t, pt.Model(m, clusterIPSvc, nodePortSvc), false)
	// ...a full sync repairs it all.
	f.sync(t, m, true)
	if err := f.kernel.DeleteVirtualServer(foreign.Key()); err != nil {
		t.Errorf("the foreign virtual server was removed: %v", err)
	}
	if got := f.dump(); got != want {
		t.Errorf("after a full sync:\n%s\nwant\n%s", got, want)
	}
}

func TestRestartAdoptsKernelState(t *testing.T) {
	f := newFixture(t, Config{})
	m := pt.Model(nil, clusterIPSvc, nodePortSvc)
	f.sync(t, m, true)
	want := f.dump()
	writes := f.kernel.Writes
	// A new process over the same kernel: its first sync is a full one and
	// finds everything in place.
	f.b = f.backend(Config{})
	if _, err := f.b.Sync(t.Context(), pt.Model(nil, clusterIPSvc, nodePortSvc), false); err != nil {
		t.Fatal(err)
	}
	if f.kernel.Writes != writes {
		t.Errorf("restart made %d kernel writes to a kernel already right", f.kernel.Writes-writes)
	}
	if got := f.dump(); got != want {
		t.Errorf("after restart:\n%s\nwant\n%s", got, want)
	}
}

func TestFailedSyncIsRepairedByFullSync(t *testing.T) {
	f := newFixture(t, Config{})
	f.sync(t, pt.Model(nil, clusterIPSvc), true)
	f.ipt.FailRestores = 1
	m := pt.Model(nil, clusterIPSvc, nodePortSvc)
	if _, err := f.b.Sync(t.Context(), m, true); err == nil {
		t.Fatal("sync succeeded with a failing iptables-restore")
	}
	f.sync(t, m, true)
	fresh := newFixture(t, Config{})
	fresh.sync(t, m, true)
	if got, want := f.dump(), fresh.dump(); got != want {
		t.Errorf("after repair:\n%s\nwant\n%s", got, want)
	}
}

func TestCleanupRemovesEverything(t *testing.T) {
	f := newFixture(t, Config{Families: []proxy.Family{proxy.IPv4, proxy.IPv6}})
	empty := newFixture(t, Config{})
	f.sync(t, pt.Model(nil, clusterIPSvc, nodePortSvc), true)
	for range 2 { // idempotent
		if err := f.b.Cleanup(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	// The settings stay (they are the node's), everything else is gone.
	got := f.kernel.Dump()
	got = got[:strings.Index(got, "# sysctls")]
	want := empty.kernel.Dump()
	want = want[:strings.Index(want, "# sysctls")]
	if got != want {
		t.Errorf("after cleanup:\n%s\nwant\n%s", got, want)
	}
	for _, fam := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
		if d := f.ipt.Dump(fam); strings.Contains(d, "CDNS") {
			t.Errorf("%s rules left after cleanup:\n%s", fam, d)
		}
	}
}

// TestModeSwitch checks that each mode's start removes what the other left:
// the agent runs the other backend's Cleanup before its first sync.
func TestModeSwitch(t *testing.T) {
	m := pt.Model(nil, clusterIPSvc, nodePortSvc)
	f := newFixture(t, Config{})
	ipt := iptables.New(iptables.Config{Runner: f.ipt, Families: []proxy.Family{proxy.IPv4}})

	// iptables, then IPVS.
	if _, err := ipt.Sync(t.Context(), m, true); err != nil {
		t.Fatal(err)
	}
	if err := ipt.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.sync(t, m, true)
	pt.Golden(t, "mode-switch-to-ipvs", []byte(f.dump()))
	fresh := newFixture(t, Config{})
	fresh.sync(t, m, true)
	if got, want := f.dump(), fresh.dump(); got != want {
		t.Errorf("IPVS after iptables differs from IPVS alone:\n%s\nwant\n%s", got, want)
	}

	// IPVS, then iptables.
	if err := f.b.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := ipt.Sync(t.Context(), m, true); err != nil {
		t.Fatal(err)
	}
	if d := f.ipt.Dump(proxy.IPv4); strings.Contains(d, iptables.IPVSChainPrefix) || !strings.Contains(d, "CDNS-SERVICES") {
		t.Errorf("iptables after IPVS:\n%s", d)
	}
	table, _ := ReadTable(f.kernel)
	addrs, _ := f.kernel.Addrs(DefaultDummyLink)
	sets, _ := f.kernel.Members("CDNS-CLUSTER-IP")
	if len(table) != 0 || len(addrs) != 0 || len(sets) != 0 {
		t.Errorf("IPVS state left after switching to iptables: %v %v %v", table, addrs, sets)
	}
}

func TestDryRunAndListMatch(t *testing.T) {
	f := newFixture(t, Config{})
	// A load balancer of externalTrafficPolicy Local without a local
	// endpoint: the dry run and the listing show its policy sets.
	lb := pt.Service{Namespace: "dev", Name: "lb", Type: zone.TypeLoadBalancer, ClusterIPs: []string{"10.10.0.30"}, Port: 80,
		NodePort: 30030, LoadBalancerIPs: []string{"203.0.113.30"}, ExternalLocal: true, Ready: []string{"172.16.2.30"}}
	m := pt.Model(nil, clusterIPSvc, nodePortSvc, lb)
	var dry bytes.Buffer
	if err := f.b.DryRun(m, &dry); err != nil {
		t.Fatal(err)
	}
	if f.kernel.Writes != 0 {
		t.Errorf("dry run made %d kernel writes", f.kernel.Writes)
	}
	pt.Golden(t, "dry-run", dry.Bytes())
	if !strings.Contains(dry.String(), "# CDNS-EXTERNAL-DROP:") {
		t.Errorf("the dry run does not show the external drop set:\n%s", dry.String())
	}
	f.sync(t, m, true)
	var list bytes.Buffer
	if err := f.b.List(&list); err != nil {
		t.Fatal(err)
	}
	if list.String() != dry.String() {
		t.Errorf("live listing differs from the dry run:\n%s\nwant\n%s", list.String(), dry.String())
	}
}

func TestWriteTableLayout(t *testing.T) {
	var b bytes.Buffer
	err := WriteTable(&b, []TableEntry{
		{VirtualServer: VirtualServer{Protocol: "UDP", Address: netip.MustParseAddrPort("10.0.0.10:53"), Scheduler: "rr"},
			Reals: []RealServer{{Address: netip.MustParseAddrPort("172.17.0.2:53"), Weight: 1}}},
		{VirtualServer: VirtualServer{Protocol: "TCP", Address: netip.MustParseAddrPort("10.0.0.1:443"), Scheduler: "rr", Persistence: 10800},
			Reals: []RealServer{{Address: netip.MustParseAddrPort("192.168.0.1:6443"), Weight: 1, ActiveConn: 1}}},
		{VirtualServer: VirtualServer{Protocol: "TCP", Address: netip.MustParseAddrPort("[fd00::1]:80"), Scheduler: "sh"},
			Reals: []RealServer{{Address: netip.MustParseAddrPort("[fd00:1::2]:8080"), Weight: 0, InactConn: 3}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The layout ipvsadm -Ln prints, trailing spaces included.
	want := "IP Virtual Server version 1.2.1 (size=4096)\n" +
		"Prot LocalAddress:Port Scheduler Flags\n" +
		"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n" +
		"TCP  10.0.0.1:443 rr persistent 10800\n" +
		"  -> 192.168.0.1:6443             Masq    1      1          0         \n" +
		"TCP  [fd00::1]:80 sh\n" +
		"  -> [fd00:1::2]:8080             Masq    0      0          3         \n" +
		"UDP  10.0.0.10:53 rr\n" +
		"  -> 172.17.0.2:53                Masq    1      0          0         \n"
	if b.String() != want {
		t.Errorf("got\n%q\nwant\n%q", b.String(), want)
	}
}

// A source range of /0 admits every source of its family, and ipset takes
// no /0 network: the load balancer IP of that family gets no firewall,
// while the other family's ranges still apply.
func TestSourceRangeOfEverything(t *testing.T) {
	ranged := pt.Service{Namespace: "dev", Name: "ranged", Type: zone.TypeLoadBalancer, ClusterIPs: []string{"10.10.0.50", "fd00:10::50"}, Port: 80,
		LoadBalancerIPs: []string{"203.0.113.50", "2001:db8::50"}, SourceRanges: []string{"198.51.100.0/24", "0.0.0.0/0", "2001:db8:1::/64"},
		Ready: []string{"172.16.2.50", "fd00:172::50"}}
	f := newFixture(t, Config{Families: []proxy.Family{proxy.IPv4, proxy.IPv6}})
	f.sync(t, pt.Model(nil, ranged), true)
	for set, want := range map[string]int{"CDNS-LB-FW": 0, "CDNS-LB-SOURCE-CIDR": 0, "CDNS6-LB-FW": 1, "CDNS6-LB-SOURCE-CIDR": 1} {
		got, err := f.kernel.Members(set)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != want {
			t.Errorf("%s holds %v, want %d members", set, got, want)
		}
	}
}

func TestParseMember(t *testing.T) {
	for _, s := range []string{"10.0.0.1", "10.0.0.1,tcp:80", "10.0.0.1,udp:53,10.0.0.1", "fd00::1,sctp:9",
		"203.0.113.50,tcp:80,198.51.100.0/24", "2001:db8::50,tcp:80,2001:db8:1::/64", "203.0.113.50,tcp:80,192.0.2.9/32"} {
		m, err := ParseMember(s)
		if err != nil {
			t.Errorf("%s: %v", s, err)
			continue
		}
		if m.String() != s {
			t.Errorf("%s read back as %s", s, m)
		}
	}
	// The kernel keeps a network masked, and so does the member.
	if m, err := ParseMember("203.0.113.50,tcp:80,198.51.100.7/24"); err != nil || m.Net().String() != "198.51.100.0/24" {
		t.Errorf("unmasked network read as %v, %v", m.Net(), err)
	}
	for _, s := range []string{"", "10.0.0.1,tcp", "10.0.0.1,tcp:99999", "x", "10.0.0.1,tcp:80,10.0.0.0/33",
		"10.0.0.1,tcp:80,10.0.0.1,10.0.0.2", "10.0.0.1,tcp:80,0.0.0.0/0"} {
		if _, err := ParseMember(s); err == nil {
			t.Errorf("%q: want an error", s)
		}
	}
}

// IPVS has no transactions: a sync the kernel refuses halfway leaves what it
// wrote so far. Whichever write is refused, the next sync (a full one, as the
// agent asks after a failure) or the first sync of a restarted agent makes
// exactly what a clean full sync makes.
func TestRefusedWriteAnywhereIsRepaired(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	before := pt.RandomServices(rng, 20)
	after := pt.Mutate(rng, pt.Mutate(rng, before, 1), 2)
	setup := func() (*fixture, *proxy.Model) {
		f := newFixture(t, Config{})
		first := pt.Model(nil, before...)
		f.sync(t, first, true)
		return f, first
	}
	clean, first := setup()
	writes := clean.kernel.Writes
	clean.sync(t, pt.Model(first, after...), false)
	writes = clean.kernel.Writes - writes
	fresh := newFixture(t, Config{})
	fresh.sync(t, pt.Model(nil, after...), true)
	want := fresh.dump()
	if writes < 5 {
		t.Fatalf("the change makes only %d writes", writes)
	}
	failed := 0
	for at := 1; at <= writes; at++ {
		for _, restart := range []bool{false, true} {
			f, first := setup()
			f.kernel.FailAt = at
			if _, err := f.b.Sync(t.Context(), pt.Model(first, after...), false); err != nil && !restart {
				failed++
			}
			f.kernel.FailAt = 0
			if restart {
				f.b = f.backend(Config{})
				f.sync(t, pt.Model(nil, after...), false)
			} else {
				f.sync(t, pt.Model(first, after...), true)
			}
			if got := f.dump(); got != want {
				t.Fatalf("write %d of %d refused (restart %v): after the next sync\n%s\nwant\n%s", at, writes, restart, got, want)
			}
		}
	}
	t.Logf("%d writes; a refusal of %d of them failed the sync (the rest are best effort, as draining)", writes, failed)
}
