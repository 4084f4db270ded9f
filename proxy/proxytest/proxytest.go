// Package proxytest is what the three rule backends' tests share: the
// contract every backend keeps (Scenarios, run by Run through a small
// adapter per backend, and a random walk of cluster changes), the one way to
// build Services and models from short descriptions, golden files with
// -update and a line diff, and benchmark inputs.
//
// Nothing here knows iptables, nftables or IPVS: a scenario asks where a
// packet goes, and each backend's adapter answers from its own fake.
package proxytest

import (
	"fmt"
	"net/netip"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/zone"
)

// Service describes one Service with a single port and its endpoints.
type Service struct {
	Namespace, Name string
	Type            zone.ServiceType // default ClusterIP
	ClusterIPs      []string
	ExternalIPs     []string
	Protocol        zone.Protocol // default TCP
	PortName        string
	Port            int32
	TargetPort      int32 // default Port
	NodePort        int32
	Affinity        int32    // ClientIP affinity timeout in seconds; zero for none
	Ready           []string // endpoint addresses, ready
	NotReady        []string // neither ready nor serving
	Draining        []string // serving and terminating

	// LoadBalancerIPs are load balancer ingress IPs of ipMode VIP,
	// ProxyLoadBalancerIPs ones of ipMode Proxy.
	LoadBalancerIPs, ProxyLoadBalancerIPs []string
	SourceRanges                          []string
	ExternalLocal, InternalLocal          bool
	// Local lists the endpoints (of Ready or Draining) on the scenarios'
	// node, NodeName; every other endpoint is on OtherNode.
	Local []string
	// ZoneHints and NodeHints give endpoints (by address) topology hints.
	ZoneHints, NodeHints map[string][]string
}

// The node the contract's models are built for, its zone, and another node.
const (
	NodeName  = "node-a"
	NodeZone  = "zone-a"
	OtherNode = "node-b"
)

// Add puts the Service and its EndpointSlices (one per address family) into b.
func (s Service) Add(b *zone.Builder) {
	typ, proto, target := s.Type, s.Protocol, s.TargetPort
	if typ == "" {
		typ = zone.TypeClusterIP
	}
	if proto == "" {
		proto = zone.ProtocolTCP
	}
	if target == 0 {
		target = s.Port
	}
	svc := &zone.Service{
		Key:             zone.Key{Namespace: s.Namespace, Name: s.Name},
		Type:            typ,
		Ports:           []zone.ServicePort{{Name: s.PortName, Protocol: proto, Port: s.Port, TargetPort: target, NodePort: s.NodePort}},
		AffinityTimeout: s.Affinity,

		ExternalTrafficLocal: s.ExternalLocal,
		InternalTrafficLocal: s.InternalLocal,
	}
	for _, ip := range s.LoadBalancerIPs {
		svc.LoadBalancerIngress = append(svc.LoadBalancerIngress, zone.LoadBalancerIngress{IP: netip.MustParseAddr(ip)})
	}
	for _, ip := range s.ProxyLoadBalancerIPs {
		svc.LoadBalancerIngress = append(svc.LoadBalancerIngress, zone.LoadBalancerIngress{IP: netip.MustParseAddr(ip), Proxy: true})
	}
	svc.LoadBalancerSourceRanges = Prefixes(s.SourceRanges...)
	for _, ip := range s.ClusterIPs {
		svc.ClusterIPs = append(svc.ClusterIPs, netip.MustParseAddr(ip))
	}
	for _, ip := range s.ExternalIPs {
		svc.ExternalIPs = append(svc.ExternalIPs, netip.MustParseAddr(ip))
	}
	b.SetService(svc)
	slices := map[zone.AddressType]*zone.EndpointSlice{}
	isLocal := map[string]bool{}
	for _, a := range s.Local {
		isLocal[a] = true
	}
	add := func(addr string, ep zone.Endpoint) {
		a := netip.MustParseAddr(addr)
		at := zone.AddressIPv4
		if a.Is6() {
			at = zone.AddressIPv6
		}
		sl := slices[at]
		if sl == nil {
			sl = &zone.EndpointSlice{
				Key:         zone.Key{Namespace: s.Namespace, Name: s.Name + "-" + string(at)},
				Service:     s.Name,
				AddressType: at,
				Ports:       []zone.EndpointPort{{Name: s.PortName, Protocol: proto, Port: target}},
			}
			slices[at] = sl
		}
		ep.Addresses = []netip.Addr{a}
		ep.NodeName = OtherNode
		if isLocal[addr] {
			ep.NodeName = NodeName
		}
		if z, n := s.ZoneHints[addr], s.NodeHints[addr]; z != nil || n != nil {
			ep.Hints = &zone.EndpointHints{ForZones: z, ForNodes: n}
		}
		sl.Endpoints = append(sl.Endpoints, ep)
	}
	for _, a := range s.Ready {
		add(a, zone.Endpoint{Ready: true, Serving: true})
	}
	for _, a := range s.NotReady {
		add(a, zone.Endpoint{})
	}
	for _, a := range s.Draining {
		add(a, zone.Endpoint{Serving: true, Terminating: true})
	}
	for _, sl := range slices {
		b.SetSlice(sl)
	}
}

