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
// family: where clients send (cluster IP and port, node port, external and
// load balancer IPs) and which endpoints each kind of traffic may reach. It
// is immutable once built.
//
// Traffic is internal when it is sent to the cluster IP, and external when
// it is sent to a node port, an external IP or a load balancer IP. The two
// kinds have their own endpoints because the Service's traffic policies
// (internalTrafficPolicy, externalTrafficPolicy) apply to them separately.
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
	// LoadBalancerIPs are the Service's load balancer ingress IPs of this
	// family, sorted. Ingresses with ipMode Proxy are left out: their load
	// balancer must see the traffic, so the node does not take it.
	LoadBalancerIPs []netip.Addr
	// SourceRanges, when not empty, are the only sources that may reach the
	// LoadBalancerIPs; traffic from others is dropped.
	SourceRanges []netip.Prefix
	// InternalLocal and ExternalLocal are the Local traffic policies;
	// ExternalLocal is set only on a port that takes external traffic.
	InternalLocal, ExternalLocal bool
	// Topology is how topology hints narrowed the cluster-wide endpoints:
	// "" (they did not), zone.TrafficPreferSameZone or
	// zone.TrafficPreferSameNode.
	Topology string
	// Endpoints are where internal traffic goes, sorted by address: the
	// usable endpoints cluster-wide (narrowed by topology hints), or with
	// InternalLocal the usable ones on this node. Usable means ready, or,
	// when none is, serving and terminating, so that connections drain
	// instead of failing during a rollout.
	Endpoints []netip.AddrPort
	// ExternalEndpoints are where external traffic from outside the node
	// goes: the cluster-wide endpoints, or with ExternalLocal the node's
	// own (then the traffic keeps its source address). Nil on a port
	// without external addresses.
	ExternalEndpoints []netip.AddrPort
	// ClusterEndpoints, set with ExternalLocal only, are where external
	// traffic sent by the node itself or by a pod goes: cluster-wide, as if
	// it had gone out to a load balancer and come back (KEP-1860's
	// short-circuit). Traffic from the node is masqueraded.
	ClusterEndpoints []netip.AddrPort
	// AnyEndpoints reports whether the Service port has usable endpoints
	// anywhere in the cluster. Traffic that finds its endpoint list empty is
	// rejected when it has none (the Service has no endpoints) and dropped
	// when it has (none is for this node, by policy), as kube-proxy does.
	AnyEndpoints bool
}

// HasEndpoints reports whether the port has endpoints anywhere: AnyEndpoints,
// or, for a port built by hand, an endpoint in one of its lists.
func (p *ServicePort) HasEndpoints() bool {
	return p.AnyEndpoints || len(p.Endpoints) > 0 || len(p.ExternalEndpoints) > 0 || len(p.ClusterEndpoints) > 0
}

// External reports whether the port takes external traffic.
func (p *ServicePort) External() bool {
	return p.NodePort != 0 || len(p.ExternalIPs) > 0 || len(p.LoadBalancerIPs) > 0
}

