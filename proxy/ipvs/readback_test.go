package ipvs

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/inspect"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
	"github.com/clusterdns/clusterdns/zone"
)

// TestReadKernelMatchesWhatWasSynced programs Services into the fake IPVS
// table and reads them back: every service port is in sync, node ports show
// on the node's address, and a TCP endpoint removed while it has
// connections (draining at weight 0) no longer counts as one traffic goes to.
func TestReadKernelMatchesWhatWasSynced(t *testing.T) {
	f := newFixture(t, Config{})
	empty := pt.Service{Namespace: "dev", Name: "empty", ClusterIPs: []string{"10.10.0.5"}, Port: 8080}
	m := pt.Model(nil, clusterIPSvc, nodePortSvc, empty)
	f.sync(t, m, true)
	front := inspect.Frontend{Addr: netip.MustParseAddr("10.10.97.97"), Protocol: zone.ProtocolTCP, Port: 80}
	gone := netip.MustParseAddrPort(nginxPods[0] + ":80")
	f.kernel.SetConns(VSKey{Protocol: "TCP", Address: netip.AddrPortFrom(front.Addr, front.Port)}, gone, 1, 0)
	fewer := pt.With(clusterIPSvc, func(s *pt.Service) { s.Ready = nginxPods[1:] })
	m = pt.Model(m, fewer, nodePortSvc, empty)
	f.sync(t, m, false)

	k, err := ReadKernel(f.kernel)
	if err != nil || k == nil {
		t.Fatalf("read back: %v, %v", k, err)
	}
	for _, sp := range m.Ports {
		ports := inspect.Compare([]*proxy.ServicePort{sp}, []netip.Addr{sp.ClusterIP}, k)
		if len(ports) != 1 || !ports[0].InSync() {
			t.Errorf("%s: %+v, want in sync with %v", sp.Key, ports, sp.Endpoints)
		}
	}
	if got := k.Endpoints[front]; slices.Contains(got, gone) || len(got) != 2 {
		t.Errorf("%s sends to %v; the draining %s must not count", front, got, gone)
	}
	nodePort := inspect.Frontend{Addr: netip.MustParseAddr(nodeIP), Protocol: zone.ProtocolTCP, Port: 30002}
	if got := k.Endpoints[nodePort]; len(got) != 3 {
		t.Errorf("node port %s sends to %v, want the three pods", nodePort, got)
	}
}

func TestReadKernelEmptyTable(t *testing.T) {
	k, err := ReadKernel(NewFakeKernel(nil))
	if err != nil || k != nil {
		t.Errorf("an empty table read as %v, %v; want nil, nil", k, err)
	}
}

// TestReadKernelExternalInSync holds that external IPs and load balancer IPs
// read back in sync with the model, externalTrafficPolicy Local included
// (IPVS sends them to the node's own endpoints only, or to the cluster's
// when it has none), and that node ports are left out of the comparison.
func TestReadKernelExternalInSync(t *testing.T) {
	lb := pt.With(nodePortSvc, func(s *pt.Service) {
		s.Type, s.LoadBalancerIPs, s.ExternalIPs = zone.TypeLoadBalancer, []string{"203.0.113.10"}, []string{"192.0.2.10"}
	})
	for name, svc := range map[string]pt.Service{
		"cluster":                  lb,
		"external Local":           pt.With(lb, func(s *pt.Service) { s.ExternalLocal, s.Local = true, s.Ready[:1] }),
		"external Local, no local": pt.With(lb, func(s *pt.Service) { s.ExternalLocal = true }),
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, Config{})
			m := pt.Model(nil, svc)
			f.sync(t, m, true)
			k, err := ReadKernel(f.kernel)
			if err != nil || k == nil {
				t.Fatalf("read back: %v, %v", k, err)
			}
			var kinds []string
			for _, sp := range m.Ports {
				for _, p := range inspect.Compare([]*proxy.ServicePort{sp}, nil, k) {
					kinds = append(kinds, p.Kind)
					if !p.InSync() {
						t.Errorf("%s %s: %+v, want in sync", sp.Key, p.Frontend, p)
					}
				}
			}
			if want := []string{inspect.KindClusterIP, inspect.KindExternalIP, inspect.KindLoadBalancerIP}; !slices.Equal(kinds, want) {
				t.Errorf("compared %v, want %v", kinds, want)
			}
		})
	}
}
