package ipvs

import (
	"net/netip"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/zone"
)

// svcSpec describes one test Service and its endpoints in a few fields.
type svcSpec struct {
	ns, name string
	typ      zone.ServiceType
	ips      []string
	proto    zone.Protocol
	port     int32
	target   int32
	nodePort int32
	affinity int32
	ready    []string // endpoint addresses, ready
	notReady []string // not ready, not serving
	draining []string // serving and terminating
	portName string
	external []string
}

func (s svcSpec) add(b *zone.Builder) {
	typ := s.typ
	if typ == "" {
		typ = zone.TypeClusterIP
	}
	proto := s.proto
	if proto == "" {
		proto = zone.ProtocolTCP
	}
	target := s.target
	if target == 0 {
		target = s.port
	}
	svc := &zone.Service{
		Key:             zone.Key{Namespace: s.ns, Name: s.name},
		Type:            typ,
		Ports:           []zone.ServicePort{{Name: s.portName, Protocol: proto, Port: s.port, TargetPort: target, NodePort: s.nodePort}},
		AffinityTimeout: s.affinity,
	}
	for _, ip := range s.ips {
		svc.ClusterIPs = append(svc.ClusterIPs, netip.MustParseAddr(ip))
	}
	for _, ip := range s.external {
		svc.ExternalIPs = append(svc.ExternalIPs, netip.MustParseAddr(ip))
	}
	b.SetService(svc)
	bySlice := map[zone.AddressType]*zone.EndpointSlice{}
	addEP := func(addr string, ep zone.Endpoint) {
		a := netip.MustParseAddr(addr)
		at := zone.AddressIPv4
		if a.Is6() {
			at = zone.AddressIPv6
		}
		sl := bySlice[at]
		if sl == nil {
			sl = &zone.EndpointSlice{
				Key:         zone.Key{Namespace: s.ns, Name: s.name + "-" + string(at)},
				Service:     s.name,
				AddressType: at,
				Ports:       []zone.EndpointPort{{Name: s.portName, Protocol: proto, Port: target}},
			}
			bySlice[at] = sl
		}
		ep.Addresses = []netip.Addr{a}
		sl.Endpoints = append(sl.Endpoints, ep)
	}
	for _, a := range s.ready {
		addEP(a, zone.Endpoint{Ready: true, Serving: true})
	}
	for _, a := range s.notReady {
		addEP(a, zone.Endpoint{})
	}
	for _, a := range s.draining {
		addEP(a, zone.Endpoint{Serving: true, Terminating: true})
	}
	for _, sl := range bySlice {
		b.SetSlice(sl)
	}
}

func modelOf(specs ...svcSpec) *proxy.Model { return modelFrom(nil, specs...) }

// modelFrom builds a model relative to prev, as the agent does.
func modelFrom(prev *proxy.Model, specs ...svcSpec) *proxy.Model {
	b := zone.NewBuilder()
	for _, s := range specs {
		s.add(b)
	}
	return proxy.BuildModel(prev, b.Snapshot())
}

// The example cluster's Services (deploy/examples).
var (
	nginxPods = []string{"172.16.79.83", "172.16.69.206", "172.16.69.207"}

	clusterIPSvc = svcSpec{ns: "dev", name: "service-clusterip", ips: []string{"10.10.97.97"}, port: 80, ready: nginxPods}
	nodePortSvc  = svcSpec{ns: "dev", name: "service-nodeport", typ: zone.TypeNodePort, ips: []string{"10.10.97.98"}, port: 80, nodePort: 30002, ready: nginxPods}
)

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}
