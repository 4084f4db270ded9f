package iptables

import (
	"net/netip"

	"github.com/clusterdns/clusterdns/proxy"
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
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
}

// service is the spec as proxytest describes it.
func (s svcSpec) service() pt.Service {
	return pt.Service{Namespace: s.ns, Name: s.name, Type: s.typ, ClusterIPs: s.ips,
		Protocol: s.proto, PortName: s.portName, Port: s.port, TargetPort: s.target, NodePort: s.nodePort,
		Affinity: s.affinity, Ready: s.ready, NotReady: s.notReady, Draining: s.draining}
}

func modelOf(specs ...svcSpec) *proxy.Model { return modelFrom(nil, specs...) }

// modelFrom builds a model relative to prev, as the agent does.
func modelFrom(prev *proxy.Model, specs ...svcSpec) *proxy.Model {
	services := make([]pt.Service, len(specs))
	for i, s := range specs {
		services[i] = s.service()
	}
	return pt.Model(prev, services...)
}

// The example cluster's Services (deploy/examples).
var (
	nginxPods = []string{"172.16.79.83", "172.16.69.206", "172.16.69.207"}

	clusterIPSvc = svcSpec{ns: "dev", name: "service-clusterip", ips: []string{"10.10.97.97"}, port: 80, ready: nginxPods}
	nodePortSvc  = svcSpec{ns: "dev", name: "service-nodeport", typ: zone.TypeNodePort, ips: []string{"10.10.97.98"}, port: 80, nodePort: 30002, ready: nginxPods}
)

func prefixes(s ...string) []netip.Prefix { return pt.Prefixes(s...) }
