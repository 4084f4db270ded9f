package proxy

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/clusterdns/clusterdns/zone"
)

type programmedPort struct{ sp *ServicePort }

func (p programmedPort) Programmed() *ServicePort { return p.sp }

func TestChangedPorts(t *testing.T) {
	port := func(name string, f Family, ep string) *ServicePort {
		ip := "10.0.0.1"
		if f == IPv6 {
			ip = "fd00::1"
		}
		return &ServicePort{Key: PortKey{Service: zone.Key{Namespace: "ns", Name: name}, Family: f}, Protocol: zone.ProtocolTCP,
			ClusterIP: netip.MustParseAddr(ip), Port: 80, Endpoints: []netip.AddrPort{netip.MustParseAddrPort(ep)}}
	}
	a, b, c, a6 := port("a", IPv4, "1.1.1.1:80"), port("b", IPv4, "1.1.1.2:80"), port("c", IPv4, "1.1.1.3:80"), port("a", IPv6, "[fd00::2]:80")
	programmedModel := NewModel(nil, []*ServicePort{a, b, a6})
	have := map[PortKey]programmedPort{a.Key: {a}, b.Key: {b}, a6.Key: {a6}}
	changedB := port("b", IPv4, "1.1.1.9:80")
	v4 := func(f Family) bool { return f == IPv4 }
	all := func(Family) bool { return true }

	cases := []struct {
		name         string
		m            *Model
		programmedID uint64
		in           func(Family) bool
		want         []PortKey
	}{
		{"from the programmed model", NewModel(programmedModel, []*ServicePort{a, changedB, c, a6}), programmedModel.ID, all, []PortKey{changedB.Key, c.Key}},
		{"by comparison", NewModel(nil, []*ServicePort{changedB, c, port("a", IPv6, "[fd00::3]:80")}), programmedModel.ID, all, []PortKey{a.Key, a6.Key, changedB.Key, c.Key}},
		{"one family", NewModel(nil, []*ServicePort{changedB, c}), 0, v4, []PortKey{a.Key, changedB.Key, c.Key}},
		{"nothing programmed", NewModel(nil, []*ServicePort{a}), 0, all, []PortKey{a.Key}},
		{"the same", NewModel(nil, []*ServicePort{a, b, a6}), 0, all, nil},
	}
	for _, tc := range cases {
		h := have
		if tc.name == "nothing programmed" {
			h = nil
		}
		if got := ChangedPorts(tc.m, tc.programmedID, h, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
