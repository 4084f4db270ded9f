package inspect

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
	"github.com/clusterdns/clusterdns/zone"
)

func eps(s ...string) []netip.AddrPort {
	out := []netip.AddrPort{}
	for _, a := range s {
		out = append(out, netip.MustParseAddrPort(a))
	}
	return out
}

func TestCompare(t *testing.T) {
	web := pt.Service{Namespace: "dev", Name: "web", ClusterIPs: []string{"10.0.0.1"}, Port: 80, Ready: []string{"172.16.0.1", "172.16.0.2"}}
	empty := pt.Service{Namespace: "dev", Name: "web", ClusterIPs: []string{"10.0.0.1"}, Port: 80}
	front := Frontend{Addr: netip.MustParseAddr("10.0.0.1"), Protocol: zone.ProtocolTCP, Port: 80}
	other := Frontend{Addr: netip.MustParseAddr("10.0.0.1"), Protocol: zone.ProtocolTCP, Port: 81}
	unrelated := Frontend{Addr: netip.MustParseAddr("10.0.0.9"), Protocol: zone.ProtocolTCP, Port: 80}
	key := zone.Key{Namespace: "dev", Name: "web"}
	for _, tc := range []struct {
		name   string
		svc    *pt.Service // nil: the model lacks the Service
		kernel map[Frontend][]netip.AddrPort
		inSync []bool
		diffs  []string
	}{
		{name: "in sync", svc: &web,
			kernel: map[Frontend][]netip.AddrPort{front: eps("172.16.0.1:80", "172.16.0.2:80"), unrelated: eps("172.16.9.9:80")},
			inSync: []bool{true}},
		{name: "no endpoints, rejected", svc: &empty,
			kernel: map[Frontend][]netip.AddrPort{front: eps()},
			inSync: []bool{true}},
		{name: "missing frontend", svc: &web,
			kernel: map[Frontend][]netip.AddrPort{unrelated: eps("172.16.9.9:80")},
			inSync: []bool{false}, diffs: []string{"the kernel has no rules for 10.0.0.1:80/TCP"}},
		{name: "endpoint missing and extra", svc: &web,
			kernel: map[Frontend][]netip.AddrPort{front: eps("172.16.0.1:80", "172.16.0.3:80")},
			inSync: []bool{false}, diffs: []string{
				"10.0.0.1:80/TCP: the kernel does not send to 172.16.0.2:80",
				"10.0.0.1:80/TCP: the kernel still sends to 172.16.0.3:80, which the model does not send to"}},
		{name: "stale endpoint after the last one went", svc: &empty,
			kernel: map[Frontend][]netip.AddrPort{front: eps("172.16.0.1:80")},
			inSync: []bool{false}, diffs: []string{"10.0.0.1:80/TCP: the kernel still sends to 172.16.0.1:80, which the model does not send to"}},
		{name: "stale port on the Service's address", svc: &web,
			kernel: map[Frontend][]netip.AddrPort{front: eps("172.16.0.1:80", "172.16.0.2:80"), other: eps("172.16.0.1:81")},
			inSync: []bool{true, false}, diffs: []string{"the kernel still routes 10.0.0.1:81/TCP, which the model does not have (stale rules)"}},
		{name: "Service gone, rules left",
			kernel: map[Frontend][]netip.AddrPort{front: eps("172.16.0.1:80")},
			inSync: []bool{false}, diffs: []string{"the kernel still routes 10.0.0.1:80/TCP, which the model does not have (stale rules)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var services []pt.Service
			if tc.svc != nil {
				services = append(services, *tc.svc)
			}
			want := ForService(pt.Model(nil, services...), key)
			ports := Compare(want, []netip.Addr{front.Addr}, &Kernel{Mode: "test", Endpoints: tc.kernel})
			var inSync []bool
			var diffs []string
			for _, p := range ports {
				inSync = append(inSync, p.InSync())
				diffs = append(diffs, p.Differences()...)
			}
			if !slices.Equal(inSync, tc.inSync) {
				t.Errorf("in sync %v, want %v", inSync, tc.inSync)
			}
			if !slices.Equal(diffs, tc.diffs) {
				t.Errorf("differences:\n%s\nwant:\n%s", strings.Join(diffs, "\n"), strings.Join(tc.diffs, "\n"))
			}
		})
	}
}

