package proxy

import (
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"

	"github.com/clusterdns/clusterdns/zone"
)

// Family is an IP address family. Each family is programmed separately
// (iptables and ip6tables have separate tables).
type Family uint8

// The address families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// Is reports whether f is o; it filters ports by family.
func (f Family) Is(o Family) bool { return f == o }

// FamilyOf returns the family of an address.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() || a.Is4In6() {
		return IPv4
	}
	return IPv6
}

// PortKey names one Service port in one address family.
type PortKey struct {
	Service zone.Key
	// Port is the Service port's name, empty for a single unnamed port.
	Port   string
	Family Family
}

// String is "namespace/name:port" (the port part only when named), the form
// used in rule comments.
func (k PortKey) String() string {
	s := k.Service.Namespace + "/" + k.Service.Name
	if k.Port != "" {
		s += ":" + k.Port
	}
	return s
}

func (k PortKey) less(o PortKey) bool {
	if k.Service.Namespace != o.Service.Namespace {
		return k.Service.Namespace < o.Service.Namespace
	}
	if k.Service.Name != o.Service.Name {
		return k.Service.Name < o.Service.Name
	}
	if k.Port != o.Port {
		return k.Port < o.Port
	}
	return k.Family < o.Family
}

// ServicePort is everything a backend needs to route one Service port in one
// family: where clients send (cluster IP and port, node port) and which
// endpoints may receive. It is immutable once built.
type ServicePort struct {
	Key       PortKey
	Protocol  zone.Protocol
	ClusterIP netip.Addr
	Port      uint16
	// NodePort is zero unless the Service is of type NodePort or LoadBalancer.
	NodePort uint16
	// AffinitySeconds is the ClientIP session affinity timeout; zero means none.
	AffinitySeconds int32
	// ExternalIPs are the Service's external IPs of this family, sorted.
	ExternalIPs []netip.Addr
	// Endpoints are the backends traffic may go to, sorted by address: the ready
	// ones, or, when none is ready, the serving ones that are terminating (so
	// that connections drain instead of failing during a rollout).
	Endpoints []netip.AddrPort
}

// Equal reports whether two service ports would be programmed the same way.
func (p *ServicePort) Equal(o *ServicePort) bool {
	if p == nil || o == nil {
		return p == o
	}
	if p.Key != o.Key || p.Protocol != o.Protocol || p.ClusterIP != o.ClusterIP || p.Port != o.Port ||
		p.NodePort != o.NodePort || p.AffinitySeconds != o.AffinitySeconds || len(p.Endpoints) != len(o.Endpoints) ||
		len(p.ExternalIPs) != len(o.ExternalIPs) {
		return false
	}
	for i := range p.ExternalIPs {
		if p.ExternalIPs[i] != o.ExternalIPs[i] {
			return false
		}
	}
	for i := range p.Endpoints {
		if p.Endpoints[i] != o.Endpoints[i] {
			return false
		}
	}
	return true
}

// Model is the routing the node should have: every Service port with a cluster
// IP, per family. It is immutable once built and shared by all backends.
//
// A model built from a previous one shares the previous model's objects for
// the ports that did not change, and lists what changed, so that a backend
// which programmed the previous model can skip the comparison of every port.
type Model struct {
	// Ports is sorted by key, so that everything rendered from it is
	// deterministic.
	Ports []*ServicePort
	// index is each key's position in Ports; models with the same keys share it.
	index map[PortKey]int
	// sources remembers what each Service's ports were built from, so that
	// the next model reuses them when neither the Service nor its slices
	// changed.
	sources *sourceMap
	// generation is the Generation of the snapshot the model was built from.
	generation uint64

	// ID identifies the model; BaseID is the ID of the model Changes is
	// relative to, zero when there is none.
	ID, BaseID uint64
	// Changes lists the keys added, changed or removed since the base model,
	// in key order.
	Changes []PortKey
}

// portSource is one Service's ports and the objects they were built from.
type portSource struct {
	svc    *zone.Service
	slices []*zone.EndpointSlice
	ports  []*ServicePort
}

// Lookup returns the service port with the key, or nil.
func (m *Model) Lookup(k PortKey) *ServicePort {
	if i, ok := m.index[k]; ok {
		return m.Ports[i]
	}
	return nil
}

// Family returns the ports of one family, in key order.
func (m *Model) Family(f Family) []*ServicePort {
	out := make([]*ServicePort, 0, len(m.Ports))
	for _, p := range m.Ports {
		if p.Key.Family == f {
			out = append(out, p)
		}
	}
	return out
}

