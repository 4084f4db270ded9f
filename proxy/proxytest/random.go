package proxytest

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/clusterdns/clusterdns/zone"
)

// RandomServices returns n Services of random shape: ClusterIP or NodePort,
// TCP or UDP, with or without affinity, a few endpoints, some dual-stack.
// Addresses and node ports are unique, as the API server keeps them.
func RandomServices(rng *rand.Rand, n int) []Service {
	out := make([]Service, n)
	for i := range out {
		out[i] = randomService(rng, fmt.Sprintf("svc%d", i), fmt.Sprintf("10.10.%d.%d", i/250, i%250+1), fmt.Sprintf("fd00:10::%x", i+1), int32(30000+i))
	}
	return out
}

func randomService(rng *rand.Rand, name, ip, ip6 string, nodePort int32) Service {
	s := Service{Namespace: "ns", Name: name, ClusterIPs: []string{ip}, Port: 80}
	if rng.IntN(3) == 0 {
		s.Type, s.NodePort = zone.TypeNodePort, nodePort
	}
	if rng.IntN(4) == 0 {
		s.Protocol = zone.ProtocolUDP
	}
	if rng.IntN(5) == 0 {
		s.Affinity = 60
	}
	s.Ready = randomPods(rng)
	if rng.IntN(6) == 0 {
		s.ClusterIPs = append(s.ClusterIPs, ip6)
		s.Ready = append(s.Ready, fmt.Sprintf("fd00:172::%x", rng.IntN(250)+1))
	}
	return s
}

func randomPods(rng *rand.Rand) []string {
	var pods []string
	for range rng.IntN(5) {
		pods = append(pods, fmt.Sprintf("172.16.%d.%d", rng.IntN(4), rng.IntN(250)+1))
	}
	return pods
}

// Mutate changes one to three of the Services as a cluster changes between
// two syncs: a Service goes or comes, loses its endpoints or gets others,
// changes its port and node port, its affinity or its external IPs. step
// numbers the change, so that new addresses and node ports stay unique.
func Mutate(rng *rand.Rand, services []Service, step int) []Service {
	out := slices.Clone(services)
	for k := range rng.IntN(3) + 1 {
		if len(out) == 0 {
			break
		}
		i := rng.IntN(len(out))
		s := &out[i]
		switch rng.IntN(9) {
		case 0:
			out = slices.Delete(out, i, i+1)
		case 1:
			n := step*3 + k
			out = append(out, randomService(rng, fmt.Sprintf("new%d", n), fmt.Sprintf("10.20.%d.%d", n/250, n%250+1),
				fmt.Sprintf("fd00:20::%x", n+1), int32(31000+n)))
		case 2:
			s.Ready = nil
		case 3:
			s.Type, s.NodePort = zone.TypeNodePort, int32(32000+step*3+k)
			s.Port = int32(8000 + step)
		case 4:
			if s.Affinity == 0 {
				s.Affinity = 600
			} else {
				s.Affinity = 0
			}
		case 5:
			if len(s.ExternalIPs) == 0 {
				n := step*3 + k
				s.ExternalIPs = []string{fmt.Sprintf("192.0.2.%d", n%250+1)}
			} else {
				s.ExternalIPs = nil
			}
		case 6:
			// A load balancer with the external policy flipped, some
			// endpoints on this node and sometimes source ranges.
			n := step*3 + k
			s.Type, s.NodePort = zone.TypeLoadBalancer, int32(33000+n)
			s.LoadBalancerIPs = []string{fmt.Sprintf("203.0.113.%d", n%250+1)}
			s.ExternalLocal = !s.ExternalLocal
			s.Local = slices.Clone(s.Ready[:len(s.Ready)/2])
			s.SourceRanges = nil
			if rng.IntN(2) == 0 {
				s.SourceRanges = []string{"198.51.100.0/24"}
			}
		case 7:
			// The internal policy flipped, and topology hints on every
			// endpoint or none.
			s.InternalLocal = !s.InternalLocal
			s.Local = slices.Clone(s.Ready[len(s.Ready)/2:])
			s.ZoneHints = nil
			if rng.IntN(2) == 0 {
				s.ZoneHints = map[string][]string{}
				for j, a := range s.Ready {
					s.ZoneHints[a] = []string{[]string{NodeZone, "zone-b"}[j%2]}
				}
			}
		default:
			s.Ready = append(slices.Clone(s.Ready[:len(s.Ready)/2]), fmt.Sprintf("172.16.9.%d", step%250+1))
		}
	}
	return out
}