// Equal reports whether two service ports would be programmed the same way.
func (p *ServicePort) Equal(o *ServicePort) bool {
	if p == nil || o == nil {
		return p == o
	}
	return p.Key == o.Key && p.Protocol == o.Protocol && p.ClusterIP == o.ClusterIP && p.Port == o.Port &&
		p.NodePort == o.NodePort && p.AffinitySeconds == o.AffinitySeconds &&
		p.InternalLocal == o.InternalLocal && p.ExternalLocal == o.ExternalLocal && p.Topology == o.Topology &&
		p.AnyEndpoints == o.AnyEndpoints &&
		slices.Equal(p.ExternalIPs, o.ExternalIPs) && slices.Equal(p.LoadBalancerIPs, o.LoadBalancerIPs) &&
		slices.Equal(p.SourceRanges, o.SourceRanges) && slices.Equal(p.Endpoints, o.Endpoints) &&
		slices.Equal(p.ExternalEndpoints, o.ExternalEndpoints) && slices.Equal(p.ClusterEndpoints, o.ClusterEndpoints)
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
	// node and zone are the node the model routes for and its topology
	// zone; a model for another node or zone shares nothing with this one.
	node, zone string
	// alias is the node-local DNS address the model routes (see
	// BuildNodeModelAlias); a model with another shares nothing either.
	alias ServiceAlias

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

// PortCounts counts a model's service ports by what they use, for metrics.
type PortCounts struct {
	NodePorts, ExternalIPs, LoadBalancerIPs, SourceRanges int
	ExternalLocal, InternalLocal, Topology                int
	// NoLocalInternal and NoLocalExternal count the ports whose internal
	// (external) traffic is dropped: endpoints exist, none on this node.
	NoLocalInternal, NoLocalExternal int
}

// Counts counts the model's ports of each family by what they use, in one
// pass.
func (m *Model) Counts() (ipv4, ipv6 PortCounts) {
	count := func(n *int, yes bool) {
		if yes {
			*n++
		}
	}
	for _, p := range m.Ports {
		c := &ipv4
		if p.Key.Family == IPv6 {
			c = &ipv6
		}
		count(&c.NodePorts, p.NodePort != 0)
		count(&c.ExternalIPs, len(p.ExternalIPs) > 0)
		count(&c.LoadBalancerIPs, len(p.LoadBalancerIPs) > 0)
		count(&c.SourceRanges, len(p.SourceRanges) > 0)
		count(&c.ExternalLocal, p.ExternalLocal)
		count(&c.InternalLocal, p.InternalLocal)
		count(&c.Topology, p.Topology != "")
		count(&c.NoLocalInternal, p.AnyEndpoints && len(p.Endpoints) == 0)
		count(&c.NoLocalExternal, p.AnyEndpoints && p.External() && len(p.ExternalEndpoints) == 0)
	}
	return ipv4, ipv6
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
//
// BuildModel routes for no node in particular: no endpoint is local. The
// agent uses BuildNodeModel.
func BuildModel(prev *Model, c *zone.Cluster) *Model { return BuildNodeModel(prev, c, "") }

// BuildNodeModel is BuildModel for the named node: its endpoints are the
// local ones of the Local traffic policies, and its zone (from its Node
// object) selects topology hints.
func BuildNodeModel(prev *Model, c *zone.Cluster, node string) *Model {
	return BuildNodeModelAlias(prev, c, node, ServiceAlias{})
}

// ServiceAlias is one more address of a Service on this node only, routed
// as an external IP of the Service's ports. It exists for the node-local DNS
// cache's link-local address (169.254.20.10): while the cache is alive, its
// NOTRACK rules keep queries to that address out of conntrack and so out of
// these DNAT rules; once it is dead, the queries are tracked and reach the
// Service's endpoints (kube-dns) through this alias instead of a closed port.
type ServiceAlias struct {
	Service zone.Key
	Addr    netip.Addr
}

// BuildNodeModelAlias is BuildNodeModel with alias added to its Service's
// ports of the same family; a zero alias adds nothing.
func BuildNodeModelAlias(prev *Model, c *zone.Cluster, node string, alias ServiceAlias) *Model {
	if c == nil {
		return NewModel(prev, nil)
	}
	here := locality{node: node, zone: c.NodeZone(node), alias: alias}
	if prev != nil && (prev.node != here.node || prev.zone != here.zone || prev.alias != here.alias) {
		// Every Service's endpoints may differ: rebuild them all, and let
		// NewModel find which ports changed.
		m := buildAll(prev, nil, c, here)
		return m
	}
	if prev != nil && prev.sources != nil {
		if since, changed, ok := c.ChangedServices(); ok && since == prev.generation {
			if m := patchChanged(prev, c, changed, here); m != nil {
				return m
			}
		}
	}
	var reuse *sourceMap
	if prev != nil {
		reuse = prev.sources
	}
	return buildAll(prev, reuse, c, here)
}

// locality is the node a model routes for.
type locality struct {
	node, zone string
	alias      ServiceAlias
}

// buildAll builds the model from every Service of c, reusing the ports of
// the Services that reuse lists with the same object and slices.
func buildAll(prev *Model, reuse *sourceMap, c *zone.Cluster, here locality) *Model {
	sources := newSourceMap()
	var rebuilt []*portSource
	for key, svc := range c.Services {
		if !routable(svc) {
			continue
		}
		svcSlices := c.SlicesFor(key)
		if reuse != nil {
			if s := reuse.get(key); s != nil && s.svc == svc && slices.Equal(s.slices, svcSlices) {
				sources.put(key, s)
				continue
			}
		}
		s := &portSource{svc: svc, slices: svcSlices, ports: servicePorts(svc, svcSlices, here)}
		sources.put(key, s)
		rebuilt = append(rebuilt, s)
	}
	if reuse != nil && sources.n == reuse.n {
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
	m.sources, m.generation, m.node, m.zone, m.alias = sources, c.Generation, here.node, here.zone, here.alias
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
	m := &Model{Ports: slices.Clone(prev.Ports), index: prev.index, sources: sources, generation: generation,
		node: prev.node, zone: prev.zone, alias: prev.alias, ID: rand.Uint64() | 1, BaseID: prev.ID}
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
func patchChanged(prev *Model, c *zone.Cluster, changed []zone.Key, here locality) *Model {
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
		s := &portSource{svc: svc, slices: svcSlices, ports: servicePorts(svc, svcSlices, here)}
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
func servicePorts(svc *zone.Service, svcSlices []*zone.EndpointSlice, here locality) []*ServicePort {
	var out []*ServicePort
	for _, ip := range svc.ClusterIPs {
		family := FamilyOf(ip)
		external := externalIPs(svc.ExternalIPs, family)
		if here.alias.Service == svc.Key && here.alias.Addr.IsValid() && FamilyOf(here.alias.Addr) == family && !slices.Contains(external, here.alias.Addr.Unmap()) {
			external = append(external, here.alias.Addr.Unmap())
			slices.SortFunc(external, netip.Addr.Compare)
		}
		lbIPs := loadBalancerIPs(svc.LoadBalancerIngress, family)
		var ranges []netip.Prefix
		if len(lbIPs) > 0 {
			ranges = sourceRanges(svc.LoadBalancerSourceRanges, family)
		}
		for _, sp := range svc.Ports {
			p := &ServicePort{
				Key:             PortKey{Service: svc.Key, Port: sp.Name, Family: family},
				Protocol:        sp.Protocol,
				ClusterIP:       ip.Unmap(),
				Port:            uint16(sp.Port),
				AffinitySeconds: svc.AffinityTimeout,
				ExternalIPs:     external,
				LoadBalancerIPs: lbIPs,
				SourceRanges:    ranges,
				InternalLocal:   svc.InternalTrafficLocal,
			}
			if svc.Type == zone.TypeNodePort || svc.Type == zone.TypeLoadBalancer {
				p.NodePort = uint16(sp.NodePort)
			}
			p.ExternalLocal = svc.ExternalTrafficLocal && p.External()
			selectEndpoints(p, svcSlices, sp, here)
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

// loadBalancerIPs picks the load balancer IPs of one family the node routes
// (not those of ipMode Proxy), sorted and distinct.
func loadBalancerIPs(all []zone.LoadBalancerIngress, family Family) []netip.Addr {
	var out []netip.Addr
	for _, ing := range all {
		if !ing.Proxy && FamilyOf(ing.IP) == family {
			out = append(out, ing.IP.Unmap())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return slices.Compact(out)
}

// sourceRanges picks the source ranges of one family, sorted and distinct.
// A Service whose ranges are all of the other family lets every source of
// this family through, as kube-proxy does.
func sourceRanges(all []netip.Prefix, family Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range all {
		if FamilyOf(p.Addr()) == family {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Addr().Less(out[j].Addr()) || out[i].Addr() == out[j].Addr() && out[i].Bits() < out[j].Bits()
	})
	return slices.Compact(out)
}

// endpointFilter walks the endpoints of one Service port in one family.
type endpointFilter struct {
	slices []*zone.EndpointSlice
	sp     zone.ServicePort
	want   zone.AddressType
}

// each calls f with every endpoint that has an address, and its address
// and port.
func (ef endpointFilter) each(f func(e *zone.Endpoint, ap netip.AddrPort)) {
	for _, s := range ef.slices {
		if s.AddressType != ef.want {
			continue
		}
		port, ok := slicePort(s, ef.sp)
		if !ok {
			continue
		}
		for i := range s.Endpoints {
			e := &s.Endpoints[i]
			if len(e.Addresses) == 0 {
				continue
			}
			// An endpoint has one address in practice; the API allows more
			// but consumers use the first.
			f(e, netip.AddrPortFrom(e.Addresses[0].Unmap(), port))
		}
	}
}

// pick returns the endpoints keep accepts, sorted and distinct.
func (ef endpointFilter) pick(keep func(e *zone.Endpoint) bool) []netip.AddrPort {
	var out []netip.AddrPort
	ef.each(func(e *zone.Endpoint, ap netip.AddrPort) {
		if keep(e) {
			out = append(out, ap)
		}
	})
	return sortUnique(out)
}

func servingTerminating(e *zone.Endpoint) bool { return !e.Ready && e.Serving && e.Terminating }

// selectEndpoints fills in p's endpoint lists and Topology, following
// kube-proxy's reading of the Service (pkg/proxy/topology.go):
//
//   - Cluster-wide, the ready endpoints are used; when every ready one has
//     topology hints and some are for this node (forNodes) or its zone
//     (forZones), only those. When no endpoint is ready anywhere, the
//     serving terminating ones are used (KEP-1669).
//   - On this node, for the Local policies, the ready local endpoints are
//     used, or when there are none the serving terminating local ones.
//
// The common case (no Local policy, no hints) takes one pass and allocates
// the list it returns only.
func selectEndpoints(p *ServicePort, svcSlices []*zone.EndpointSlice, sp zone.ServicePort, here locality) {
	ef := endpointFilter{slices: svcSlices, sp: sp, want: zone.AddressIPv4}
	if p.Key.Family == IPv6 {
		ef.want = zone.AddressIPv6
	}
	var ready, fallback []netip.AddrPort
	var localReady, localFallback bool
	allNodeHints, forNode, allZoneHints, forZone := true, false, true, false
	ef.each(func(e *zone.Endpoint, ap netip.AddrPort) {
		local := here.node != "" && e.NodeName == here.node
		switch {
		case e.Ready:
			ready = append(ready, ap)
			localReady = localReady || local
			if e.Hints == nil || len(e.Hints.ForNodes) == 0 {
				allNodeHints = false
			} else if here.node != "" && slices.Contains(e.Hints.ForNodes, here.node) {
				forNode = true
			}
			if e.Hints == nil || len(e.Hints.ForZones) == 0 {
				allZoneHints = false
			} else if here.zone != "" && slices.Contains(e.Hints.ForZones, here.zone) {
				forZone = true
			}
		case servingTerminating(e):
			fallback = append(fallback, ap)
			localFallback = localFallback || local
		}
	})
	p.AnyEndpoints = len(ready) > 0 || len(fallback) > 0
	var cluster []netip.AddrPort
	switch {
	case len(ready) > 0 && allNodeHints && forNode:
		p.Topology = zone.TrafficPreferSameNode
		cluster = ef.pick(func(e *zone.Endpoint) bool { return e.Ready && slices.Contains(e.Hints.ForNodes, here.node) })
	case len(ready) > 0 && allZoneHints && forZone:
		p.Topology = zone.TrafficPreferSameZone
		cluster = ef.pick(func(e *zone.Endpoint) bool { return e.Ready && slices.Contains(e.Hints.ForZones, here.zone) })
	case len(ready) > 0:
		cluster = sortUnique(ready)
	default:
		cluster = sortUnique(fallback)
	}
	var local []netip.AddrPort
	if p.InternalLocal || p.ExternalLocal {
		switch {
		case localReady:
			local = ef.pick(func(e *zone.Endpoint) bool { return e.Ready && e.NodeName == here.node })
		case localFallback:
			local = ef.pick(func(e *zone.Endpoint) bool { return servingTerminating(e) && e.NodeName == here.node })
		}
	}
	p.Endpoints = cluster
	if p.InternalLocal {
		p.Endpoints = local
	}
	if p.External() {
		p.ExternalEndpoints = cluster
		if p.ExternalLocal {
			p.ExternalEndpoints, p.ClusterEndpoints = local, cluster
		}
	}
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