// NewModel indexes a list of service ports (in any order) as a Model. With
// prev, unchanged ports are replaced by prev's equal objects and Changes
// lists the difference.
func NewModel(prev *Model, ports []*ServicePort) *Model {
	sort.Slice(ports, func(i, j int) bool { return ports[i].Key.less(ports[j].Key) })
	m := &Model{Ports: ports, index: make(map[PortKey]int, len(ports)), ID: rand.Uint64() | 1}
	for i, p := range ports {
		m.index[p.Key] = i
		if prev == nil {
			continue
		}
		if old := prev.Lookup(p.Key); old != nil && old.Equal(p) {
			ports[i] = old
		} else {
			m.Changes = append(m.Changes, p.Key)
		}
	}
	if prev != nil {
		m.BaseID = prev.ID
		if len(ports)-len(m.Changes) < len(prev.Ports) {
			for _, p := range prev.Ports {
				if _, ok := m.index[p.Key]; !ok {
					m.Changes = append(m.Changes, p.Key)
				}
			}
		}
		sort.Slice(m.Changes, func(i, j int) bool { return m.Changes[i].less(m.Changes[j]) })
	}
	return m
}

// BuildModel derives the model from a cluster snapshot, relative to prev when
// it is not nil. Headless and ExternalName Services are left out (they have
// no virtual address); a Service port whose endpoints do not declare it gets
// no endpoints, as kube-proxy does.
//
// Services whose object and slices are the ones prev was built from keep
// prev's ports without being looked at again, and when no port appeared or
// went away the new model reuses prev's order and index. When prev was built
// from the snapshot just before c, only the Services c lists as changed are
// looked at, so an endpoint change costs work for that Service (and a copy of
// the port list), not a pass over every Service.
func BuildModel(prev *Model, c *zone.Cluster) *Model {
	if c == nil {
		return NewModel(prev, nil)
	}
	if prev != nil && prev.sources != nil {
		if since, changed, ok := c.ChangedServices(); ok && since == prev.generation {
			if m := patchChanged(prev, c, changed); m != nil {
				return m
			}
		}
	}
	sources := newSourceMap()
	var rebuilt []*portSource
	for key, svc := range c.Services {
		if !routable(svc) {
			continue
		}
		svcSlices := c.SlicesFor(key)
		if prev != nil && prev.sources != nil {
			if s := prev.sources.get(key); s != nil && s.svc == svc && slices.Equal(s.slices, svcSlices) {
				sources.put(key, s)
				continue
			}
		}
		s := &portSource{svc: svc, slices: svcSlices, ports: servicePorts(svc, svcSlices)}
		sources.put(key, s)
		rebuilt = append(rebuilt, s)
	}
	if prev != nil && prev.sources != nil && sources.n == prev.sources.n {
		if m := patchModel(prev, sources, rebuilt, c.Generation); m != nil {
			return m
		}
	}
	var ports []*ServicePort
	for _, shard := range sources.shards {
		for _, s := range shard {
			ports = append(ports, s.ports...)
		}
	}
	m := NewModel(prev, ports)
	m.sources, m.generation = sources, c.Generation
	// NewModel swapped unchanged ports for prev's objects; the sources must
	// hold the same objects for the next comparison by pointer.
	for _, s := range rebuilt {
		for i, p := range s.ports {
			s.ports[i] = m.Lookup(p.Key)
		}
	}
	return m
}

// patchModel builds the model from prev when the rebuilt Services kept
// exactly their port keys and no Service came or went; it returns nil when
// they did not and the model must be rebuilt.
func patchModel(prev *Model, sources *sourceMap, rebuilt []*portSource, generation uint64) *Model {
	for _, s := range rebuilt {
		old := prev.sources.get(s.svc.Key)
		if old == nil || len(old.ports) != len(s.ports) {
			return nil
		}
		for i := range s.ports {
			if s.ports[i].Key != old.ports[i].Key {
				return nil
			}
		}
	}
	m := &Model{Ports: slices.Clone(prev.Ports), index: prev.index, sources: sources, generation: generation, ID: rand.Uint64() | 1, BaseID: prev.ID}
	for _, s := range rebuilt {
		for i, p := range s.ports {
			at := prev.index[p.Key]
			if old := prev.Ports[at]; old.Equal(p) {
				s.ports[i] = old
				continue
			}
			m.Ports[at] = p
			m.Changes = append(m.Changes, p.Key)
		}
	}
	sort.Slice(m.Changes, func(i, j int) bool { return m.Changes[i].less(m.Changes[j]) })
	return m
}

// patchChanged builds the model from prev and the Services of c that changed
// since the snapshot prev was built from. It returns nil, for a full build,
// when a routable Service came or went or a Service's ports changed.
func patchChanged(prev *Model, c *zone.Cluster, changed []zone.Key) *Model {
	var edits map[zone.Key]*portSource
	var rebuilt []*portSource
	for _, key := range changed {
		svc := c.Services[key]
		old := prev.sources.get(key)
		if svc == nil || !routable(svc) {
			if old != nil {
				return nil
			}
			continue
		}
		if old == nil {
			return nil
		}
		svcSlices := c.SlicesFor(key)
		if old.svc == svc && slices.Equal(old.slices, svcSlices) {
			continue
		}
		s := &portSource{svc: svc, slices: svcSlices, ports: servicePorts(svc, svcSlices)}
		if edits == nil {
			edits = make(map[zone.Key]*portSource)
		}
		edits[key] = s
		rebuilt = append(rebuilt, s)
	}
	return patchModel(prev, prev.sources.with(edits), rebuilt, c.Generation)
}

