package zone

import (
	"hash/maphash"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// SchemaVersion is the Kubernetes DNS-Based Service Discovery schema served in
// the dns-version TXT record.
const SchemaVersion = "1.1.0"

// PodMode selects how a.b.c.d.ns.pod.ZONE names are answered.
type PodMode int

// Pod record modes, as CoreDNS's kubernetes plugin names them.
const (
	PodsDisabled PodMode = iota // no pod records
	PodsInsecure                // any well-formed name answers with the address it spells
	PodsVerified                // only addresses of Pods that exist in that namespace
)

// IndexOptions are the kubernetes block settings that shape the records.
type IndexOptions struct {
	// Zones are the authoritative zones, lower case and fully qualified. Service
	// records live under each zone that is not a reverse zone.
	Zones []string
	TTL   uint32
	Pods  PodMode
	// Namespaces limits the exposed namespaces; empty exposes all.
	Namespaces map[string]bool
	// NoEndpoints stops serving endpoint records: headless names, endpoint
	// hostnames and headless SRV answer NXDOMAIN.
	NoEndpoints bool
	// EndpointPodNames names an endpoint without a hostname after its Pod
	// rather than its dashed address.
	EndpointPodNames bool
	// IgnoreEmptyService hides Services that have no ready endpoint.
	IgnoreEmptyService bool
}

// Node holds the records of one owner name, ready to be copied into an answer.
// Owner names are the canonical lower-case name. Records are kept in one
// slice grouped by type (a Node is mostly one or two records, and there are
// tens of thousands of them); every slice is shared and read-only: callers
// copy before they reorder.
type Node struct {
	Name string
	rrs  []dns.RR
	// Extra is the additional section for SRV answers: the targets' addresses.
	Extra []dns.RR
	// hosts, on the name of a Service with a cluster IP, are its endpoints:
	// their names (HOST.<this name>) are made when asked rather than kept,
	// as they are rarely asked and would be most of the index.
	hosts *[]endpointRecord
	// shard is where the index keeps the node.
	shard uint8
}

// NewNode returns a node holding rrs, for answers made outside an index.
func NewNode(name string, rrs ...dns.RR) *Node {
	n := &Node{Name: name, rrs: rrs}
	n.group()
	return n
}

// Records returns the node's records of the given type.
func (n *Node) Records(qtype uint16) []dns.RR {
	for i, rr := range n.rrs {
		if rr.Header().Rrtype != qtype {
			continue
		}
		j := i + 1
		for j < len(n.rrs) && n.rrs[j].Header().Rrtype == qtype {
			j++
		}
		return n.rrs[i:j:j]
	}
	return nil
}

// All returns every record of the node.
func (n *Node) All() []dns.RR { return n.rrs[:len(n.rrs):len(n.rrs)] }

// CNAME returns the node's CNAME record, if it is an alias.
func (n *Node) CNAME() *dns.CNAME {
	if len(n.rrs) == 1 {
		if c, ok := n.rrs[0].(*dns.CNAME); ok {
			return c
		}
	}
	return nil
}

// add appends records while the node is being built.
func (n *Node) add(rrs ...dns.RR) { n.rrs = append(n.rrs, rrs...) }

// has reports whether the node holds a record of the type.
func (n *Node) has(t uint16) bool { return len(n.Records(t)) > 0 }

// group orders the records by type (stable, so each type keeps its order),
// which Records relies on.
func (n *Node) group() {
	slices.SortStableFunc(n.rrs, func(a, b dns.RR) int { return int(a.Header().Rrtype) - int(b.Header().Rrtype) })
}

// shardCount is how many maps an index spreads its names over. A snapshot
// that changes a few Services rebuilds only the shards their names fall in and
// shares the rest with the previous index, so applying one change costs about
// the same at 100 Services as at 100,000.
const shardCount = 256

// shardSet is a set of shard numbers.
type shardSet [shardCount / 64]uint64

func (s *shardSet) add(i uint8)      { s[i/64] |= 1 << (i % 64) }
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
	ptrs    [shardCount]map[netip.Addr][]ptrTarget
	seed    maphash.Seed
	soa     map[string]*dns.SOA
	options IndexOptions
	cluster *Cluster
	// parts caches each Service's records so the next snapshot can reuse them
	// when neither the Service nor its slices changed; order lists their keys
	// sorted, so that names two Services share merge the same way every time.
	parts map[Key]*part
	order []Key
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
	svc    *Service
	slices []*EndpointSlice
	nodes  []*Node
	shards shardSet
	// eps are the endpoints whose PTRs point at HOST.ptrBase; ptrShards the
	// ptrs shards their addresses fall in.
	eps       []endpointRecord
	ptrBase   string
	ptrShards shardSet
}

