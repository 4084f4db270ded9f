package zone

import (
	"net/netip"
	"strings"
	"time"
	"unique"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// ServiceNameLabel is the label that ties an EndpointSlice to its Service.
const ServiceNameLabel = discoveryv1.LabelServiceName

// ServiceFromAPI converts a core/v1 Service. Unparseable IPs are dropped, as the
// API server would never have accepted them.
func ServiceFromAPI(in *corev1.Service) *Service {
	s := &Service{
		Key:                      Key{Namespace: intern(in.Namespace), Name: in.Name},
		Type:                     ServiceType(intern(string(in.Spec.Type))),
		ExternalName:             in.Spec.ExternalName,
		PublishNotReadyAddresses: in.Spec.PublishNotReadyAddresses,
		ExternalTrafficLocal:     in.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
		InternalTrafficLocal:     in.Spec.InternalTrafficPolicy != nil && *in.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal,
		HealthCheckNodePort:      in.Spec.HealthCheckNodePort,
		Updated:                  lastUpdate(&in.ObjectMeta),
	}
	if s.Type == "" {
		s.Type = TypeClusterIP
	}
	if len(in.Spec.Selector) > 0 {
		s.Selector = in.Spec.Selector
	}
	ips := in.Spec.ClusterIPs
	if len(ips) == 0 && in.Spec.ClusterIP != "" {
		ips = []string{in.Spec.ClusterIP}
	}
	for _, ip := range ips {
		if ip == corev1.ClusterIPNone {
			s.Headless = true
			continue
		}
		if a, err := netip.ParseAddr(ip); err == nil {
			s.ClusterIPs = append(s.ClusterIPs, a)
		}
	}
	if s.Type == TypeExternalName {
		s.ClusterIPs, s.Headless = nil, false
	}
	s.ExternalIPs = parseAddrs(in.Spec.ExternalIPs)
	if in.Spec.TrafficDistribution != nil {
		s.TrafficDistribution = *in.Spec.TrafficDistribution
	}
	// Load balancer addresses and source ranges only mean something for
	// type LoadBalancer; a Service changed to another type may keep a stale
	// status for a while.
	if s.Type == TypeLoadBalancer {
		for _, ing := range in.Status.LoadBalancer.Ingress {
			a, err := netip.ParseAddr(ing.IP)
			if err != nil {
				continue
			}
			s.LoadBalancerIngress = append(s.LoadBalancerIngress, LoadBalancerIngress{
				IP:    a.Unmap(),
				Proxy: ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy,
			})
		}
		for _, r := range in.Spec.LoadBalancerSourceRanges {
			// The API accepts spaces around the CIDRs.
			if p, err := netip.ParsePrefix(strings.TrimSpace(r)); err == nil {
				s.LoadBalancerSourceRanges = append(s.LoadBalancerSourceRanges, p.Masked())
			}
		}
	}
	for _, p := range in.Spec.Ports {
		sp := ServicePort{Name: intern(p.Name), Protocol: protocolOf(p.Protocol), Port: p.Port, NodePort: p.NodePort}
		switch {
		case p.TargetPort.Type == intstr.String && p.TargetPort.StrVal != "":
			sp.TargetPortName = p.TargetPort.StrVal
		case p.TargetPort.IntVal != 0:
			sp.TargetPort = p.TargetPort.IntVal
		default:
			sp.TargetPort = p.Port
		}
		s.Ports = append(s.Ports, sp)
	}
	if in.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		s.AffinityTimeout = corev1.DefaultClientIPServiceAffinitySeconds
		if c := in.Spec.SessionAffinityConfig; c != nil && c.ClientIP != nil && c.ClientIP.TimeoutSeconds != nil {
			s.AffinityTimeout = *c.ClientIP.TimeoutSeconds
		}
	}
	return s
}