// Model builds the model of the Services relative to prev (nil for none), as
// the agent of NodeName (in NodeZone) does.
func Model(prev *proxy.Model, services ...Service) *proxy.Model {
	b := zone.NewBuilder()
	b.SetNode(&zone.Node{Name: NodeName, Zone: NodeZone})
	for _, s := range services {
		s.Add(b)
	}
	return proxy.BuildNodeModel(prev, b.Snapshot(), NodeName)
}

// Prefixes parses CIDRs.
func Prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

// BenchPorts returns n (at most 65,536) ClusterIP service ports with five
// endpoints each, every endpoint address its own; variant moves the last
// endpoint of the middle service to another address.
func BenchPorts(n, variant int) []*proxy.ServicePort {
	ports := make([]*proxy.ServicePort, 0, n)
	for i := range n {
		sp := &proxy.ServicePort{
			Key:       proxy.PortKey{Service: zone.Key{Namespace: "bench", Name: fmt.Sprintf("svc-%d", i)}, Port: "http", Family: proxy.IPv4},
			Protocol:  zone.ProtocolTCP,
			ClusterIP: netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}),
			Port:      80,
		}
		for e := range 5 {
			second := byte(16 + e)
			if i == n/2 && e == 4 {
				second += byte(variant * 8)
			}
			sp.Endpoints = append(sp.Endpoints, netip.AddrPortFrom(netip.AddrFrom4([4]byte{172, second, byte(i >> 8), byte(i)}), 8080))
		}
		sp.AnyEndpoints = true
		ports = append(ports, sp)
	}
	return ports
}

// BenchPolicyPorts is BenchPorts with a tenth of the ports load balancers
// of externalTrafficPolicy Local (a node port, a load balancer IP and two
// of the five endpoints on this node) and another tenth narrowed to three
// endpoints by topology hints: the shapes that cost more than a plain
// ClusterIP port. The changed endpoint is the same as BenchPorts'.
func BenchPolicyPorts(n, variant int) []*proxy.ServicePort {
	ports := BenchPorts(n, variant)
	for i, sp := range ports {
		switch i % 10 {
		case 3:
			sp.NodePort = uint16(30000 + i/10)
			sp.LoadBalancerIPs = []netip.Addr{netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})}
			sp.ExternalLocal = true
			sp.ExternalEndpoints = sp.Endpoints[:2]
			sp.ClusterEndpoints = sp.Endpoints
		case 7:
			sp.Topology = zone.TrafficPreferSameZone
			sp.Endpoints = sp.Endpoints[2:]
		}
	}
	return ports
}

// With returns a copy of s changed by edit, for a step that differs from
// another in one field.
func With(s Service, edit func(*Service)) Service {
	edit(&s)
	return s
}

// NginxPods are the endpoints of the example cluster's Services
// (deploy/examples).
func NginxPods() []string { return []string{"172.16.79.83", "172.16.69.206", "172.16.69.207"} }

// ClusterIPService is the example cluster's ClusterIP Service.
func ClusterIPService() Service {
	return Service{Namespace: "dev", Name: "service-clusterip", ClusterIPs: []string{"10.10.97.97"}, Port: 80, Ready: NginxPods()}
}

// NodePortService is the example cluster's NodePort Service.
func NodePortService() Service {
	return Service{Namespace: "dev", Name: "service-nodeport", Type: zone.TypeNodePort, ClusterIPs: []string{"10.10.97.98"},
		Port: 80, NodePort: 30002, Ready: NginxPods()}
}

// ReadBackClusters are the clusters a backend's kernel read-back is checked
// on after a sync: every kind of frontend (cluster IP, node port, external
// and load balancer IPs), affinity, source ranges, Local policy, no
// endpoints, terminating fallback, UDP and IPv6. Both backends that read
// rules back hold themselves to the same list.
func ReadBackClusters() map[string][]Service {
	nginx := NginxPods()
	svc := ClusterIPService()
	v6 := Service{Namespace: "dev", Name: "v6", ClusterIPs: []string{"fd00::10"}, Port: 443, Ready: []string{"fd00:1::1", "fd00:1::2"}}
	lb := With(NodePortService(), func(s *Service) {
		s.Type, s.LoadBalancerIPs, s.ExternalIPs = zone.TypeLoadBalancer, []string{"203.0.113.10"}, []string{"192.0.2.10"}
	})
	return map[string][]Service{
		"cluster IP and node port":     {svc, NodePortService()},
		"affinity":                     {With(svc, func(s *Service) { s.Affinity = 10800 })},
		"external IPs":                 {With(svc, func(s *Service) { s.ExternalIPs = []string{"192.0.2.10"} })},
		"load balancer":                {lb},
		"load balancer, source ranges": {With(lb, func(s *Service) { s.SourceRanges = []string{"198.51.100.0/24"} })},
		"external traffic Local":       {With(lb, func(s *Service) { s.ExternalLocal, s.Local = true, s.Ready[:1] })},
		"no endpoints":                 {With(svc, func(s *Service) { s.Ready = nil })},
		"node port, no endpoints":      {With(NodePortService(), func(s *Service) { s.Ready = nil })},
		"terminating fallback":         {With(svc, func(s *Service) { s.Ready, s.Draining = nil, nginx[:1] })},
		"UDP and IPv6":                 {With(svc, func(s *Service) { s.Protocol = zone.ProtocolUDP }), v6},
	}
}
