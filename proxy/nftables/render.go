package nftables

import (
	"crypto/sha256"
	"encoding/base32"
	"net/netip"
	"strconv"
	"strings"

	"github.com/clusterdns/clusterdns/proxy"
)

// TableName is the name of the backend's table in both families.
const TableName = "clusterdns"

// Names of the objects that do not depend on the Services.
const (
	chainServices    = "services"
	chainNoEndpoints = "no-endpoints"
	chainMasquerade  = "masquerading"
	chainMarkMasq    = "mark-for-masquerade"
	chainReject      = "reject-chain"

	mapServiceIPs         = "service-ips"
	mapServiceNodePorts   = "service-nodeports"
	mapNoEndpointServices = "no-endpoint-services"
	mapNoEndpointNodePort = "no-endpoint-nodeports"
	setHairpin            = "hairpin"

	// maxNameLen is the kernel's limit on chain and set names (NFT_NAME_MAXLEN
	// less the terminating zero).
	maxNameLen = 255
)

// baseChain is a chain attached to a netfilter hook.
type baseChain struct {
	name, spec, rule string
}

// baseChains are the hooks: nat for translation, filter (new connections
// only) for rejecting service ports without endpoints.
var baseChains = []baseChain{
	{"nat-prerouting", "type nat hook prerouting priority dstnat;", "jump " + chainServices},
	{"nat-output", "type nat hook output priority -100;", "jump " + chainServices},
	{"nat-postrouting", "type nat hook postrouting priority srcnat;", "jump " + chainMasquerade},
	{"filter-input", "type filter hook input priority filter;", "ct state new jump " + chainNoEndpoints},
	{"filter-forward", "type filter hook forward priority filter;", "ct state new jump " + chainNoEndpoints},
	{"filter-output", "type filter hook output priority filter;", "ct state new jump " + chainNoEndpoints},
}

// family holds what differs between the ip and ip6 tables.
type family struct {
	proxy.Family
	table    string // "ip clusterdns"
	ip       string // the address match keyword: ip or ip6
	addrType string // ipv4_addr or ipv6_addr
	loopback string // node ports are not served on loopback
}

func familyOf(f proxy.Family) family {
	if f == proxy.IPv6 {
		return family{f, "ip6 " + TableName, "ip6", "ipv6_addr", "::1"}
	}
	return family{f, "ip " + TableName, "ip", "ipv4_addr", "127.0.0.0/8"}
}

// renderer renders the objects of one family from the model and the options.
type renderer struct {
	family
	clusterCIDR   string // first cluster CIDR of the family, "" for none
	masqueradeAll bool
	nodePorts     bool   // whether this family serves node ports at all
	nodePortMatch string // the destination match in front of the node port lookup
	mark          string // the masquerade mark bit, "0x2000"
}

func newRenderer(f proxy.Family, cfg *Config) *renderer {
	r := &renderer{family: familyOf(f), masqueradeAll: cfg.MasqueradeAll, nodePorts: true}
	for _, p := range cfg.ClusterCIDRs {
		if proxy.FamilyOf(p.Addr()) == f {
			r.clusterCIDR = p.Masked().String()
			break
		}
	}
	var cidrs []string
	for _, p := range cfg.NodePortAddresses {
		if proxy.FamilyOf(p.Addr()) == f {
			cidrs = append(cidrs, p.Masked().String())
		}
	}
	switch {
	case len(cfg.NodePortAddresses) > 0 && len(cidrs) == 0:
		r.nodePorts = false // limited to addresses, none of this family
	case len(cidrs) > 0:
		r.nodePortMatch = r.ip + " daddr { " + strings.Join(cidrs, ", ") + " } fib daddr type local"
	default:
		r.nodePortMatch = "fib daddr type local " + r.ip + " daddr != " + r.loopback
	}
	r.mark = "0x" + strconv.FormatUint(uint64(cfg.Mark()), 16)
	return r
}

// chain is one chain a service port owns, with its rules.
type chain struct {
	name string
	// body is the rules, one per line, each without the "add rule TABLE
	// CHAIN" in front.
	body  string
	rules int
}

// element is one entry of a verdict map.
type element struct {
	set, key, value string
}

// portObjects is everything one service port owns in a table.
type portObjects struct {
	sp *proxy.ServicePort
	// chains are in the order they must be written: endpoint chains before
	// the service chain that jumps to them, the external chain last.
	chains []chain
	// sets are the ClientIP affinity sets: name and declaration.
	sets     []affinitySet
	elements []element
	// hairpin lists the endpoint addresses (each once) whose traffic to
	// themselves through the Service must be masqueraded.
	hairpin []netip.Addr
}

