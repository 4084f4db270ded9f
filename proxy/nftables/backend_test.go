package nftables

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
	"github.com/clusterdns/clusterdns/zone"
)

// The example cluster's Services (deploy/examples) and a few more.
var (
	nginxPods    = []string{"172.16.79.83", "172.16.69.206", "172.16.69.207"}
	clusterIPSvc = pt.Service{Namespace: "dev", Name: "service-clusterip", ClusterIPs: []string{"10.10.97.97"}, Port: 80, Ready: nginxPods}
	nodePortSvc  = pt.Service{Namespace: "dev", Name: "service-nodeport", Type: zone.TypeNodePort, ClusterIPs: []string{"10.10.97.98"},
		Port: 80, NodePort: 30002, Ready: nginxPods}
	emptySvc = pt.Service{Namespace: "dev", Name: "empty", Type: zone.TypeNodePort, ClusterIPs: []string{"10.10.0.5"}, Port: 8080, NodePort: 30080}
	dualSvc  = pt.Service{Namespace: "dev", Name: "dual", ClusterIPs: []string{"10.10.0.6", "fd00:10::6"}, Port: 53, Protocol: zone.ProtocolUDP,
		PortName: "dns", Ready: []string{"172.16.79.83", "fd00:172::83", "fd00:172::84"}}
	drainingSvc = pt.Service{Namespace: "dev", Name: "draining", ClusterIPs: []string{"10.10.0.7"}, Port: 80,
		NotReady: []string{"172.16.1.1"}, Draining: []string{"172.16.1.2", "172.16.1.3"}}
	externalSvc = pt.Service{Namespace: "dev", Name: "external", ClusterIPs: []string{"10.10.0.9"}, ExternalIPs: []string{"192.0.2.9"},
		Port: 443, TargetPort: 8443, Ready: []string{"172.16.1.7"}}
)