// TestCompareExternal checks that external IPs, load balancer IPs and node
// ports are compared too, each with where external traffic may go.
func TestCompareExternal(t *testing.T) {
	lb := pt.Service{Namespace: "dev", Name: "lb", Type: zone.TypeLoadBalancer, ClusterIPs: []string{"10.0.0.2"}, ExternalIPs: []string{"192.0.2.2"},
		LoadBalancerIPs: []string{"203.0.113.2"}, Port: 80, NodePort: 30080, Ready: []string{"172.16.0.1", "172.16.0.2"}}
	local := pt.With(lb, func(s *pt.Service) { s.ExternalLocal, s.Local = true, []string{"172.16.0.2"} })
	cluster, ext, lbIP := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("203.0.113.2")
	f := func(a netip.Addr) Frontend { return Frontend{Addr: a, Protocol: zone.ProtocolTCP, Port: 80} }
	node := NodePortFrontend(proxy.IPv4, zone.ProtocolTCP, 30080)
	both := eps("172.16.0.1:80", "172.16.0.2:80")
	for _, tc := range []struct {
		name   string
		svc    pt.Service
		kernel map[Frontend][]netip.AddrPort
		kinds  []string
		inSync []bool
		diffs  []string
	}{
		{name: "in sync", svc: lb,
			kernel: map[Frontend][]netip.AddrPort{f(cluster): both, f(ext): both, f(lbIP): both, node: both},
			kinds:  []string{KindClusterIP, KindExternalIP, KindLoadBalancerIP, KindNodePort}, inSync: []bool{true, true, true, true}},
		{name: "external Local: the union of the node's and the cluster's", svc: local,
			kernel: map[Frontend][]netip.AddrPort{f(cluster): both, f(ext): both, f(lbIP): both, node: both},
			kinds:  []string{KindClusterIP, KindExternalIP, KindLoadBalancerIP, KindNodePort}, inSync: []bool{true, true, true, true}},
		{name: "load balancer IP and node port missing", svc: lb,
			kernel: map[Frontend][]netip.AddrPort{f(cluster): both, f(ext): eps("172.16.0.1:80")},
			kinds:  []string{KindClusterIP, KindExternalIP, KindLoadBalancerIP, KindNodePort}, inSync: []bool{true, false, false, false},
			diffs: []string{"192.0.2.2:80/TCP: the kernel does not send to 172.16.0.2:80",
				"the kernel has no rules for 203.0.113.2:80/TCP", "the kernel has no rules for node port 30080/TCP"}},
		{name: "stale rules on an external IP", svc: pt.With(lb, func(s *pt.Service) { s.ExternalIPs = nil }),
			kernel: map[Frontend][]netip.AddrPort{f(cluster): both, f(ext): both, f(lbIP): both, node: both},
			kinds:  []string{KindClusterIP, KindLoadBalancerIP, KindNodePort, ""}, inSync: []bool{true, true, true, false},
			diffs: []string{"the kernel still routes 192.0.2.2:80/TCP, which the model does not have (stale rules)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := ForService(pt.Model(nil, tc.svc), zone.Key{Namespace: "dev", Name: "lb"})
			ports := Compare(want, []netip.Addr{cluster, ext, lbIP}, &Kernel{Mode: "test", Endpoints: tc.kernel})
			var kinds, diffs []string
			var inSync []bool
			for _, p := range ports {
				kinds = append(kinds, p.Kind)
				inSync = append(inSync, p.InSync())
				diffs = append(diffs, p.Differences()...)
				if p.Kind != "" && p.ServicePort != 80 {
					t.Errorf("%s: service port %d, want 80", p.Frontend, p.ServicePort)
				}
			}
			if !slices.Equal(kinds, tc.kinds) || !slices.Equal(inSync, tc.inSync) {
				t.Errorf("kinds %v in sync %v, want %v %v", kinds, inSync, tc.kinds, tc.inSync)
			}
			if !slices.Equal(diffs, tc.diffs) {
				t.Errorf("differences:\n%s\nwant:\n%s", strings.Join(diffs, "\n"), strings.Join(tc.diffs, "\n"))
			}
		})
	}
}

func TestKernelAdd(t *testing.T) {
	f := Frontend{Addr: netip.MustParseAddr("10.0.0.1"), Protocol: zone.ProtocolUDP, Port: 53}
	var k Kernel
	k.Add(f, netip.AddrPort{})
	if got, ok := k.Endpoints[f]; !ok || len(got) != 0 {
		t.Fatalf("a frontend without endpoints: %v %v", got, ok)
	}
	for _, ep := range []string{"172.16.0.2:53", "172.16.0.1:53", "172.16.0.2:53"} {
		k.Add(f, netip.MustParseAddrPort(ep))
	}
	if got, want := k.Endpoints[f], eps("172.16.0.1:53", "172.16.0.2:53"); !slices.Equal(got, want) {
		t.Errorf("endpoints %v, want %v (sorted, each once)", got, want)
	}
}

// FollowDNAT collects DNAT targets in rule order through jumps, visits each
// chain once, and stops at cycles and at its depth bound.
func TestFollowDNAT(t *testing.T) {
	ep := func(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
	chains := map[string][]Step{
		"svc":   {{Jump: "sep-a"}, {DNAT: ep("10.0.0.9:80")}, {Jump: "sep-b"}, {Jump: "sep-a"}},
		"sep-a": {{DNAT: ep("10.0.0.1:80")}, {Jump: "svc"}}, // a cycle back
		"sep-b": {{DNAT: ep("10.0.0.2:80")}},
	}
	got := FollowDNAT("svc", func(c string) []Step { return chains[c] })
	want := []netip.AddrPort{ep("10.0.0.1:80"), ep("10.0.0.9:80"), ep("10.0.0.2:80")}
	if !slices.Equal(got, want) {
		t.Fatalf("FollowDNAT = %v, want %v", got, want)
	}
	deep := func(c string) []Step { return []Step{{DNAT: ep("10.0.0.3:80")}, {Jump: c + "x"}} }
	if n := len(FollowDNAT("c", deep)); n != maxChainDepth+1 {
		t.Fatalf("an endless chain of jumps gave %d targets, want %d", n, maxChainDepth+1)
	}
}
