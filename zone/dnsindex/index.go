package dnsindex

import (
	"github.com/clusterdns/clusterdns/zone"

	"hash/maphash"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// shardCount is how many maps an index spreads its names over. A snapshot
// that changes a few Services rebuilds only the shards their names fall in and
// shares the rest with the previous index, so applying one change costs about
// the same at 100 Services as at 100,000.
const shardCount = 256

// shardSet is a set of shard numbers.
type shardSet [shardCount / 64]uint64

func (s *shardSet) add(i uint8) { s[i/64] |= 1 << (i % 64) }

func (s *shardSet) has(i uint8) bool { return s[i/64]&(1<<(i%64)) != 0 }

func (s *shardSet) union(o shardSet) {
	s[0], s[1], s[2], s[3] = s[0]|o[0], s[1]|o[1], s[2]|o[2], s[3]|o[3]
}

func (s *shardSet) intersects(o shardSet) bool {
	return s[0]&o[0] != 0 || s[1]&o[1] != 0 || s[2]&o[2] != 0 || s[3]&o[3] != 0
}

// Index is the read-only record set built from one Cluster snapshot under one
// set of options. A lookup is a hash and one map access.
type Index struct {
	shards [shardCount]map[string]*Node
	// ptrs maps endpoint addresses to the endpoint names that point back at
	// them; their PTR records are made when asked. Spread over shards by
	// address, and rebuilt only where a change falls, like the names.
	ptrs [shardCount]ptrShard
	seed maphash.Seed
	soa  map[string]*dns.SOA
	// soaWire holds each zone's SOA packed, by the zone's place in
	// options.Zones, for NODATA and NXDOMAIN answers from LookupWire.
	soaWire [][]byte
	options Options
	cluster *zone.Cluster
	// parts caches each Service's records so the next snapshot can reuse them
	// when neither the Service nor its slices changed; order lists their keys
	// sorted, so that names two Services share merge the same way every time.
	parts map[zone.Key]*part
	order []zone.Key
	// apex holds each zone's SOA, NS and dns-version; names holds the empty
	// non-terminals of namespaces and the verified pod names.
	apex  *part
	names *part
	// namespaces is the set names was built for.
	namespaces map[string]bool
}

// part is the set of names one source of records contributes: a Service
// (built from exactly svc and slices), the apexes, or the namespace names.
type part struct {
	svc    *zone.Service
	slices []*zone.EndpointSlice
	nodes  []*Node
	shards shardSet
	// eps are the endpoints whose PTRs point at HOST.ptrBase; ptrShards the
	// ptrs shards their addresses fall in.
	eps       []endpointRecord
	ptrBase   string
	ptrShards shardSet
}

// ptrTarget is the endpoint name a reverse name points at: endpoint i of
// part p, named HOST.BASE from p.eps[i].host and p.ptrBase. It refers to
// the part rather than copying the two strings, so that an entry of the
// ptrs maps (one per endpoint address, tens of thousands) holds no
// allocation of its own.
type ptrTarget struct {
	p *part
	i int32
}

func (t ptrTarget) name() string { return t.p.eps[t.i].label() + "." + t.p.ptrBase }

// ptrShard is one shard of the endpoint addresses. Nearly every address
// belongs to one endpoint name, kept in one; the rare others (an address
// behind several Services) go to more, in the order the parts were filled.
type ptrShard struct {
	one  map[netip.Addr]ptrTarget
	more map[netip.Addr][]ptrTarget
}

func (s *ptrShard) add(a netip.Addr, t ptrTarget) {
	if _, taken := s.one[a]; !taken {
		s.one[a] = t
		return
	}
	if s.more == nil {
		s.more = make(map[netip.Addr][]ptrTarget)
	}
	s.more[a] = append(s.more[a], t)
}

// targets appends the endpoint names at address a to dst.
func (s *ptrShard) targets(dst []ptrTarget, a netip.Addr) []ptrTarget {
	t, ok := s.one[a]
	if !ok {
		return dst
	}
	return append(append(dst, t), s.more[a]...)
}

// place assigns each node its shard and records the part's shards.
func (p *part) place(seed maphash.Seed) {
	for _, n := range p.nodes {
		n.prepare()
		p.shards.add(uint8(maphash.String(seed, n.Name)))
	}
	if p.ptrBase != "" {
		for _, ep := range p.eps {
			p.ptrShards.add(addrShard(seed, ep.addr))
		}
	}
}

func addrShard(seed maphash.Seed, a netip.Addr) uint8 {
	b := a.As16()
	return uint8(maphash.Bytes(seed, b[:]))
}

// Lookup returns the node for a lower-case, fully qualified name, or nil.
//
// Most names are kept ready; the endpoint names of Services with a cluster
// IP and the reverse names of endpoint addresses are made on the spot, which
// allocates.
func (ix *Index) Lookup(name string) *Node {
	n := ix.shards[uint8(maphash.String(ix.seed, name))][name]
	if strings.HasSuffix(name, ".arpa.") {
		return ix.withEndpointPTRs(n, name)
	}
	if n == nil {
		return ix.endpointName(name)
	}
	return n
}

// endpointName makes HOST.NAME's node from NAME's endpoints, or returns nil.
func (ix *Index) endpointName(name string) *Node {
	host, parent, ok := strings.Cut(name, ".")
	if !ok || host == "" {
		return nil
	}
	p := ix.shards[uint8(maphash.String(ix.seed, parent))][parent]
	if p == nil || p.hosts == nil {
		return nil
	}
	// An endpoint without a name of its own is named by its address:
	// compare addresses rather than spell every endpoint's label.
	dashed, isDashed := ParseDashedAddr(host)
	isDashed = isDashed && DashedAddr(dashed) == host
	var n *Node
	for _, ep := range *p.hosts {
		if ep.host == host || ep.host == "" && isDashed && ep.addr == dashed {
			if n == nil {
				n = &Node{Name: name}
			}
			addAddress(n, ix.options, name, ep.addr)
		}
	}
	if n != nil {
		n.group()
	}
	return n
}

// withEndpointPTRs adds to a reverse name's node the PTRs of the endpoints
// at its address.
func (ix *Index) withEndpointPTRs(n *Node, name string) *Node {
	a, ok := ParseReverse(name)
	if !ok {
		return n
	}
	shard := &ix.ptrs[addrShard(ix.seed, a)]
	targets := shard.targets(nil, a)
	if len(targets) == 0 {
		return n
	}
	out := &Node{Name: name}
	if n != nil {
		out.add(n.rrs...)
	}
	for _, t := range targets {
		out.add(&dns.PTR{Hdr: ix.options.hdr(name, dns.TypePTR), Ptr: t.name()})
	}
	out.group()
	return out
}

// SOA returns the start-of-authority record of a zone of the index.
func (ix *Index) SOA(zone string) *dns.SOA { return ix.soa[zone] }

// Cluster returns the snapshot the index was built from.
func (ix *Index) Cluster() *zone.Cluster { return ix.cluster }

// Options returns the options the index was built with.
func (ix *Index) Options() Options { return ix.options }

// Len is the number of owner names in the index.
func (ix *Index) Len() int {
	n := 0
	for _, m := range ix.shards {
		n += len(m)
	}
	return n
}

// Build builds the records for a snapshot. prev, when not nil and built
// with the same options, lends the records of Services that did not change
// and every shard none of whose names changed.
func Build(c *zone.Cluster, opts Options, prev *Index) *Index {
	if prev != nil && !sameOptions(prev.options, opts) {
		prev = nil
	}
	ix := &Index{
		soa:     make(map[string]*dns.SOA, len(opts.Zones)),
		options: opts,
		cluster: c,
		parts:   make(map[zone.Key]*part, len(c.Services)),
	}
	var dirty, dirtyPTRs shardSet
	if prev == nil {
		ix.seed = maphash.MakeSeed()
		for i := range dirty {
			dirty[i] = ^uint64(0)
			dirtyPTRs[i] = ^uint64(0)
		}
	} else {
		ix.seed = prev.seed
	}
	var forward []string
	for _, z := range opts.Zones {
		if !IsReverseZone(z) {
			forward = append(forward, z)
		}
	}

	// The apexes carry the snapshot's serial, so they change every time.
	ix.apex = ix.buildApex(c.Generation)
	ix.prepareSOAs()
	ix.apex.place(ix.seed)
	dirty.union(ix.apex.shards)
	if prev != nil {
		dirty.union(prev.apex.shards)
	}

	// Services: reuse what did not change; everything else dirties its shards.
	keysChanged := prev == nil
	ix.namespaces = make(map[string]bool)
	for key, svc := range c.Services {
		if !opts.exposes(svc.Namespace) {
			continue
		}
		ix.namespaces[svc.Namespace] = true
		svcSlices := c.SlicesFor(key)
		var old *part
		if prev != nil {
			old = prev.parts[key]
		}
		if old != nil && old.svc == svc && slices.Equal(old.slices, svcSlices) {
			ix.parts[key] = old
			continue
		}
		p := buildServicePart(svc, svcSlices, forward, opts)
		p.place(ix.seed)
		ix.parts[key] = p
		dirty.union(p.shards)
		dirtyPTRs.union(p.ptrShards)
		if old != nil {
			dirty.union(old.shards)
			dirtyPTRs.union(old.ptrShards)
		} else {
			keysChanged = true
		}
	}
	if prev != nil {
		for key, old := range prev.parts {
			if _, ok := ix.parts[key]; !ok {
				dirty.union(old.shards)
				dirtyPTRs.union(old.ptrShards)
				keysChanged = true
			}
		}
	}
	if keysChanged {
		ix.order = make([]zone.Key, 0, len(ix.parts))
		for k := range ix.parts {
			ix.order = append(ix.order, k)
		}
		slices.SortFunc(ix.order, zone.CompareKeys)
	} else {
		ix.order = prev.order
	}

	// Namespace and pod names change rarely; rebuild them only when they do.
	for ns := range c.Namespaces {
		if opts.exposes(ns) {
			ix.namespaces[ns] = true
		}
	}
	if prev != nil && maps.Equal(prev.namespaces, ix.namespaces) &&
		(opts.Pods != PodsVerified || samePods(prev.cluster.Pods, c.Pods)) {
		ix.names = prev.names
	} else {
		ix.names = buildNames(c, forward, ix.namespaces, opts)
		ix.names.place(ix.seed)
		dirty.union(ix.names.shards)
		if prev != nil {
			dirty.union(prev.names.shards)
		}
	}

	// One pass over the parts, in a stable order, fills the dirty shards.
	for s := range ix.shards {
		if dirty.has(uint8(s)) {
			ix.shards[s] = make(map[string]*Node)
		} else {
			ix.shards[s] = prev.shards[s]
		}
	}
	for s := range ix.ptrs {
		if dirtyPTRs.has(uint8(s)) {
			ix.ptrs[s] = ptrShard{one: make(map[netip.Addr]ptrTarget)}
		} else {
			ix.ptrs[s] = prev.ptrs[s]
		}
	}
	ix.fill(ix.apex, dirty)
	ix.fill(ix.names, dirty)
	for _, k := range ix.order {
		p := ix.parts[k]
		ix.fill(p, dirty)
		ix.fillPTRs(p, dirtyPTRs)
	}
	return ix
}

// fillPTRs adds a part's endpoint addresses that fall in dirty ptrs shards.
func (ix *Index) fillPTRs(p *part, dirty shardSet) {
	if p.ptrBase == "" || !p.ptrShards.intersects(dirty) {
		return
	}
	for i, ep := range p.eps {
		s := addrShard(ix.seed, ep.addr)
		if dirty.has(s) {
			ix.ptrs[s].add(ep.addr, ptrTarget{p, int32(i)})
		}
	}
}

// fill adds a part's nodes that fall in dirty shards.
func (ix *Index) fill(p *part, dirty shardSet) {
	if !p.shards.intersects(dirty) {
		return
	}
	for _, n := range p.nodes {
		// The shard is hashed again rather than kept in the node: a
		// byte more would take the node to a larger size class.
		if s := uint8(maphash.String(ix.seed, n.Name)); dirty.has(s) {
			merge(ix.shards[s], n)
		}
	}
}

// samePods reports whether two Pod maps hold the same objects.
func samePods(a, b map[zone.Key]*zone.Pod) bool {
	if len(a) != len(b) {
		return false
	}
	for k, p := range a {
		if b[k] != p {
			return false
		}
	}
	return true
}