// goldenCases are models in steps: the golden file holds every sync's
// transaction, so a partial sync shows exactly what it rewrites, and the
// tables after it, as the fake lists them.
func goldenCases() []goldenCase {
	affinity := pt.With(nodePortSvc, func(s *pt.Service) { s.Affinity = 10800 })
	changed := pt.With(clusterIPSvc, func(s *pt.Service) { s.Ready = []string{"172.16.79.83", "172.16.69.207", "172.16.1.9"} })
	gone := pt.With(clusterIPSvc, func(s *pt.Service) { s.Ready = nil })
	shorter := pt.With(affinity, func(s *pt.Service) { s.Affinity = 60; s.Ready = nginxPods[:2] })
	twin := pt.With(clusterIPSvc, func(s *pt.Service) { s.Name, s.Ready = "twin", []string{"172.16.1.20"} })
	twinChanged := pt.With(twin, func(s *pt.Service) { s.Ready = []string{"172.16.1.21"} })
	nginx := endpointsOf(nginxPods, 80, false)
	nginxMasq := endpointsOf(nginxPods, 80, true)
	cases := []goldenCase{
		{name: "clusterip", steps: [][]pt.Service{{clusterIPSvc}}, traces: []traceCase{
			{name: "pod to service", pkt: tcp("172.16.1.1", "10.10.97.97", 80), want: nginx},
			{name: "node to service", pkt: tcp(nodeIP, "10.10.97.97", 80), fromNode: true, want: nginx},
			{name: "wrong port", pkt: tcp("172.16.1.1", "10.10.97.97", 81), want: []string{"untranslated"}},
			{name: "wrong protocol", pkt: udp("172.16.1.1", "10.10.97.97", 80), want: []string{"untranslated"}},
			{name: "hairpin", pkt: tcp("172.16.79.83", "10.10.97.97", 80), want: []string{"172.16.69.206:80", "172.16.69.207:80", "172.16.79.83:80 masq"}},
		}},
		{name: "nodeport", cfg: Config{Routing: proxy.Routing{ClusterCIDRs: pt.Prefixes("172.16.0.0/16")}}, steps: [][]pt.Service{{nodePortSvc}}, traces: []traceCase{
			{name: "outside to node port", pkt: tcp("192.168.77.2", nodeIP, 30002), want: nginxMasq},
			{name: "node to own node port", pkt: tcp(nodeIP, nodeIP, 30002), fromNode: true, want: nginxMasq},
			{name: "pod to service", pkt: tcp("172.16.1.1", "10.10.97.98", 80), want: nginx},
			{name: "off-cluster to service", pkt: tcp("192.168.77.2", "10.10.97.98", 80), want: nginxMasq},
			{name: "loopback node port", pkt: tcp("127.0.0.1", "127.0.0.1", 30002), fromNode: true, want: []string{"untranslated"}},
			{name: "other port on node", pkt: tcp("192.168.77.2", nodeIP, 30003), want: []string{"untranslated"}},
			{name: "node port on a remote address", pkt: tcp("192.168.77.2", "192.168.77.3", 30002), want: []string{"untranslated"}},
		}},
		{name: "nodeport-addresses", cfg: Config{Routing: proxy.Routing{NodePortAddresses: pt.Prefixes("192.168.77.0/24")}}, steps: [][]pt.Service{{nodePortSvc, emptySvc}}, traces: []traceCase{
			{name: "listed address", pkt: tcp("192.168.77.2", nodeIP, 30002), want: nginxMasq},
			{name: "unlisted local address", pkt: tcp("192.168.77.2", "10.99.0.1", 30002), want: []string{"untranslated"}},
			{name: "no endpoints, listed address", pkt: tcp("192.168.77.2", nodeIP, 30080), want: []string{"REJECT"}},
			{name: "no endpoints, unlisted address", pkt: tcp("192.168.77.2", "10.99.0.1", 30080), want: []string{"untranslated"}},
		}},
		{name: "affinity", steps: [][]pt.Service{{affinity}, {shorter}}, traces: []traceCase{
			{name: "pod to service", pkt: tcp("172.16.1.1", "10.10.97.98", 80), want: endpointsOf(nginxPods[:2], 80, false)},
			{name: "outside to node port", pkt: tcp("192.168.77.2", nodeIP, 30002), want: endpointsOf(nginxPods[:2], 80, true)},
		}},
		{name: "no-endpoints", steps: [][]pt.Service{{emptySvc, clusterIPSvc}}, traces: []traceCase{
			{name: "pod to service", pkt: tcp("172.16.1.1", "10.10.0.5", 8080), want: []string{"REJECT"}},
			{name: "node to service", pkt: tcp(nodeIP, "10.10.0.5", 8080), fromNode: true, want: []string{"REJECT"}},
			{name: "outside to node port", pkt: tcp("192.168.77.2", nodeIP, 30080), want: []string{"REJECT"}},
			{name: "other port of the address", pkt: tcp("172.16.1.1", "10.10.0.5", 8081), want: []string{"untranslated"}},
			{name: "other service still works", pkt: tcp("172.16.1.1", "10.10.97.97", 80), want: nginx},
		}},
		{name: "terminating-fallback", steps: [][]pt.Service{{drainingSvc}}, traces: []traceCase{
			{name: "only draining endpoints", pkt: tcp("172.16.9.9", "10.10.0.7", 80), want: endpointsOf([]string{"172.16.1.2", "172.16.1.3"}, 80, false)},
		}},
		{name: "dual-stack", cfg: Config{Routing: proxy.Routing{ClusterCIDRs: pt.Prefixes("172.16.0.0/16", "fd00:172::/64")}}, steps: [][]pt.Service{{dualSvc}}, traces: []traceCase{
			{name: "v4", pkt: udp("172.16.1.1", "10.10.0.6", 53), want: endpointsOf([]string{"172.16.79.83"}, 53, false)},
			{name: "v6", family: proxy.IPv6, pkt: udp("fd00:172::99", "fd00:10::6", 53), want: endpointsOf([]string{"fd00:172::83", "fd00:172::84"}, 53, false)},
			{name: "v6 off-cluster", family: proxy.IPv6, pkt: udp("fd00:99::1", "fd00:10::6", 53), want: endpointsOf([]string{"fd00:172::83", "fd00:172::84"}, 53, true)},
			{name: "v6 hairpin", family: proxy.IPv6, pkt: udp("fd00:172::83", "fd00:10::6", 53), want: []string{"[fd00:172::83]:53 masq", "[fd00:172::84]:53"}},
		}},
		{name: "masquerade-all", cfg: Config{Routing: proxy.Routing{MasqueradeAll: true, MasqueradeMark: 1 << 14}}, steps: [][]pt.Service{{clusterIPSvc}}, traces: []traceCase{
			{name: "pod to service", pkt: tcp("172.16.1.1", "10.10.97.97", 80), want: nginxMasq},
		}},
		{name: "external-ips", steps: [][]pt.Service{{externalSvc}}, traces: []traceCase{
			{name: "outside to external IP", pkt: tcp("192.168.77.2", "192.0.2.9", 443), want: endpointsOf([]string{"172.16.1.7"}, 8443, true)},
			{name: "pod to cluster IP", pkt: tcp("172.16.1.1", "10.10.0.9", 443), want: endpointsOf([]string{"172.16.1.7"}, 8443, false)},
		}},
		{name: "partial-endpoint-change", steps: [][]pt.Service{{clusterIPSvc, nodePortSvc}, {changed, nodePortSvc}}, traces: []traceCase{
			{name: "new endpoints", pkt: tcp("172.16.1.1", "10.10.97.97", 80), want: endpointsOf([]string{"172.16.79.83", "172.16.69.207", "172.16.1.9"}, 80, false)},
			{name: "other service unchanged", pkt: tcp("172.16.1.1", "10.10.97.98", 80), want: nginx},
			{name: "hairpin of a kept endpoint", pkt: tcp("172.16.69.207", "10.10.97.97", 80), want: []string{"172.16.1.9:80", "172.16.69.207:80 masq", "172.16.79.83:80"}},
			{name: "no hairpin for a gone endpoint", pkt: tcp("172.16.69.206", "10.10.97.97", 80), want: endpointsOf([]string{"172.16.79.83", "172.16.69.207", "172.16.1.9"}, 80, false)},
		}},
		{name: "partial-service-removed", steps: [][]pt.Service{{clusterIPSvc, nodePortSvc}, {clusterIPSvc}}, traces: []traceCase{
			{name: "removed service", pkt: tcp("172.16.1.1", "10.10.97.98", 80), want: []string{"untranslated"}},
			{name: "removed node port", pkt: tcp("192.168.77.2", nodeIP, 30002), want: []string{"untranslated"}},
			{name: "kept service", pkt: tcp("172.16.1.1", "10.10.97.97", 80), want: nginx},
		}},
		{name: "partial-endpoints-gone-and-back", steps: [][]pt.Service{{clusterIPSvc}, {gone}, {clusterIPSvc}}, traces: []traceCase{
			{name: "back", pkt: tcp("172.16.1.1", "10.10.97.97", 80), want: nginx},
		}},
		{name: "partial-nothing-changed", steps: [][]pt.Service{{clusterIPSvc}, {clusterIPSvc}}},
		// Two Services with one cluster IP (possible in a manifests folder):
		// the first by key keeps the address; the other's change is
		// written without it, and when the first goes the address waits
		// for the next full sync.
		{name: "duplicate-cluster-ip", steps: [][]pt.Service{{clusterIPSvc, twin}, {clusterIPSvc, twinChanged}, {twinChanged}}, traces: []traceCase{
			{name: "address waits for a full sync", pkt: tcp("172.16.1.1", "10.10.97.97", 80), want: []string{"untranslated"}},
		}},
	}
	// The contract's scenarios of load balancers, traffic policies, source
	// ranges and topology, whose routes the contract checks: here their
	// transactions are kept, and the kernel must take them.
	for _, sc := range pt.Scenarios() {
		switch sc.Feature {
		case pt.FeatureLoadBalancer, pt.FeatureExternalLocal, pt.FeatureInternalLocal, pt.FeatureSourceRanges, pt.FeatureTopology:
			gc := goldenCase{name: sc.Name, cfg: Config{Routing: sc.Routing}}
			for _, st := range sc.Steps {
				gc.steps = append(gc.steps, st.Services)
			}
			cases = append(cases, gc)
		}
	}
	return cases
}

