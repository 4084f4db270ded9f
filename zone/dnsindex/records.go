package dnsindex

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/clusterdns/clusterdns/zone"
	"github.com/miekg/dns"
)

// buildApex makes each zone's SOA and NS, and the dns-version record.
func (ix *Index) buildApex(serial uint64) *part {
	o := ix.options
	p := &part{}
	for _, apex := range o.Zones {
		soa := &dns.SOA{
			Hdr:     o.hdr(apex, dns.TypeSOA),
			Ns:      "ns.dns." + apex,
			Mbox:    "hostmaster." + apex,
			Serial:  uint32(serial),
			Refresh: 7200,
			Retry:   1800,
			Expire:  86400,
			Minttl:  o.TTL,
		}
		ix.soa[apex] = soa
		p.nodes = append(p.nodes, NewNode(apex, soa, &dns.NS{Hdr: o.hdr(apex, dns.TypeNS), Ns: "ns.dns." + apex}))
		if !IsReverseZone(apex) {
			name := "dns-version." + apex
			p.nodes = append(p.nodes,
				NewNode(name, &dns.TXT{Hdr: o.hdr(name, dns.TypeTXT), Txt: []string{SchemaVersion}}),
				&Node{Name: "dns." + apex})
		}
	}
	return p
}

// buildNames makes the empty non-terminals svc.ZONE, pod.ZONE, NS.svc.ZONE and
// NS.pod.ZONE, so that they answer NODATA, and the verified pod names.
func buildNames(c *zone.Cluster, forward []string, namespaces map[string]bool, o Options) *part {
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

// endpointRecord is one ready endpoint address with its DNS host label.
// host is empty when the label is the address with dashes, as it is for
// nearly every endpoint: the label is then spelled when a name is made
// (label), not kept for each of tens of thousands of endpoints.
type endpointRecord struct {
	host string
	addr netip.Addr
}

// label is the endpoint's DNS host label.
func (e endpointRecord) label() string {
	if e.host != "" {
		return e.host
	}
	return DashedAddr(e.addr)
}

// buildServicePart renders one Service's records under every forward zone.
func buildServicePart(svc *zone.Service, svcSlices []*zone.EndpointSlice, zones []string, o Options) *part {
	part := &part{svc: svc, slices: svcSlices}
	eps := readyEndpoints(svc, svcSlices, o)
	if o.IgnoreEmptyService && svc.Type != zone.TypeExternalName && len(eps) == 0 {
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
	for zi, apex := range zones {
		base := strings.ToLower(svc.Name + "." + svc.Namespace + ".svc." + apex)
		n := get(base)
		switch {
		case svc.Type == zone.TypeExternalName:
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
					host := ep.label() + "." + base
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

func addAddress(n *Node, o Options, name string, ip netip.Addr) {
	if ip.Is4() {
		n.add(&dns.A{Hdr: o.hdr(name, dns.TypeA), A: ip.AsSlice()})
	} else {
		n.add(&dns.AAAA{Hdr: o.hdr(name, dns.TypeAAAA), AAAA: ip.AsSlice()})
	}
}

func addPTR(get func(string) *Node, o Options, ip netip.Addr, target string) {
	rev, err := dns.ReverseAddr(ip.String())
	if err != nil {
		return
	}
	n := get(rev)
	n.add(&dns.PTR{Hdr: o.hdr(rev, dns.TypePTR), Ptr: target})
}

// addSRV adds _port._proto records for named ports and the CoreDNS-style SRV
// set at the service name itself, with the targets' addresses as extras.
func addSRV(get func(string) *Node, svc *zone.Service, slices []*zone.EndpointSlice, eps []endpointRecord, base string, o Options) {
	if svc.Type == zone.TypeExternalName || svc.Headless && (o.NoEndpoints || len(eps) == 0) {
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
				target := ep.label() + "." + base
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
func endpointPort(slices []*zone.EndpointSlice, sp zone.ServicePort) int32 {
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

func addressRR(o Options, name string, ip netip.Addr) dns.RR {
	if ip.Is4() {
		return &dns.A{Hdr: o.hdr(name, dns.TypeA), A: ip.AsSlice()}
	}
	return &dns.AAAA{Hdr: o.hdr(name, dns.TypeAAAA), AAAA: ip.AsSlice()}
}

// readyEndpoints lists a Service's ready endpoint addresses across its slices,
// one per address, sorted for stable answers.
func readyEndpoints(svc *zone.Service, slices []*zone.EndpointSlice, o Options) []endpointRecord {
	n := 0
	for _, s := range slices {
		n += len(s.Endpoints)
	}
	seen := make(map[netip.Addr]bool, n)
	out := make([]endpointRecord, 0, n)
	for _, s := range slices {
		if s.AddressType == zone.AddressFQDN {
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
				out = append(out, endpointRecord{host: endpointHost(e, o), addr: a})
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
// endpoint_pod_names) its Pod's name, else empty for its address with
// dashes (see endpointRecord).
func endpointHost(e zone.Endpoint, o Options) string {
	switch {
	case e.Hostname != "":
		return strings.ToLower(e.Hostname)
	case o.EndpointPodNames && e.PodName != "":
		return strings.ToLower(e.PodName)
	}
	return ""
}