// routable reports whether a Service has virtual addresses to route.
func routable(svc *zone.Service) bool {
	return svc.Type != zone.TypeExternalName && !svc.Headless && len(svc.ClusterIPs) > 0
}

// sourceShards is how many maps a sourceMap spreads its Services over.
const sourceShards = 64

// sourceMap holds the portSource of every routable Service in shards, so
// that a model derived from another shares all shards but the ones its
// changes fall in.
type sourceMap struct {
	shards [sourceShards]map[zone.Key]*portSource
	n      int
}

func newSourceMap() *sourceMap { return &sourceMap{} }

func shardOf(k zone.Key) int {
	h := uint32(2166136261)
	for _, s := range [2]string{k.Namespace, k.Name} {
		for i := 0; i < len(s); i++ {
			h = (h ^ uint32(s[i])) * 16777619
		}
		h = (h ^ '/') * 16777619
	}
	return int(h % sourceShards)
}

func (m *sourceMap) get(k zone.Key) *portSource { return m.shards[shardOf(k)][k] }

// put adds a Service while the map is being built.
func (m *sourceMap) put(k zone.Key, s *portSource) {
	shard := m.shards[shardOf(k)]
	if shard == nil {
		shard = make(map[zone.Key]*portSource)
		m.shards[shardOf(k)] = shard
	}
	if _, ok := shard[k]; !ok {
		m.n++
	}
	shard[k] = s
}

// with returns a map that is m with the Services in edits replaced; it
// copies only the shards they fall in. Every key of edits must be in m.
func (m *sourceMap) with(edits map[zone.Key]*portSource) *sourceMap {
	if len(edits) == 0 {
		return m
	}
	out := *m
	var copied [sourceShards]bool
	for k, s := range edits {
		i := shardOf(k)
		if !copied[i] {
			out.shards[i] = maps.Clone(m.shards[i])
			copied[i] = true
		}
		out.shards[i][k] = s
	}
	return &out
}

// servicePorts builds a Service's ports, per cluster IP family and port.
func servicePorts(svc *zone.Service, slices []*zone.EndpointSlice) []*ServicePort {
	var out []*ServicePort
	for _, ip := range svc.ClusterIPs {
		family := FamilyOf(ip)
		external := externalIPs(svc.ExternalIPs, family)
		for _, sp := range svc.Ports {
			p := &ServicePort{
				Key:             PortKey{Service: svc.Key, Port: sp.Name, Family: family},
				Protocol:        sp.Protocol,
				ClusterIP:       ip.Unmap(),
				Port:            uint16(sp.Port),
				AffinitySeconds: svc.AffinityTimeout,
				ExternalIPs:     external,
				Endpoints:       selectEndpoints(slices, sp, family),
			}
			if svc.Type == zone.TypeNodePort || svc.Type == zone.TypeLoadBalancer {
				p.NodePort = uint16(sp.NodePort)
			}
			out = append(out, p)
		}
	}
	return out
}

// externalIPs picks a Service's external IPs of one family, sorted.
func externalIPs(all []netip.Addr, family Family) []netip.Addr {
	var out []netip.Addr
	for _, a := range all {
		if FamilyOf(a) == family {
			out = append(out, a.Unmap())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// selectEndpoints picks the endpoints of one Service port in one family: the
// ready ones; if there are none, the serving and terminating ones.
func selectEndpoints(slices []*zone.EndpointSlice, sp zone.ServicePort, family Family) []netip.AddrPort {
	var ready, fallback []netip.AddrPort
	want := zone.AddressIPv4
	if family == IPv6 {
		want = zone.AddressIPv6
	}
	for _, s := range slices {
		if s.AddressType != want {
			continue
		}
		port, ok := slicePort(s, sp)
		if !ok {
			continue
		}
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			// An endpoint has one address in practice; the API allows more but
			// consumers use the first.
			ap := netip.AddrPortFrom(e.Addresses[0].Unmap(), port)
			switch {
			case e.Ready:
				ready = append(ready, ap)
			case e.Serving && e.Terminating:
				fallback = append(fallback, ap)
			}
		}
	}
	out := ready
	if len(out) == 0 {
		out = fallback
	}
	return sortUnique(out)
}

// slicePort finds the slice's port for a Service port: same name and protocol.
func slicePort(s *zone.EndpointSlice, sp zone.ServicePort) (uint16, bool) {
	for _, p := range s.Ports {
		if p.Name == sp.Name && p.Protocol == sp.Protocol && p.Port > 0 && p.Port < 65536 {
			return uint16(p.Port), true
		}
	}
	return 0, false
}

func sortUnique(eps []netip.AddrPort) []netip.AddrPort {
	if len(eps) < 2 {
		return eps
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i].Compare(eps[j]) < 0 })
	out := eps[:1]
	for _, e := range eps[1:] {
		if e != out[len(out)-1] {
			out = append(out, e)
		}
	}
	return out
}
