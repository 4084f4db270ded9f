package zone

import (
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
// Owner names are the canonical lower-case name. Every slice is shared and
// read-only: callers copy before they reorder.
type Node struct {
	Name  string
	A     []dns.RR
	AAAA  []dns.RR
	SRV   []dns.RR
	PTR   []dns.RR
	TXT   []dns.RR
	SOA   []dns.RR
	NS    []dns.RR
	CNAME []dns.RR
	// Extra is the additional section for SRV answers: the targets' addresses.
	Extra []dns.RR
}

// Records returns the node's records of the given type.
func (n *Node) Records(qtype uint16) []dns.RR {
	switch qtype {
	case dns.TypeA:
		return n.A
	case dns.TypeAAAA:
		return n.AAAA
	case dns.TypeSRV:
		return n.SRV
	case dns.TypePTR:
		return n.PTR
	case dns.TypeTXT:
		return n.TXT
	case dns.TypeSOA:
		return n.SOA
	case dns.TypeNS:
		return n.NS
	case dns.TypeCNAME:
		return n.CNAME
	}
	return nil
}

// Index is the read-only record set built from one Cluster snapshot under one
// set of options. A lookup is one map access.
type Index struct {
	nodes   map[string]*Node
	soa     map[string]*dns.SOA
	options IndexOptions
	cluster *Cluster
	// parts caches each Service's records so the next snapshot can reuse them
	// when neither the Service nor its slices changed.
	parts map[Key]*servicePart
}

// servicePart is everything one Service contributes, keyed to the exact
// objects it was built from.
type servicePart struct {
	svc    *Service
	slices []*EndpointSlice
	nodes  []*Node
}

// Lookup returns the node for a lower-case, fully qualified name, or nil.
func (ix *Index) Lookup(name string) *Node { return ix.nodes[name] }

// SOA returns the start-of-authority record of a zone of the index.
func (ix *Index) SOA(zone string) *dns.SOA { return ix.soa[zone] }

// Cluster returns the snapshot the index was built from.
func (ix *Index) Cluster() *Cluster { return ix.cluster }

// Options returns the options the index was built with.
func (ix *Index) Options() IndexOptions { return ix.options }

// Len is the number of owner names in the index.
func (ix *Index) Len() int { return len(ix.nodes) }

// IsReverseZone reports whether a zone is under in-addr.arpa or ip6.arpa.
func IsReverseZone(zone string) bool {
	return dns.IsSubDomain("in-addr.arpa.", zone) || dns.IsSubDomain("ip6.arpa.", zone) ||
		zone == "in-addr.arpa." || zone == "ip6.arpa."
}

// BuildIndex builds the records for a snapshot. prev, when not nil and built
// with the same options, lends the records of Services that did not change.
func BuildIndex(c *Cluster, opts IndexOptions, prev *Index) *Index {
	ix := &Index{
		nodes:   make(map[string]*Node, 4*len(c.Services)+16),
		soa:     make(map[string]*dns.SOA, len(opts.Zones)),
		options: opts,
		cluster: c,
		parts:   make(map[Key]*servicePart, len(c.Services)),
	}
	if prev != nil && !sameOptions(prev.options, opts) {
		prev = nil
	}
	var forward []string
	for _, z := range opts.Zones {
		ix.addApex(z, c.Generation)
		if !IsReverseZone(z) {
			forward = append(forward, z)
		}
	}
	namespaces := make(map[string]bool)
	for _, svc := range c.SortedServices() {
		if !opts.exposes(svc.Namespace) {
			continue
		}
		namespaces[svc.Namespace] = true
		slices := c.SlicesFor(svc.Key)
		var part *servicePart
		if prev != nil {
			if p := prev.parts[svc.Key]; p != nil && p.svc == svc && slicesEqual(p.slices, slices) {
				part = p
			}
		}
		if part == nil {
			part = buildServicePart(svc, slices, forward, opts)
		}
		ix.parts[svc.Key] = part
		for _, n := range part.nodes {
			ix.merge(n)
		}
	}
	for ns := range c.Namespaces {
		if opts.exposes(ns) {
			namespaces[ns] = true
		}
	}
	for _, z := range forward {
		ix.ensure("svc." + z)
		ix.ensure("pod." + z)
		for ns := range namespaces {
			ix.ensure(ns + ".svc." + z)
			ix.ensure(ns + ".pod." + z)
		}
		if opts.Pods == PodsVerified {
			ix.addPods(c, z, opts)
		}
	}
	return ix
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

func slicesEqual(a, b []*EndpointSlice) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (o IndexOptions) exposes(ns string) bool { return len(o.Namespaces) == 0 || o.Namespaces[ns] }

func (o IndexOptions) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: o.TTL}
}