// SliceFromAPI converts a discovery/v1 EndpointSlice.
func SliceFromAPI(in *discoveryv1.EndpointSlice) *EndpointSlice {
	s := &EndpointSlice{
		Key:         Key{Namespace: intern(in.Namespace), Name: in.Name},
		Service:     in.Labels[ServiceNameLabel],
		AddressType: AddressType(intern(string(in.AddressType))),
		Updated:     lastUpdate(&in.ObjectMeta),
		Ports:       make([]EndpointPort, 0, len(in.Ports)),
		Endpoints:   make([]Endpoint, 0, len(in.Endpoints)),
	}
	// One array holds every endpoint's addresses: a large cluster has tens
	// of thousands of endpoints, nearly all with one address each.
	n := 0
	for _, e := range in.Endpoints {
		n += len(e.Addresses)
	}
	addrs := make([]netip.Addr, 0, n)
	for _, p := range in.Ports {
		ep := EndpointPort{Protocol: ProtocolTCP}
		if p.Name != nil {
			ep.Name = intern(*p.Name)
		}
		if p.Protocol != nil {
			ep.Protocol = protocolOf(*p.Protocol)
		}
		if p.Port != nil {
			ep.Port = *p.Port
		}
		s.Ports = append(s.Ports, ep)
	}
	for _, e := range in.Endpoints {
		first := len(addrs)
		addrs = appendAddrs(addrs, e.Addresses)
		out := Endpoint{
			Addresses: addrs[first:len(addrs):len(addrs)],
			// A nil ready condition means ready, per the EndpointSlice API.
			Ready:       e.Conditions.Ready == nil || *e.Conditions.Ready,
			Terminating: e.Conditions.Terminating != nil && *e.Conditions.Terminating,
		}
		out.Serving = out.Ready
		if e.Conditions.Serving != nil {
			out.Serving = *e.Conditions.Serving
		}
		if e.Hostname != nil {
			out.Hostname = *e.Hostname
		}
		if e.NodeName != nil {
			// Thousands of endpoints share a few node names.
			out.NodeName = unique.Make(*e.NodeName).Value()
		}
		if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
			out.PodName = e.TargetRef.Name
		}
		if e.Zone != nil {
			out.Zone = unique.Make(*e.Zone).Value()
		}
		if h := e.Hints; h != nil && (len(h.ForZones) > 0 || len(h.ForNodes) > 0) {
			out.Hints = &EndpointHints{}
			for _, z := range h.ForZones {
				out.Hints.ForZones = append(out.Hints.ForZones, unique.Make(z.Name).Value())
			}
			for _, n := range h.ForNodes {
				out.Hints.ForNodes = append(out.Hints.ForNodes, unique.Make(n.Name).Value())
			}
		}
		s.Endpoints = append(s.Endpoints, out)
	}
	return s
}

// PodFromAPI converts a core/v1 Pod.
func PodFromAPI(in *corev1.Pod) *Pod {
	p := &Pod{
		Key:         Key{Namespace: intern(in.Namespace), Name: in.Name},
		Labels:      in.Labels,
		Hostname:    in.Spec.Hostname,
		Subdomain:   in.Spec.Subdomain,
		NodeName:    in.Spec.NodeName,
		Terminating: in.DeletionTimestamp != nil,
	}
	for _, ip := range in.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			p.IPs = append(p.IPs, a)
		}
	}
	if len(p.IPs) == 0 && in.Status.PodIP != "" {
		p.IPs = parseAddrs([]string{in.Status.PodIP})
	}
	for _, c := range in.Status.Conditions {
		if c.Type == corev1.PodReady {
			p.Ready = c.Status == corev1.ConditionTrue
		}
	}
	for _, c := range in.Spec.Containers {
		for _, cp := range c.Ports {
			p.Ports = append(p.Ports, ContainerPort{Name: cp.Name, Protocol: protocolOf(cp.Protocol), Port: cp.ContainerPort})
		}
	}
	return p
}

// NodeFromAPI converts a core/v1 Node.
func NodeFromAPI(in *corev1.Node) *Node {
	return &Node{Name: in.Name, Zone: in.Labels[corev1.LabelTopologyZone]}
}

// NamespaceFromAPI converts a core/v1 Namespace.
func NamespaceFromAPI(in *corev1.Namespace) *Namespace {
	return &Namespace{Name: in.Name, Labels: in.Labels}
}

func protocolOf(p corev1.Protocol) Protocol {
	if p == "" {
		return ProtocolTCP
	}
	return Protocol(intern(string(p)))
}

// intern returns the one copy of a string that many objects repeat
// (namespaces, types, protocols, port names): each decoded object otherwise
// holds its own, tens of thousands of small allocations in a large cluster.
func intern(s string) string { return unique.Make(s).Value() }

func parseAddrs(in []string) []netip.Addr {
	if len(in) == 0 {
		return nil
	}
	return appendAddrs(make([]netip.Addr, 0, len(in)), in)
}

// appendAddrs appends the addresses that parse, IPv4 ones unmapped.
func appendAddrs(out []netip.Addr, in []string) []netip.Addr {
	for _, s := range in {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// lastUpdate is the newest time recorded on the object: the latest managed
// field write, else its creation.
func lastUpdate(m *metav1.ObjectMeta) time.Time {
	t := m.CreationTimestamp.Time
	for _, f := range m.ManagedFields {
		if f.Time != nil && f.Time.After(t) {
			t = f.Time.Time
		}
	}
	return t
}

func parseAddr(s string) (netip.Addr, error) { return netip.ParseAddr(s) }