// goldenCase is a model in steps and packets to trace after the last.
type goldenCase struct {
	name   string
	cfg    Config
	steps  [][]pt.Service
	traces []traceCase
}

// traceCase sends one packet and lists where it may end up.
type traceCase struct {
	name     string
	pkt      packet
	fromNode bool
	family   proxy.Family // default IPv4
	want     []string
}

// nodeIP is the node's address in traces; the node also has 10.99.0.1 and
// the loopback addresses.
const nodeIP = "192.168.77.1"

// The golden cases' packets reach, through the fake's tables after the last
// sync, the endpoints they should, masqueraded when they should be, and are
// rejected when no endpoint serves them.
func TestTraceGoldenCases(t *testing.T) {
	for _, tc := range goldenCases() {
		if len(tc.traces) == 0 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			fake := NewFake()
			cfg := tc.cfg
			cfg.Runner = fake
			syncSteps(t, New(cfg), tc.steps)
			for _, tr := range tc.traces {
				fam := tr.family
				if fam == 0 {
					fam = proxy.IPv4
				}
				got := newTracer(t, fake, fam, nodeIP, "10.99.0.1", "127.0.0.1", "fd00:77::1", "::1").trace(tr.pkt, tr.fromNode)
				if !slices.Equal(got, tr.want) {
					t.Errorf("%s: packet %s reaches %v, want %v", tr.name, tr.pkt, got, tr.want)
				}
			}
		})
	}
}