// addApex adds the zone's SOA and NS, and the dns-version record.
func (ix *Index) addApex(zone string, serial uint64) {
	o := ix.options
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
	apex := ix.ensure(zone)
	apex.SOA = []dns.RR{soa}
	apex.NS = []dns.RR{&dns.NS{Hdr: o.hdr(zone, dns.TypeNS), Ns: "ns.dns." + zone}}
	if !IsReverseZone(zone) {
		name := "dns-version." + zone
		ix.ensure(name).TXT = []dns.RR{&dns.TXT{Hdr: o.hdr(name, dns.TypeTXT), Txt: []string{SchemaVersion}}}
		ix.ensure("dns." + zone)
	}
}

// ensure returns the node for name, creating an empty one if needed: an empty
// node makes the name exist, so its queries answer NODATA, not NXDOMAIN.
func (ix *Index) ensure(name string) *Node {
	if n := ix.nodes[name]; n != nil {
		return n
	}
	n := &Node{Name: name}
	ix.nodes[name] = n
	return n
}

// merge adds a prebuilt node. A name that two Services share (an endpoint
// address behind two Services has two PTRs) gets a fresh node holding both,
// so cached parts are never changed.
func (ix *Index) merge(n *Node) {
	old := ix.nodes[n.Name]
	if old == nil {
		ix.nodes[n.Name] = n
		return
	}
	m := &Node{Name: n.Name}
	for _, src := range []*Node{old, n} {
		m.A = append(m.A, src.A...)
		m.AAAA = append(m.AAAA, src.AAAA...)
		m.SRV = append(m.SRV, src.SRV...)
		m.PTR = append(m.PTR, src.PTR...)
		m.TXT = append(m.TXT, src.TXT...)
		m.SOA = append(m.SOA, src.SOA...)
		m.NS = append(m.NS, src.NS...)
		m.CNAME = append(m.CNAME, src.CNAME...)
		m.Extra = append(m.Extra, src.Extra...)
	}
	ix.nodes[n.Name] = m
}

// endpointRecord is one ready endpoint address with its DNS host label.
type endpointRecord struct {
	host string
	addr netip.Addr
}

// buildServicePart renders one Service's records under every forward zone.
func buildServicePart(svc *Service, slices []*EndpointSlice, zones []string, o IndexOptions) *servicePart {
	part := &servicePart{svc: svc, slices: slices}
	eps := readyEndpoints(svc, slices, o)
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
			n.CNAME = []dns.RR{&dns.CNAME{Hdr: o.hdr(base, dns.TypeCNAME), Target: target}}
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
		// Endpoint names, and reverse records pointing at them.
		if !o.NoEndpoints {
			for _, ep := range eps {
				host := ep.host + "." + base
				addAddress(get(host), o, host, ep.addr)
				if zi == 0 {
					addPTR(get, o, ep.addr, host)
				}
			}
		}
		addSRV(get, svc, slices, eps, base, o)
	}
	for _, n := range nodes {
		part.nodes = append(part.nodes, n)
	}
	slicesSortNodes(part.nodes)
	return part
}

func slicesSortNodes(nodes []*Node) {
	slices.SortFunc(nodes, func(a, b *Node) int { return strings.Compare(a.Name, b.Name) })
}

func addAddress(n *Node, o IndexOptions, name string, ip netip.Addr) {
	if ip.Is4() {
		n.A = append(n.A, &dns.A{Hdr: o.hdr(name, dns.TypeA), A: ip.AsSlice()})
	} else {
		n.AAAA = append(n.AAAA, &dns.AAAA{Hdr: o.hdr(name, dns.TypeAAAA), AAAA: ip.AsSlice()})
	}
}

func addPTR(get func(string) *Node, o IndexOptions, ip netip.Addr, target string) {
	rev, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return
	}
	n := get(rev)
	n.PTR = append(n.PTR, &dns.PTR{Hdr: o.hdr(rev, dns.TypePTR), Ptr: target})
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
			for _, ip := range svc.ClusterIPs {
				extra = append(extra, addressRR(o, base, ip))
			}
		}
		baseNode.SRV = append(baseNode.SRV, withOwner(srv, base)...)
		baseNode.Extra = appendUnique(baseNode.Extra, extra)
		if sp.Name == "" {
			continue
		}
		protoName := proto + "." + base
		get(protoName)
		name := "_" + strings.ToLower(sp.Name) + "." + protoName
		n := get(name)
		n.SRV = append(n.SRV, withOwner(srv, name)...)
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
	seen := make(map[netip.Addr]bool)
	var out []endpointRecord
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

// addPods adds verified pod records: one name per Pod address.
func (ix *Index) addPods(c *Cluster, zone string, o IndexOptions) {
	for _, p := range c.Pods {
		if !o.exposes(p.Namespace) {
			continue
		}
		for _, ip := range p.IPs {
			name := DashedAddr(ip) + "." + strings.ToLower(p.Namespace) + ".pod." + zone
			n := ix.ensure(name)
			if len(n.A)+len(n.AAAA) == 0 {
				addAddress(n, o, name, ip)
			}
		}
	}
}