type affinitySet struct {
	name, spec string
}

func (o *portObjects) rules() int {
	n := len(o.elements)
	for _, c := range o.chains {
		n += c.rules
	}
	return n
}

// objectName is kind, a short hash of what the object serves (so that names
// stay unique even when the readable part is cut) and the readable part.
func objectName(kind, readable string, hashed ...string) string {
	h := sha256.New()
	for _, s := range hashed {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	var enc [8]byte
	base32.StdEncoding.Encode(enc[:], h.Sum(sum[:0])[:5])
	name := kind + "-" + string(enc[:]) + "-" + readable
	if len(name) > maxNameLen {
		name = name[:maxNameLen]
	}
	return name
}

// readable makes s safe as part of an nft name: letters, digits and "/-_."
// pass, anything else (the colons of IPv6 addresses) becomes ".".
func readable(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '/', r == '-', r == '_', r == '.':
			return r
		}
		return '.'
	}, s)
}

// portLabel is "namespace/name/port/protocol", the port by name or, when
// unnamed, by number.
func portLabel(p *proxy.ServicePort) string {
	port := p.Key.Port
	if port == "" {
		port = strconv.Itoa(int(p.Port))
	}
	return p.Key.Service.Namespace + "/" + p.Key.Service.Name + "/" + port + "/" + strings.ToLower(string(p.Protocol))
}

// endpointLabel is "address/port".
func endpointLabel(ep netip.AddrPort) string {
	return ep.Addr().String() + "/" + strconv.Itoa(int(ep.Port()))
}

// render computes the objects of one service port.
func (r *renderer) render(p *proxy.ServicePort) *portObjects {
	o := &portObjects{sp: p}
	label := readable(portLabel(p))
	id := portLabel(p) + "/" + p.Key.Family.String()
	proto := strings.ToLower(string(p.Protocol))
	port := strconv.Itoa(int(p.Port))
	svcChain := objectName("service", label, id)
	extChain := ""
	if (p.NodePort != 0 && r.nodePorts) || len(p.ExternalIPs) > 0 {
		extChain = objectName("external", label, id)
	}

	if len(p.Endpoints) == 0 {
		// No chains: the packet stays untranslated and the filter hooks
		// reject it.
		reject := "goto " + chainReject
		o.elements = append(o.elements, element{mapNoEndpointServices, p.ClusterIP.String() + " . " + proto + " . " + port, reject})
		for _, ip := range p.ExternalIPs {
			o.elements = append(o.elements, element{mapNoEndpointServices, ip.String() + " . " + proto + " . " + port, reject})
		}
		if p.NodePort != 0 && r.nodePorts {
			o.elements = append(o.elements, element{mapNoEndpointNodePort, proto + " . " + strconv.Itoa(int(p.NodePort)), reject})
		}
		return o
	}

	n := len(p.Endpoints)
	for i, ep := range p.Endpoints {
		if i == 0 || ep.Addr() != p.Endpoints[i-1].Addr() {
			o.hairpin = append(o.hairpin, ep.Addr())
		}
	}
	var b strings.Builder
	// With ClientIP affinity each endpoint has a chain of its own, which
	// records the client in the endpoint's set and DNATs. Without, the
	// service chain DNATs itself: fewer chains keep nft fast, as it lists
	// every chain of the table before each transaction.
	var epChains []string
	if p.AffinitySeconds > 0 {
		seconds := strconv.Itoa(int(p.AffinitySeconds))
		epChains = make([]string, n)
		for i, ep := range p.Endpoints {
			epLabel := label + "__" + readable(endpointLabel(ep))
			epID := endpointLabel(ep)
			epChains[i] = objectName("endpoint", epLabel, id, epID)
			// The timeout is part of the set's identity: a set's timeout
			// cannot change, so a new timeout makes a new set.
			set := objectName("affinity", epLabel, id, epID, seconds)
			o.sets = append(o.sets, affinitySet{set, "{ type " + r.addrType + "; flags dynamic,timeout; timeout " + seconds + "s; }"})
			b.Reset()
			b.WriteString("update @" + set + " { " + r.ip + " saddr }\n")
			b.WriteString("meta l4proto " + proto + " dnat to " + ep.String() + "\n")
			o.chains = append(o.chains, chain{epChains[i], b.String(), 2})
		}
	}

	b.Reset()
	rules := 0
	switch {
	case r.masqueradeAll:
		b.WriteString("jump " + chainMarkMasq + "\n")
		rules++
	case r.clusterCIDR != "":
		b.WriteString(r.ip + " saddr != " + r.clusterCIDR + " jump " + chainMarkMasq + "\n")
		rules++
	}
	for i, s := range o.sets {
		b.WriteString(r.ip + " saddr @" + s.name + " goto " + epChains[i] + "\n")
		rules++
	}
	// One rule per endpoint, each drawing its own number: the first of k
	// endpoints left is taken with chance 1/k, so that every endpoint is
	// equally likely. A "numgen random mod n vmap { ... }" would be one
	// rule, but each such rule makes an anonymous set, and the kernel finds
	// a name for a new anonymous set by walking all the table's sets: a
	// full sync at 10,000 Services took minutes.
	for i, ep := range p.Endpoints {
		if left := n - i; left > 1 {
			b.WriteString("numgen random mod " + strconv.Itoa(left) + " == 0 ")
		}
		if epChains != nil {
			b.WriteString("goto " + epChains[i] + "\n")
		} else {
			b.WriteString("meta l4proto " + proto + " dnat to " + ep.String() + "\n")
		}
	}
	rules += n
	o.chains = append(o.chains, chain{svcChain, b.String(), rules})
	o.elements = append(o.elements, element{mapServiceIPs, p.ClusterIP.String() + " . " + proto + " . " + port, "goto " + svcChain})

	if extChain != "" {
		o.chains = append(o.chains, chain{extChain, "jump " + chainMarkMasq + "\ngoto " + svcChain + "\n", 2})
		for _, ip := range p.ExternalIPs {
			o.elements = append(o.elements, element{mapServiceIPs, ip.String() + " . " + proto + " . " + port, "goto " + extChain})
		}
		if p.NodePort != 0 && r.nodePorts {
			o.elements = append(o.elements, element{mapServiceNodePorts, proto + " . " + strconv.Itoa(int(p.NodePort)), "goto " + extChain})
		}
	}
	return o
}