// ptrTarget is the endpoint name HOST.BASE a reverse name points at.
type ptrTarget struct{ host, base string }

// place assigns each node its shard and records the part's shards.
func (p *part) place(seed maphash.Seed) {
	for _, n := range p.nodes {
		n.shard = uint8(maphash.String(seed, n.Name))
		p.shards.add(n.shard)
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
	if !ok {
		return nil
	}
	p := ix.shards[uint8(maphash.String(ix.seed, parent))][parent]
	if p == nil || p.hosts == nil {
		return nil
	}
	var n *Node
	for _, ep := range *p.hosts {
		if ep.host == host {
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
	targets := ix.ptrs[addrShard(ix.seed, a)][a]
	if len(targets) == 0 {
		return n
	}
	out := &Node{Name: name}
	if n != nil {
		out.add(n.rrs...)
	}
	for _, t := range targets {
		out.add(&dns.PTR{Hdr: ix.options.hdr(name, dns.TypePTR), Ptr: t.host + "." + t.base})
	}
	out.group()
	return out
}

// ParseReverse reads the address a reverse name (d.c.b.a.in-addr.arpa. or
// 32 nibbles then ip6.arpa.) stands for.
func ParseReverse(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		var b [4]byte
		for i := 3; i >= 0; i-- {
			label, tail, _ := strings.Cut(rest, ".")
			v, ok := decimalOctet(label)
			if !ok || (i == 0) != (tail == "") {
				return netip.Addr{}, false
			}
			b[i], rest = v, tail
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		if len(rest) != 63 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i := 0; i < 32; i++ {
			c := rest[2*i]
			if i < 31 && rest[2*i+1] != '.' {
				return netip.Addr{}, false
			}
			var v byte
			switch {
			case '0' <= c && c <= '9':
				v = c - '0'
			case 'a' <= c && c <= 'f':
				v = c - 'a' + 10
			default:
				return netip.Addr{}, false
			}
			// The first nibble is the last address nibble.
			j := 31 - i
			if j%2 == 0 {
				b[j/2] |= v << 4
			} else {
				b[j/2] |= v
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// decimalOctet reads 0..255 written without leading zeros.
func decimalOctet(s string) (byte, bool) {
	if s == "" || len(s) > 3 || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	v := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		v = v*10 + int(s[i]-'0')
	}
	if v > 255 {
		return 0, false
	}
	return byte(v), true
}

// SOA returns the start-of-authority record of a zone of the index.
func (ix *Index) SOA(zone string) *dns.SOA { return ix.soa[zone] }

// Cluster returns the snapshot the index was built from.
func (ix *Index) Cluster() *Cluster { return ix.cluster }

// Options returns the options the index was built with.
func (ix *Index) Options() IndexOptions { return ix.options }

// Len is the number of owner names in the index.
func (ix *Index) Len() int {
	n := 0
	for _, m := range ix.shards {
		n += len(m)
	}
	return n
}

// IsReverseZone reports whether a zone is under in-addr.arpa or ip6.arpa.
func IsReverseZone(zone string) bool {
	return dns.IsSubDomain("in-addr.arpa.", zone) || dns.IsSubDomain("ip6.arpa.", zone)
}

// BuildIndex builds the records for a snapshot. prev, when not nil and built
// with the same options, lends the records of Services that did not change
// and every shard none of whose names changed.
func BuildIndex(c *Cluster, opts IndexOptions, prev *Index) *Index {
	if prev != nil && !sameOptions(prev.options, opts) {
		prev = nil
	}
	ix := &Index{
		soa:     make(map[string]*dns.SOA, len(opts.Zones)),
		options: opts,
		cluster: c,
		parts:   make(map[Key]*part, len(c.Services)),
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
		ix.order = make([]Key, 0, len(ix.parts))
		for k := range ix.parts {
			ix.order = append(ix.order, k)
		}
		slices.SortFunc(ix.order, compareKeys)
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
			ix.ptrs[s] = make(map[netip.Addr][]ptrTarget)
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
	for _, ep := range p.eps {
		s := addrShard(ix.seed, ep.addr)
		if dirty.has(s) {
			m := ix.ptrs[s]
			m[ep.addr] = append(m[ep.addr], ptrTarget{ep.host, p.ptrBase})
		}
	}
}

// fill adds a part's nodes that fall in dirty shards.
func (ix *Index) fill(p *part, dirty shardSet) {
	if !p.shards.intersects(dirty) {
		return
	}
	for _, n := range p.nodes {
		if dirty.has(n.shard) {
			merge(ix.shards[n.shard], n)
		}
	}
}

// samePods reports whether two Pod maps hold the same objects.
func samePods(a, b map[Key]*Pod) bool {
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

func sameOptions(a, b IndexOptions) bool {
	if a.TTL != b.TTL || a.Pods != b.Pods || a.NoEndpoints != b.NoEndpoints ||
		a.EndpointPodNames != b.EndpointPodNames || a.IgnoreEmptyService != b.IgnoreEmptyService ||
		!slices.Equal(a.Zones, b.Zones) || len(a.Namespaces) != len(b.Namespaces) {
		return false
	}
	for k := range a.Namespaces {
		if !b.Namespaces[k] {
			return false
		}
	}
	return true
}

func (o IndexOptions) exposes(ns string) bool { return len(o.Namespaces) == 0 || o.Namespaces[ns] }

func (o IndexOptions) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: o.TTL}
}

// buildApex makes each zone's SOA and NS, and the dns-version record.
func (ix *Index) buildApex(serial uint64) *part {
	o := ix.options
	p := &part{}
	for _, zone := range o.Zones {
		soa := &dns.SOA{
			Hdr:     o.hdr(zone, dns.TypeSOA),
			Ns:      "ns.dns." + zone,
			Mbox:    "hostmaster." + zone,
			Serial:  uint32(serial),
			Refresh: 7200,
			Retry:   1800,
			Expire:  86400,
			Minttl:  o.TTL,
		}
		ix.soa[zone] = soa
		p.nodes = append(p.nodes, NewNode(zone, soa, &dns.NS{Hdr: o.hdr(zone, dns.TypeNS), Ns: "ns.dns." + zone}))
		if !IsReverseZone(zone) {
			name := "dns-version." + zone
			p.nodes = append(p.nodes,
				NewNode(name, &dns.TXT{Hdr: o.hdr(name, dns.TypeTXT), Txt: []string{SchemaVersion}}),
				&Node{Name: "dns." + zone})
		}
	}
	return p
}

// buildNames makes the empty non-terminals svc.ZONE, pod.ZONE, NS.svc.ZONE and
// NS.pod.ZONE, so that they answer NODATA, and the verified pod names.
func buildNames(c *Cluster, forward []string, namespaces map[string]bool, o IndexOptions) *part {
	p := &part{}
	seen := make(map[string]*Node)
	ensure := func(name string) *Node {
		if n := seen[name]; n != nil {
			return n
		}
		n := &Node{Name: name}
		seen[name] = n
		p.nodes = append(p.nodes, n)
		return n
	}
	for _, z := range forward {
		ensure("svc." + z)
		ensure("pod." + z)
		for ns := range namespaces {
			ensure(ns + ".svc." + z)
			ensure(ns + ".pod." + z)
		}
		if o.Pods != PodsVerified {
			continue
		}
		for _, pod := range c.Pods {
			if !o.exposes(pod.Namespace) {
				continue
			}
			for _, ip := range pod.IPs {
				name := DashedAddr(ip) + "." + strings.ToLower(pod.Namespace) + ".pod." + z
				if n := ensure(name); !n.has(dns.TypeA) && !n.has(dns.TypeAAAA) {
					addAddress(n, o, name, ip)
				}
			}
		}
	}
	for _, n := range p.nodes {
		n.group()
	}
	return p
}

// merge adds a node to a shard. A name that two Services share (an endpoint
// address behind two Services has two PTRs) gets a fresh node holding both,
// so nodes of cached parts are never changed.
func merge(m map[string]*Node, n *Node) {
	old := m[n.Name]
	if old == nil {
		m[n.Name] = n
		return
	}
	c := &Node{Name: n.Name, shard: n.shard, hosts: old.hosts}
	if c.hosts == nil {
		c.hosts = n.hosts
	}
	for _, src := range []*Node{old, n} {
		c.add(src.rrs...)
		c.Extra = append(c.Extra, src.Extra...)
	}
	c.group()
	m[n.Name] = c
}

// endpointRecord is one ready endpoint address with its DNS host label.
type endpointRecord struct {
	host string
	addr netip.Addr
}

// buildServicePart renders one Service's records under every forward zone.
func buildServicePart(svc *Service, svcSlices []*EndpointSlice, zones []string, o IndexOptions) *part {
	part := &part{svc: svc, slices: svcSlices}
	eps := readyEndpoints(svc, svcSlices, o)
	if o.IgnoreEmptyService && svc.Type != TypeExternalName && len(eps) == 0 {
		return part
	}
	nodes := make(map[string]*Node)
	get := func(name string) *Node {
		if n := nodes[name]; n != nil {
			return n
		}
		n := &Node{Name: name}
		nodes[name] = n
		return n
	}
	for zi, zone := range zones {
		base := strings.ToLower(svc.Name + "." + svc.Namespace + ".svc." + zone)
		n := get(base)
		switch {
		case svc.Type == TypeExternalName:
			target := dns.Fqdn(strings.ToLower(svc.ExternalName))
			n.add(&dns.CNAME{Hdr: o.hdr(base, dns.TypeCNAME), Target: target})
			continue
		case svc.Headless:
			if o.NoEndpoints || len(eps) == 0 {
				delete(nodes, base)
				continue
			}
			for _, ep := range eps {
				addAddress(n, o, base, ep.addr)
			}
		default:
			for _, ip := range svc.ClusterIPs {
				addAddress(n, o, base, ip)
				if zi == 0 {
					addPTR(get, o, ip, base)
				}
			}
		}
		// Endpoint names, and reverse records pointing at them. A headless
		// Service's are kept (StatefulSet members are asked for by name);
		// the rest are made when asked, from the endpoints list.
		if !o.NoEndpoints && len(eps) > 0 {
			if zi == 0 {
				part.eps, part.ptrBase = eps, base
			}
			if svc.Headless {
				for _, ep := range eps {
					host := ep.host + "." + base
					addAddress(get(host), o, host, ep.addr)
				}
			} else {
				n.hosts = &part.eps
			}
		}
		addSRV(get, svc, svcSlices, eps, base, o)
	}
	for _, n := range nodes {
		n.group()
		part.nodes = append(part.nodes, n)
	}
	slices.SortFunc(part.nodes, func(a, b *Node) int { return strings.Compare(a.Name, b.Name) })
	return part
}

func addAddress(n *Node, o IndexOptions, name string, ip netip.Addr) {
	if ip.Is4() {
		n.add(&dns.A{Hdr: o.hdr(name, dns.TypeA), A: ip.AsSlice()})
	} else {
		n.add(&dns.AAAA{Hdr: o.hdr(name, dns.TypeAAAA), AAAA: ip.AsSlice()})
	}
}

func addPTR(get func(string) *Node, o IndexOptions, ip netip.Addr, target string) {
	rev, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return
	}
	n := get(rev)
	n.add(&dns.PTR{Hdr: o.hdr(rev, dns.TypePTR), Ptr: target})
}

// addSRV adds _port._proto records for named ports and the CoreDNS-style SRV
// set at the service name itself, with the targets' addresses as extras.
func addSRV(get func(string) *Node, svc *Service, slices []*EndpointSlice, eps []endpointRecord, base string, o IndexOptions) {
	if svc.Type == TypeExternalName || svc.Headless && (o.NoEndpoints || len(eps) == 0) {
		return
	}
	baseNode := get(base)
	for _, sp := range svc.Ports {
		proto := "_" + strings.ToLower(string(sp.Protocol))
		var srv, extra []dns.RR
		if svc.Headless {
			port := endpointPort(slices, sp)
			if port == 0 {
				continue
			}
			for _, ep := range eps {
				target := ep.host + "." + base
				srv = append(srv, &dns.SRV{Hdr: o.hdr("", dns.TypeSRV), Priority: 0, Weight: weight(len(eps)), Port: uint16(port), Target: target})
				extra = append(extra, addressRR(o, target, ep.addr))
			}
		} else {
			srv = append(srv, &dns.SRV{Hdr: o.hdr("", dns.TypeSRV), Priority: 0, Weight: 100, Port: uint16(sp.Port), Target: base})
			// The targets' addresses are the Service's own records.
			extra = append(extra, baseNode.Records(dns.TypeA)...)
			extra = append(extra, baseNode.Records(dns.TypeAAAA)...)
		}
		baseNode.add(withOwner(srv, base)...)
		baseNode.Extra = appendUnique(baseNode.Extra, extra)
		if sp.Name == "" {
			continue
		}
		protoName := proto + "." + base
		get(protoName)
		name := "_" + strings.ToLower(sp.Name) + "." + protoName
		n := get(name)
		n.add(withOwner(srv, name)...)
		n.Extra = appendUnique(n.Extra, extra)
	}
}

func weight(n int) uint16 {
	if n <= 1 {
		return 100
	}
	w := 100 / n
	if w == 0 {
		w = 1
	}
	return uint16(w)
}

// endpointPort finds the port the slices publish for a Service port, by name.
func endpointPort(slices []*EndpointSlice, sp ServicePort) int32 {
	for _, s := range slices {
		for _, p := range s.Ports {
			if p.Name == sp.Name && p.Protocol == sp.Protocol {
				return p.Port
			}
		}
	}
	if sp.TargetPortName == "" {
		return sp.TargetPort
	}
	return 0
}

func withOwner(rrs []dns.RR, name string) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		c := dns.Copy(rr)
		c.Header().Name = name
		out[i] = c
	}
	return out
}

func addressRR(o IndexOptions, name string, ip netip.Addr) dns.RR {
	if ip.Is4() {
		return &dns.A{Hdr: o.hdr(name, dns.TypeA), A: ip.AsSlice()}
	}
	return &dns.AAAA{Hdr: o.hdr(name, dns.TypeAAAA), AAAA: ip.AsSlice()}
}

func appendUnique(dst, src []dns.RR) []dns.RR {
	for _, rr := range src {
		dup := false
		for _, have := range dst {
			if dns.IsDuplicate(have, rr) {
				dup = true
				break
			}
		}
		if !dup {
			dst = append(dst, rr)
		}
	}
	return dst
}

// readyEndpoints lists a Service's ready endpoint addresses across its slices,
// one per address, sorted for stable answers.
func readyEndpoints(svc *Service, slices []*EndpointSlice, o IndexOptions) []endpointRecord {
	n := 0
	for _, s := range slices {
		n += len(s.Endpoints)
	}
	seen := make(map[netip.Addr]bool, n)
	out := make([]endpointRecord, 0, n)
	for _, s := range slices {
		if s.AddressType == AddressFQDN {
			continue
		}
		for _, e := range s.Endpoints {
			if !e.Ready && !svc.PublishNotReadyAddresses {
				continue
			}
			for _, a := range e.Addresses {
				if seen[a] {
					continue
				}
				seen[a] = true
				out = append(out, endpointRecord{host: endpointHost(e, a, o), addr: a})
			}
		}
	}
	sortEndpoints(out)
	return out
}

func sortEndpoints(eps []endpointRecord) {
	slices.SortFunc(eps, func(a, b endpointRecord) int { return a.addr.Compare(b.addr) })
}

// endpointHost is the DNS label of an endpoint: its hostname, else (with
// endpoint_pod_names) its Pod's name, else its address with dashes.
func endpointHost(e Endpoint, a netip.Addr, o IndexOptions) string {
	switch {
	case e.Hostname != "":
		return strings.ToLower(e.Hostname)
	case o.EndpointPodNames && e.PodName != "":
		return strings.ToLower(e.PodName)
	}
	return DashedAddr(a)
}

// DashedAddr spells an address as one DNS label: 10-1-2-3, or fd00--1.
func DashedAddr(a netip.Addr) string {
	if a.Is4() {
		return strings.ReplaceAll(a.String(), ".", "-")
	}
	return strings.ReplaceAll(a.String(), ":", "-")
}

// ParseDashedAddr is the inverse of DashedAddr.
func ParseDashedAddr(label string) (netip.Addr, bool) {
	if strings.Count(label, "-") == 3 {
		if a, err := netip.ParseAddr(strings.ReplaceAll(label, "-", ".")); err == nil && a.Is4() {
			return a, true
		}
	}
	if a, err := netip.ParseAddr(strings.ReplaceAll(label, "-", ":")); err == nil && a.Is6() {
		return a, true
	}
	return netip.Addr{}, false
}
