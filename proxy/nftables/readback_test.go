package nftables

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/inspect"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
	"github.com/clusterdns/clusterdns/zone"
)

// TestReadKernelMatchesWhatWasSynced programs clusters into the fake, whose
// listing the kernel tests hold to the real nft's, and checks that reading
// it back finds each service port's endpoints.
func TestReadKernelMatchesWhatWasSynced(t *testing.T) {
	nginx := pt.NginxPods()
	svc := pt.ClusterIPService()
	v6 := pt.Service{Namespace: "dev", Name: "v6", ClusterIPs: []string{"fd00::10"}, Port: 443, Ready: []string{"fd00:1::1", "fd00:1::2"}}
	for name, services := range map[string][]pt.Service{
		"cluster IP and node port": {svc, pt.NodePortService()},
		"affinity":                 {pt.With(svc, func(s *pt.Service) { s.Affinity = 10800 })},
		"external IPs":             {pt.With(svc, func(s *pt.Service) { s.ExternalIPs = []string{"192.0.2.10"} })},
		"no endpoints":             {pt.With(svc, func(s *pt.Service) { s.Ready = nil })},
		"terminating fallback":     {pt.With(svc, func(s *pt.Service) { s.Ready, s.Draining = nil, nginx[:1] })},
		"UDP and IPv6":             {pt.With(svc, func(s *pt.Service) { s.Protocol = zone.ProtocolUDP }), v6},
	} {
		t.Run(name, func(t *testing.T) {
			fake := NewFake()
			b := New(Config{Runner: fake})
			m := pt.Model(nil, services...)
			if _, err := b.Sync(context.Background(), m, true); err != nil {
				t.Fatal(err)
			}
			k, err := ReadKernel(context.Background(), fake, []proxy.Family{proxy.IPv4, proxy.IPv6})
			if err != nil || k == nil {
				t.Fatalf("read back: %v, %v", k, err)
			}
			for _, sp := range m.Ports {
				ports := inspect.Compare([]*proxy.ServicePort{sp}, []netip.Addr{sp.ClusterIP}, k)
				if len(ports) != 1 || !ports[0].InSync() {
					t.Errorf("%s: %+v, want in sync with %v", sp.Key, ports, sp.Endpoints)
				}
				for _, ip := range sp.ExternalIPs {
					f := inspect.Frontend{Addr: ip, Protocol: sp.Protocol, Port: sp.Port}
					if got := k.Endpoints[f]; !slices.Equal(got, sp.Endpoints) {
						t.Errorf("%s: external IP %s sends to %v, want %v", sp.Key, f, got, sp.Endpoints)
					}
				}
			}
			if len(k.Endpoints) != len(m.Ports)+len(services[0].ExternalIPs) {
				t.Errorf("read back %d frontends, want %d: %v", len(k.Endpoints), len(m.Ports), k.Endpoints)
			}
		})
	}
}

func TestReadKernelWithoutTables(t *testing.T) {
	k, err := ReadKernel(context.Background(), NewFake(), []proxy.Family{proxy.IPv4, proxy.IPv6})
	if err != nil || k != nil {
		t.Errorf("no tables read as %v, %v; want nil, nil", k, err)
	}
}