// syncSteps runs a case's steps through a backend (the first sync full, the
// rest partial, each model built from the previous as the agent builds it).
func syncSteps(t *testing.T, b *Backend, steps [][]pt.Service) []proxy.SyncResult {
	t.Helper()
	var prev *proxy.Model
	var out []proxy.SyncResult
	for i, services := range steps {
		m := pt.Model(prev, services...)
		res, err := b.Sync(context.Background(), m, i == 0)
		if err != nil {
			t.Fatalf("sync %d: %v", i, err)
		}
		out = append(out, res)
		prev = m
	}
	return out
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			fake := NewFake()
			cfg := tc.cfg
			cfg.Runner = fake
			b := New(cfg)
			var got strings.Builder
			var prev *proxy.Model
			for i, services := range tc.steps {
				m := pt.Model(prev, services...)
				applied := len(fake.Scripts)
				if _, err := b.Sync(context.Background(), m, i == 0); err != nil {
					t.Fatalf("sync %d: %v", i, err)
				}
				fmt.Fprintf(&got, "# sync %d: transaction\n", i)
				if len(fake.Scripts) == applied {
					got.WriteString("# none: nothing to change\n")
				} else {
					got.WriteString(fake.Scripts[applied])
				}
				fmt.Fprintf(&got, "# sync %d: tables after it\n%s", i, fake.Dump())
				prev = m
			}
			pt.Golden(t, tc.name, []byte(got.String()))
		})
	}
}

func TestSyncAfterFailureReplacesTables(t *testing.T) {
	rec := &RecordingRunner{}
	b := New(Config{Runner: rec, Families: []proxy.Family{proxy.IPv4}})
	m1 := pt.Model(nil, clusterIPSvc)
	if _, err := b.Sync(context.Background(), m1, true); err != nil {
		t.Fatal(err)
	}
	rec.Fail = 1
	m2 := pt.Model(m1, clusterIPSvc, nodePortSvc)
	if _, err := b.Sync(context.Background(), m2, false); err == nil {
		t.Fatal("a failing nft did not fail the sync")
	}
	if strings.Contains(rec.Scripts[1], "delete table") {
		t.Errorf("the partial sync replaced the table:\n%s", rec.Scripts[1])
	}
	res, err := b.Sync(context.Background(), m2, false)
	if err != nil {
		t.Fatal(err)
	}
	last := rec.Scripts[2]
	for _, want := range []string{"delete table ip clusterdns\nadd table ip clusterdns\n", "service-clusterip", "service-nodeport"} {
		if !strings.Contains(last, want) {
			t.Errorf("the sync after a failure lacks %q:\n%s", want, last)
		}
	}
	if res.Rewritten != 2 {
		t.Errorf("rewritten %d ports, want 2", res.Rewritten)
	}
}

