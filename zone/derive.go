package zone

import (
	"net/netip"
	"sort"
)

// DeriveSlices builds, for every Service with a selector and no EndpointSlice of
// its own, the slices the EndpointSlice controller would write from the
// matching Pods: one slice per address family, each pod's IP of that family,
// ready when the Service publishes not-ready addresses or the pod is Ready and
// not terminating, and a hostname only for pods whose spec.hostname is set and
// whose spec.subdomain names the Service. Named target ports resolve against
// each pod's container ports; a pod that lacks the port is left out of that
// port's slice, as the controller groups endpoints by their resolved ports.
func DeriveSlices(services map[Key]*Service, owned map[Key]bool, pods map[Key]*Pod) []*EndpointSlice {
	byNamespace := make(map[string][]*Pod)
	for _, p := range pods {
		byNamespace[p.Namespace] = append(byNamespace[p.Namespace], p)
	}
	for _, list := range byNamespace {
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	}
	keys := make([]Key, 0, len(services))
	for k := range services {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keyLess(keys[i], keys[j]) })

	var out []*EndpointSlice
	for _, k := range keys {
		svc := services[k]
		if svc.Selector == nil || svc.Type == TypeExternalName || owned[k] {
			continue
		}
		out = append(out, deriveForService(svc, byNamespace[k.Namespace])...)
	}
	return out
}

// sliceGroup collects endpoints that share one resolved port list.
type sliceGroup struct {
	ports     []EndpointPort
	endpoints []Endpoint
}

func deriveForService(svc *Service, pods []*Pod) []*EndpointSlice {
	groups := make(map[string]*sliceGroup) // by family and port signature
	var order []string
	for _, p := range pods {
		if !selectorMatches(svc.Selector, p.Labels) || len(p.IPs) == 0 {
			continue
		}
		ports := resolvePorts(svc, p)
		for _, ip := range p.IPs {
			family := AddressIPv4
			if ip.Is6() {
				family = AddressIPv6
			}
			sig := string(family) + portSignature(ports)
			g, ok := groups[sig]
			if !ok {
				g = &sliceGroup{ports: ports}
				groups[sig] = g
				order = append(order, sig)
			}
			g.endpoints = append(g.endpoints, endpointForPod(svc, p, ip))
		}
	}
	out := make([]*EndpointSlice, 0, len(order))
	for i, sig := range order {
		g := groups[sig]
		family := AddressIPv4
		if g.endpoints[0].Addresses[0].Is6() {
			family = AddressIPv6
		}
		out = append(out, &EndpointSlice{
			Key:         Key{Namespace: svc.Namespace, Name: derivedSliceName(svc.Name, i)},
			Service:     svc.Name,
			AddressType: family,
			Endpoints:   g.endpoints,
			Ports:       g.ports,
			Updated:     svc.Updated,
		})
	}
	return out
}

func derivedSliceName(service string, i int) string {
	if i == 0 {
		return service + "-derived"
	}
	return service + "-derived-" + itoa(i)
}

func endpointForPod(svc *Service, p *Pod, ip netip.Addr) Endpoint {
	ready := p.Ready && !p.Terminating
	e := Endpoint{
		Addresses:   []netip.Addr{ip},
		NodeName:    p.NodeName,
		PodName:     p.Name,
		Ready:       svc.PublishNotReadyAddresses || ready,
		Serving:     p.Ready,
		Terminating: p.Terminating,
	}
	if p.Hostname != "" && p.Subdomain == svc.Name {
		e.Hostname = p.Hostname
	}
	return e
}

// resolvePorts gives the pod's view of the Service ports: numeric targets as
// they are, named targets looked up in the pod's container ports (same name
// and protocol); a named target the pod does not declare is skipped.
func resolvePorts(svc *Service, p *Pod) []EndpointPort {
	out := make([]EndpointPort, 0, len(svc.Ports))
	for _, sp := range svc.Ports {
		port := sp.TargetPort
		if sp.TargetPortName != "" {
			port = 0
			for _, cp := range p.Ports {
				if cp.Name == sp.TargetPortName && cp.Protocol == sp.Protocol {
					port = cp.Port
					break
				}
			}
			if port == 0 {
				continue
			}
		}
		out = append(out, EndpointPort{Name: sp.Name, Protocol: sp.Protocol, Port: port})
	}
	return out
}

func portSignature(ports []EndpointPort) string {
	sig := ""
	for _, p := range ports {
		sig += "|" + p.Name + "/" + string(p.Protocol) + "/" + itoa(int(p.Port))
	}
	return sig
}

func selectorMatches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	neg := i < 0
	if neg {
		i = -i
	}
	for i > 0 {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
	}
	if neg {
		n--
		b[n] = '-'
	}
	return string(b[n:])
}
