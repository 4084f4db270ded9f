package iptables

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

// TestReadKernelMatchesWhatWasSynced programs clusters into the fake and
// checks that reading the rules back finds, for every frontend of every
// service port (cluster IP, external and load balancer IPs, node port), the
// model's endpoints, and no other frontend: the read-back follows the same
// rules the tracer does.
func TestReadKernelMatchesWhatWasSynced(t *testing.T) {
	for name, services := range pt.ReadBackClusters() {
		t.Run(name, func(t *testing.T) {
			fake := NewFakeRunner()
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

// TestReadKernelParsesSavedRules reads rules in the order iptables-save
// prints them (matches before the comment, not as restored).
func TestReadKernelParsesSavedRules(t *testing.T) {
	saved := `*nat
:PREROUTING ACCEPT [0:0]
:CDNS-SERVICES - [0:0]
:CDNS-SVC-A - [0:0]
:CDNS-SEP-1 - [0:0]
:CDNS-SEP-2 - [0:0]
-A PREROUTING -m comment --comment "clusterdns service portals" -j CDNS-SERVICES
-A CDNS-SERVICES -d 10.10.97.97/32 -p tcp -m comment --comment "dev/web cluster IP" -m tcp --dport 80 -j CDNS-SVC-A
-A CDNS-SERVICES -d 10.10.0.99/32 -p tcp -m comment --comment "dev/nobody cluster IP" -m tcp --dport 80 -j CDNS-SVC-B
-A CDNS-SERVICES -m comment --comment "clusterdns node ports" -m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j CDNS-NODEPORTS
-A CDNS-NODEPORTS -p tcp -m comment --comment "dev/web" -m tcp --dport 30080 -j CDNS-EXT-A
-A CDNS-EXT-A -m comment --comment "masquerade traffic to a node port" -j CDNS-MARK-MASQ
-A CDNS-EXT-A -j CDNS-SVC-A
-A CDNS-SVC-A -m comment --comment "dev/web -> 172.16.0.1:80" -m statistic --mode random --probability 0.50000000000 -j CDNS-SEP-1
-A CDNS-SVC-A -m comment --comment "dev/web -> 172.16.0.2:80" -j CDNS-SEP-2
-A CDNS-SEP-1 -s 172.16.0.1/32 -m comment --comment "dev/web" -j CDNS-MARK-MASQ
-A CDNS-SEP-1 -p tcp -m comment --comment "dev/web" -m tcp -j DNAT --to-destination 172.16.0.1:80
-A CDNS-SEP-2 -p tcp -m comment --comment "dev/web" -m tcp -j DNAT --to-destination 172.16.0.2:80
COMMIT
`
	k := &inspect.Kernel{}
	parseNAT([]byte(saved), proxy.IPv4, k)
	web := inspect.Frontend{Addr: netip.MustParseAddr("10.10.97.97"), Protocol: zone.ProtocolTCP, Port: 80}
	nobody := inspect.Frontend{Addr: netip.MustParseAddr("10.10.0.99"), Protocol: zone.ProtocolTCP, Port: 80}
	node := inspect.NodePortFrontend(proxy.IPv4, zone.ProtocolTCP, 30080)
	want := map[inspect.Frontend][]netip.AddrPort{
		web:    {netip.MustParseAddrPort("172.16.0.1:80"), netip.MustParseAddrPort("172.16.0.2:80")},
		nobody: nil,
		node:   {netip.MustParseAddrPort("172.16.0.1:80"), netip.MustParseAddrPort("172.16.0.2:80")},
	}
	if len(k.Endpoints) != len(want) {
		t.Fatalf("frontends %v, want %v", k.Endpoints, want)
	}
	for f, eps := range want {
		if got, ok := k.Endpoints[f]; !ok || !slices.Equal(got, eps) {
			t.Errorf("%s: %v (found %v), want %v", f, got, ok, eps)
		}
	}
}

func TestReadKernelWithoutRules(t *testing.T) {
	k, err := ReadKernel(context.Background(), NewFakeRunner(), []proxy.Family{proxy.IPv4})
	if err != nil || k != nil {
		t.Errorf("empty tables read as %v, %v; want nil, nil", k, err)
	}
}

func TestSplitArgs(t *testing.T) {
	for in, want := range map[string][]string{
		`-A X -m comment --comment "a b" -j Y`:    {"-A", "X", "-m", "comment", "--comment", "a b", "-j", "Y"},
		`-A X --comment "say \"hi\"" -j Y`:        {"-A", "X", "--comment", `say "hi"`, "-j", "Y"},
		`-A X  -d 10.0.0.1/32 --comment "" -j Y `: {"-A", "X", "-d", "10.0.0.1/32", "--comment", "", "-j", "Y"},
	} {
		if got := splitArgs(in); !slices.Equal(got, want) {
			t.Errorf("splitArgs(%q) = %q, want %q", in, got, want)
		}
	}
}
