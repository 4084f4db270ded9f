package nftables

import (
	"context"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/inspect"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
	"github.com/clusterdns/clusterdns/zone"
)

// TestReadKernelMatchesWhatWasSynced programs clusters into the fake, whose
// listing the kernel tests hold to the real nft's, and checks that reading
// it back finds, for every frontend of every service port (cluster IP,
// external and load balancer IPs, node port), the model's endpoints, and no
// other frontend.
func TestReadKernelMatchesWhatWasSynced(t *testing.T) {
	nginx := pt.NginxPods()
	svc := pt.ClusterIPService()
	v6 := pt.Service{Namespace: "dev", Name: "v6", ClusterIPs: []string{"fd00::10"}, Port: 443, Ready: []string{"fd00:1::1", "fd00:1::2"}}
	lb := pt.With(pt.NodePortService(), func(s *pt.Service) {
		s.Type, s.LoadBalancerIPs, s.ExternalIPs = zone.TypeLoadBalancer, []string{"203.0.113.10"}, []string{"192.0.2.10"}
	})
	for name, services := range map[string][]pt.Service{
		"cluster IP and node port":     {svc, pt.NodePortService()},
		"affinity":                     {pt.With(svc, func(s *pt.Service) { s.Affinity = 10800 })},
		"external IPs":                 {pt.With(svc, func(s *pt.Service) { s.ExternalIPs = []string{"192.0.2.10"} })},
		"load balancer":                {lb},
		"load balancer, source ranges": {pt.With(lb, func(s *pt.Service) { s.SourceRanges = []string{"198.51.100.0/24"} })},
		"external traffic Local":       {pt.With(lb, func(s *pt.Service) { s.ExternalLocal, s.Local = true, s.Ready[:1] })},
		"no endpoints":                 {pt.With(svc, func(s *pt.Service) { s.Ready = nil })},
		"node port, no endpoints":      {pt.With(pt.NodePortService(), func(s *pt.Service) { s.Ready = nil })},
		"terminating fallback":         {pt.With(svc, func(s *pt.Service) { s.Ready, s.Draining = nil, nginx[:1] })},
		"UDP and IPv6":                 {pt.With(svc, func(s *pt.Service) { s.Protocol = zone.ProtocolUDP }), v6},
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
			frontends := 0
			for _, sp := range m.Ports {
				for _, p := range inspect.Compare([]*proxy.ServicePort{sp}, nil, k) {
					frontends++
					if !p.InSync() {
						t.Errorf("%s %s: %+v, want in sync", sp.Key, p.Frontend, p)
					}
				}
			}
			if len(k.Endpoints) != frontends {
				t.Errorf("read back %d frontends, want %d: %v", len(k.Endpoints), frontends, k.Endpoints)
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