// baseObjects writes the declarations of the objects that do not depend on
// the Services, emptied, followed by their rules; it returns how many rules
// that is. The table must exist.
func (r *renderer) baseObjects(s *script, flush bool) int {
	t := r.table
	for _, c := range baseChains {
		s.line("add chain ", t, " ", c.name, " { ", c.spec, " }")
	}
	for _, c := range []string{chainServices, chainNoEndpoints, chainMasquerade, chainMarkMasq, chainReject} {
		s.line("add chain ", t, " ", c)
	}
	maps := []struct{ name, key string }{
		{mapServiceIPs, r.addrType + " . inet_proto . inet_service"},
		{mapServiceNodePorts, "inet_proto . inet_service"},
		{mapNoEndpointServices, r.addrType + " . inet_proto . inet_service"},
		{mapNoEndpointNodePort, "inet_proto . inet_service"},
	}
	for _, m := range maps {
		s.line("add map ", t, " ", m.name, " { type ", m.key, " : verdict; }")
	}
	s.line("add set ", t, " ", setHairpin, " { type ", r.addrType, " . ", r.addrType, "; }")
	if flush {
		for _, c := range baseChains {
			s.line("flush chain ", t, " ", c.name)
		}
		for _, c := range []string{chainServices, chainNoEndpoints, chainMasquerade, chainMarkMasq, chainReject} {
			s.line("flush chain ", t, " ", c)
		}
		for _, m := range maps {
			s.line("flush map ", t, " ", m.name)
		}
		s.line("flush set ", t, " ", setHairpin)
	}
	rules := 0
	rule := func(c string, spec ...string) {
		s.line(append([]string{"add rule ", t, " ", c, " "}, spec...)...)
		rules++
	}
	for _, c := range baseChains {
		rule(c.name, c.rule)
	}
	rule(chainServices, r.ip, " daddr . meta l4proto . th dport vmap @", mapServiceIPs)
	rule(chainNoEndpoints, r.ip, " daddr . meta l4proto . th dport vmap @", mapNoEndpointServices)
	if r.nodePorts {
		rule(chainServices, r.nodePortMatch, " meta l4proto . th dport vmap @", mapServiceNodePorts)
		rule(chainNoEndpoints, r.nodePortMatch, " meta l4proto . th dport vmap @", mapNoEndpointNodePort)
	}
	// A pod reaching itself through a Service: after DNAT the packet's
	// source and destination are the same address.
	rule(chainMasquerade, r.ip, " saddr . ", r.ip, " daddr @", setHairpin, " masquerade fully-random")
	rule(chainMasquerade, "meta mark & ", r.mark, " == 0 return")
	rule(chainMasquerade, "meta mark set meta mark ^ ", r.mark)
	rule(chainMasquerade, "masquerade fully-random")
	rule(chainMarkMasq, "meta mark set meta mark | ", r.mark)
	rule(chainReject, "reject")
	return rules
}
