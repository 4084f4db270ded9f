package proxytest

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/zone"
)

// byteSource hands out a fuzz input a byte at a time, then zeros.
type byteSource struct{ b []byte }

func (s *byteSource) next() byte {
	if len(s.b) == 0 {
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

func (s *byteSource) u16() uint16 { return uint16(s.next())<<8 | uint16(s.next()) }

// pick returns one of choices.
func pick[T any](s *byteSource, choices ...T) T { return choices[int(s.next())%len(choices)] }

// nameRunes are what generated names are made of: mostly what the API
// server accepts, but also what a manifest file may hold unchecked (quotes,
// spaces, backslashes, non-ASCII), which rule text must survive.
const nameRunes = "abcdefghijklmnopqrstuvwxyz0123456789-abcdefghijklmnopqrstuvwxyz0123456789-.\"' \\;#:/_{}$Zé"

func (s *byteSource) name(common ...string) string {
	n := int(s.next())
	if n < 224 {
		return common[n%len(common)]
	}
	var b strings.Builder
	length := int(s.next()) % 70
	if n >= 252 {
		length = 200 + int(s.next()) // longer than any comment or name allows
	}
	for range length {
		r := []rune(nameRunes)
		b.WriteRune(r[int(s.next())%len(r)])
	}
	return b.String()
}

// FromBytes turns a fuzz input into a small cluster's routing: up to four
// Services of every type, family and protocol, with cluster, external and
// node ports and ready, unready and draining endpoints; and the routing
// options a node could be started with. The same bytes give the same model.
func FromBytes(data []byte) ([]Service, proxy.Routing) {
	s := &byteSource{b: data}
	var r proxy.Routing
	if c := s.next(); c&1 != 0 {
		r.ClusterCIDRs = append(r.ClusterCIDRs, netip.MustParsePrefix("172.16.0.0/16"))
		if c&2 != 0 {
			r.ClusterCIDRs = append(r.ClusterCIDRs, netip.MustParsePrefix("fd00:1::/64"))
		}
	} else {
		r.MasqueradeAll = c&2 != 0
	}
	switch c := s.next() % 4; c {
	case 1:
		r.NodePortAddresses = Prefixes("192.168.0.0/16")
	case 2:
		r.NodePortAddresses = Prefixes("127.0.0.0/8", "::1/128", "fe80::/10")
	}
	if c := s.next(); c >= 200 {
		r.MasqueradeMark = 1 << (c % 32)
	}
	var out []Service
	for i := range 1 + int(s.next())%4 {
		svc := Service{
			Namespace: s.name("default", "dev", "kube-system", "a"),
			Name:      s.name(fmt.Sprintf("svc-%d", i), "web", "dns", strings.Repeat("n", 63)),
			Type:      pick(s, zone.TypeClusterIP, zone.TypeNodePort, zone.TypeLoadBalancer, zone.TypeClusterIP),
			Protocol:  pick(s, zone.ProtocolTCP, zone.ProtocolUDP, zone.ProtocolSCTP),
			PortName:  s.name("", "http", "dns-tcp", "p"),
			Port:      int32(max(1, s.u16())),
			Affinity:  int32(pick(s, 0, 0, 10, 10800, 86400)),
		}
		if t := s.u16(); t%3 != 0 {
			svc.TargetPort = int32(max(1, t))
		}
		if svc.Type != zone.TypeClusterIP {
			svc.NodePort = int32(pick(s, 30000, 31999, 32767, 0)) + int32(s.next())
		}
		v4, v6 := true, false
		switch s.next() % 3 {
		case 1:
			v4, v6 = false, true
		case 2:
			v6 = true
		}
		addr4 := func(a, b byte) string { return netip.AddrFrom4([4]byte{a, b, s.next(), s.next()}).String() }
		addr6 := func(p byte) string {
			return netip.AddrFrom16([16]byte{0xfd, 0x00, 2: p, 14: s.next(), 15: s.next()}).String()
		}
		if v4 {
			svc.ClusterIPs = append(svc.ClusterIPs, addr4(10, 96))
		}
		if v6 {
			svc.ClusterIPs = append(svc.ClusterIPs, addr6(0x96))
		}
		for range s.next() % 3 {
			if v4 && s.next()&1 == 0 {
				svc.ExternalIPs = append(svc.ExternalIPs, addr4(203, 0))
			} else {
				svc.ExternalIPs = append(svc.ExternalIPs, addr6(0xe0))
			}
		}
		endpoint := func() string {
			if v4 && (!v6 || s.next()&1 == 0) {
				return addr4(172, 16)
			}
			return addr6(0x01)
		}
		for range s.next() % 6 {
			svc.Ready = append(svc.Ready, endpoint())
		}
		for range s.next() % 3 {
			svc.NotReady = append(svc.NotReady, endpoint())
		}
		for range s.next() % 3 {
			svc.Draining = append(svc.Draining, endpoint())
		}
		out = append(out, svc)
	}
	// The traffic policies, load balancer IPs, source ranges and hints
	// come last, so that inputs written before they existed still make
	// the clusters they made.
	for i := range out {
		svc := &out[i]
		flags := s.next()
		if svc.Type == zone.TypeLoadBalancer && flags&1 != 0 {
			for _, ip := range svc.ClusterIPs {
				lb, proxyMode := "198.18.0.1", "198.18.0.2"
				if netip.MustParseAddr(ip).Is6() {
					lb, proxyMode = "2001:db8:18::1", "2001:db8:18::2"
				}
				svc.LoadBalancerIPs = append(svc.LoadBalancerIPs, lb)
				if flags&64 != 0 {
					svc.ProxyLoadBalancerIPs = append(svc.ProxyLoadBalancerIPs, proxyMode)
				}
			}
		}
		svc.ExternalLocal = flags&2 != 0
		svc.InternalLocal = flags&4 != 0
		if flags&8 != 0 {
			svc.SourceRanges = []string{"198.51.100.0/24", "192.0.2.128/25", "2001:db8::/64"}
		}
		if flags&16 != 0 {
			all := append(append([]string(nil), svc.Ready...), svc.Draining...)
			svc.Local = all[:len(all)/2]
		}
		if flags&32 != 0 {
			svc.ZoneHints = map[string][]string{}
			for j, a := range svc.Ready {
				svc.ZoneHints[a] = []string{[]string{NodeZone, "zone-b"}[j%2]}
			}
		}
	}
	return out, r
}