func TestRuleCount(t *testing.T) {
	cases := []struct {
		name  string
		steps [][]pt.Service
		// want counts the rules and set elements: 17 base rules (6 hooks,
		// 2 dispatch, 2 node port dispatch, 4 masquerading, 1 mark, 1
		// reject, 1 drop), per service chain 1 rule and per endpoint one
		// endpoints map element, one hairpin element per address (shared
		// between Services), per external chain 2, one map element per
		// address and node port.
		want int
	}{
		{"empty", [][]pt.Service{nil}, 17},
		{"clusterip", [][]pt.Service{{clusterIPSvc}}, 17 + 1 + 3 + 3 + 1},
		{"nodeport", [][]pt.Service{{nodePortSvc}}, 17 + 1 + 3 + 3 + 2 + 2},
		{"shared endpoints counted once", [][]pt.Service{{clusterIPSvc, nodePortSvc}}, 17 + 1 + 3 + 3 + 1 + 1 + 3 + 2 + 2},
		{"after removal", [][]pt.Service{{clusterIPSvc, nodePortSvc}, {clusterIPSvc}}, 17 + 1 + 3 + 3 + 1},
		{"no endpoints", [][]pt.Service{{emptySvc}}, 17 + 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := New(Config{Runner: &RecordingRunner{}, Families: []proxy.Family{proxy.IPv4}})
			res := syncSteps(t, b, tc.steps)
			if got := res[len(res)-1].Rules; got != tc.want {
				t.Errorf("rules %d, want %d", got, tc.want)
			}
		})
	}
}

func TestCleanupDeletesOnlyItsTables(t *testing.T) {
	cases := []struct {
		tables, want string
	}{
		{"", ""},
		{"table inet filter\ntable ip kube-proxy\n", ""},
		{"table ip clusterdns\ntable ip6 clusterdns\ntable ip nat\n", "delete table ip clusterdns\ndelete table ip6 clusterdns\n"},
	}
	for _, tc := range cases {
		rec := &RecordingRunner{Tables: tc.tables}
		if err := New(Config{Runner: rec}).Cleanup(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := strings.Join(rec.Scripts, "")
		if got != tc.want {
			t.Errorf("tables %q: cleanup applied %q, want %q", tc.tables, got, tc.want)
		}
	}
}

func TestObjectNamesAreValidAndBounded(t *testing.T) {
	long := strings.Repeat("n", 63)
	sp := pt.With(clusterIPSvc, func(s *pt.Service) {
		s.Namespace, s.Name, s.PortName, s.Affinity = long, long, "a-very-long-port", 30
		s.ClusterIPs, s.Ready = []string{"fd00:10::1"}, []string{"fd00:172:1234:5678:9abc:def0:1234:5678"}
	})
	m := pt.Model(nil, sp)
	o := newRenderer(proxy.IPv6, &Config{}).render(m.Ports[0], nil, &slotAlloc{})
	var names []string
	for _, c := range o.chains {
		names = append(names, c.Name)
	}
	for _, s := range o.sets {
		names = append(names, s.Name)
	}
	if len(names) != 3 {
		t.Fatalf("got objects %v, want an endpoint chain, a service chain and a set", names)
	}
	for _, n := range names {
		if len(n) > maxNameLen {
			t.Errorf("%q is %d characters, above %d", n, len(n), maxNameLen)
		}
		if strings.ContainsAny(n, ": []") {
			t.Errorf("%q has characters nft does not take in a name", n)
		}
	}
}

func TestDuplicateKeyKeptByFirstPort(t *testing.T) {
	rec := &RecordingRunner{}
	b := New(Config{Runner: rec, Families: []proxy.Family{proxy.IPv4}})
	twin := pt.With(clusterIPSvc, func(s *pt.Service) { s.Name = "twin" })
	if _, err := b.Sync(context.Background(), pt.Model(nil, clusterIPSvc, twin), true); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(rec.Scripts[0], "add element ip clusterdns service-ips { 10.10.97.97 . tcp . 80 : "); n != 1 {
		t.Errorf("the shared key is added %d times, want once:\n%s", n, rec.Scripts[0])
	}
	if !strings.Contains(rec.Scripts[0], "service-ips { 10.10.97.97 . tcp . 80 : goto service-WSZ6NBRK-dev/service-clusterip/") {
		t.Errorf("the key does not lead to the first Service (dev/service-clusterip):\n%s", rec.Scripts[0])
	}
}
