package nftables

import (
	"context"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/inspect"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
)

// TestReadKernelMatchesWhatWasSynced programs clusters into the fake, whose
// listing the kernel tests hold to the real nft's, and checks that reading
// it back finds, for every frontend of every service port (cluster IP,
// external and load balancer IPs, node port), the model's endpoints, and no
// other frontend.
func TestReadKernelMatchesWhatWasSynced(t *testing.T) {
	for name, services := range pt.ReadBackClusters() {
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
