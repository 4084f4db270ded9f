package nftables

import (
	"crypto/sha256"
	"encoding/base32"
	"net/netip"
	"slices"
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
	chainDrop        = "drop-chain"

	mapServiceIPs         = "service-ips"
	mapServiceNodePorts   = "service-nodeports"
	mapNoEndpointServices = "no-endpoint-services"
	mapNoEndpointNodePort = "no-endpoint-nodeports"
	setHairpin            = "hairpin"
	// mapEndpoints is the prefix of the endpoints maps' names, by protocol
	// and shard: "endpoints-tcp-0".
	mapEndpoints = "endpoints-"

	// maxNameLen is the kernel's limit on chain and set names (NFT_NAME_MAXLEN
	// less the terminating zero).
	maxNameLen = 255
)

// baseChain is a chain attached to a netfilter hook, with its one rule.
type baseChain struct {
	name string
	hook Hook
	rule []Stmt
}

// baseChains are the hooks: nat for translation, filter (new connections
// only) for rejecting service ports without endpoints.
var baseChains = []baseChain{
	{"nat-prerouting", Hook{"nat", "prerouting", "dstnat"}, []Stmt{Jump{chainServices}}},
	{"nat-output", Hook{"nat", "output", "-100"}, []Stmt{Jump{chainServices}}},
	{"nat-postrouting", Hook{"nat", "postrouting", "srcnat"}, []Stmt{Jump{chainMasquerade}}},
	{"filter-input", Hook{"filter", "input", "filter"}, []Stmt{CtStateNew{}, Jump{chainNoEndpoints}}},
	{"filter-forward", Hook{"filter", "forward", "filter"}, []Stmt{CtStateNew{}, Jump{chainNoEndpoints}}},
	{"filter-output", Hook{"filter", "output", "filter"}, []Stmt{CtStateNew{}, Jump{chainNoEndpoints}}},
}

// regularChains are the chains that do not depend on the Services.
var regularChains = []string{chainServices, chainNoEndpoints, chainMasquerade, chainMarkMasq, chainReject, chainDrop}

// baseSets are the maps and sets that do not depend on the Services.
var baseSets = []Set{
	{Name: mapServiceIPs, Key: []KeyType{KeyAddr, KeyProto, KeyPort}, Map: true},
	{Name: mapServiceNodePorts, Key: []KeyType{KeyProto, KeyPort}, Map: true},
	{Name: mapNoEndpointServices, Key: []KeyType{KeyAddr, KeyProto, KeyPort}, Map: true},
	{Name: mapNoEndpointNodePort, Key: []KeyType{KeyProto, KeyPort}, Map: true},
	{Name: setHairpin, Key: []KeyType{KeyAddr, KeyAddr}},
}

// protocols are the protocols of the endpoints maps.
var protocols = []string{"tcp", "udp", "sctp"}

// endpointsMap names shard k of a protocol's endpoints maps.
func endpointsMap(proto string, k int) string {
	return mapEndpoints + proto + "-" + strconv.Itoa(k)
}

// family holds what differs between the ip and ip6 tables.
type family struct {
	proxy.Family
	table    string       // "ip clusterdns"
	ip       string       // the address match keyword: ip or ip6
	addrType string       // ipv4_addr or ipv6_addr
	loopback netip.Prefix // node ports are not served on loopback
}

func familyOf(f proxy.Family) family {
	if f == proxy.IPv6 {
		return family{f, "ip6 " + TableName, "ip6", "ipv6_addr", netip.PrefixFrom(netip.IPv6Loopback(), 128)}
	}
	return family{f, "ip " + TableName, "ip", "ipv4_addr", netip.PrefixFrom(netip.AddrFrom4([4]byte{127}), 8)}
}

// renderer renders the objects of one family from the model and the options.
type renderer struct {
	family
	clusterCIDR   netip.Prefix // first cluster CIDR of the family, invalid for none
	masqueradeAll bool
	nodePorts     bool   // whether this family serves node ports at all
	nodePortMatch []Stmt // the destination match in front of the node port lookup
	mark          uint32 // the masquerade mark bit
}

func newRenderer(f proxy.Family, cfg *Config) *renderer {
	r := &renderer{family: familyOf(f), masqueradeAll: cfg.MasqueradeAll, nodePorts: true}
	for _, p := range cfg.ClusterCIDRs {
		if proxy.FamilyOf(p.Addr()) == f {
			r.clusterCIDR = p.Masked()
			break
		}
	}
	var cidrs []netip.Prefix
	for _, p := range cfg.NodePortAddresses {
		if proxy.FamilyOf(p.Addr()) == f {
			cidrs = append(cidrs, p.Masked())
		}
	}
	switch {
	case len(cfg.NodePortAddresses) > 0 && len(cidrs) == 0:
		r.nodePorts = false // limited to addresses, none of this family
	case len(cidrs) > 0:
		r.nodePortMatch = []Stmt{DaddrIn{cidrs}, FibLocal{}}
	default:
		r.nodePortMatch = []Stmt{FibLocal{}, AddrCmp{Not: true, Prefix: r.loopback}}
	}
	r.mark = cfg.Mark()
	return r
}

// portChain is one chain a service port owns, with its rules.
type portChain struct {
	Chain
	rules []Rule
}

// portObjects is everything one service port owns in a table.
type portObjects struct {
	sp *proxy.ServicePort
	// chains are in the order they must be written: endpoint chains before
	// the service chain that jumps to them, the external chain last.
	chains []portChain
	// sets are the ClientIP affinity sets.
	sets     []Set
	elements []Element
	// hairpin lists the endpoint addresses (each once) whose traffic to
	// themselves through the Service must be masqueraded.
	hairpin []netip.Addr
	// blocks are the blocks of the endpoints map the port's lists use, and
	// slots their elements.
	blocks []roleBlock
	slots  []Element
}

func (o *portObjects) rules() int {
	n := len(o.elements) + len(o.slots)
	for _, c := range o.chains {
		n += len(c.rules)
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

// serviceKey is the key of a service-ips element.
func serviceKey(a netip.Addr, proto string, port uint16) []Value {
	return []Value{{Addr: a}, {Proto: proto}, {Port: port}}
}

// nodePortKey is the key of a service-nodeports element.
func nodePortKey(proto string, port uint16) []Value {
	return []Value{{Proto: proto}, {Port: port}}
}

// render computes the objects of one service port.
//
// The nat table translates what has endpoints; what it leaves untranslated
// meets the filter hooks' no-endpoint maps, which reject traffic to a
// Service without endpoints and drop traffic that has none it may reach
// from this node (a Local policy) or comes from a source the load
// balancer's ranges do not allow. Translated packets no longer carry the
// Service's address, so the maps never see them.
//
// Each list of endpoints a port chooses from without ClientIP affinity
// takes a block of the endpoints map's slots, from prev's blocks when one is
// big enough (so that the rule choosing from it stays as it is) or else from
// alloc.
func (r *renderer) render(p *proxy.ServicePort, prev []roleBlock, alloc *slotAlloc) *portObjects {
	o := &portObjects{sp: p}
	f := r.Family
	label := readable(portLabel(p))
	id := portLabel(p) + "/" + p.Key.Family.String()
	proto := strings.ToLower(string(p.Protocol))
	svcChain := objectName("service", label, id)
	nodePort := p.NodePort != 0 && r.nodePorts
	external := nodePort || len(p.ExternalIPs) > 0 || len(p.LoadBalancerIPs) > 0
	element := func(set string, key []Value, target string) {
		o.elements = append(o.elements, Element{Family: f, Set: set, Key: key, Goto: target})
	}
	externals := func(target string, lbIPs bool) {
		for _, ip := range p.ExternalIPs {
			element(mapNoEndpointServices, serviceKey(ip, proto, p.Port), target)
		}
		if lbIPs {
			for _, ip := range p.LoadBalancerIPs {
				element(mapNoEndpointServices, serviceKey(ip, proto, p.Port), target)
			}
		}
		if nodePort {
			element(mapNoEndpointNodePort, nodePortKey(proto, p.NodePort), target)
		}
	}

	if !p.HasEndpoints() {
		// No chains: the packet stays untranslated and the filter hooks
		// reject it.
		element(mapNoEndpointServices, serviceKey(p.ClusterIP, proto, p.Port), chainReject)
		externals(chainReject, true)
		return o
	}
	if len(p.Endpoints) == 0 {
		element(mapNoEndpointServices, serviceKey(p.ClusterIP, proto, p.Port), chainDrop)
	}
	fw := len(p.LoadBalancerIPs) > 0 && len(p.SourceRanges) > 0
	switch {
	case external && len(p.ExternalEndpoints) == 0:
		externals(chainDrop, true)
	case fw:
		for _, ip := range p.LoadBalancerIPs {
			element(mapNoEndpointServices, serviceKey(ip, proto, p.Port), chainDrop)
		}
	}

	// Mostly the lists are one (or the others are empty): no union is made.
	all := p.Endpoints
	same := func(l []netip.AddrPort) bool { return len(l) == 0 || slices.Equal(l, p.Endpoints) }
	if !same(p.ExternalEndpoints) || !same(p.ClusterEndpoints) {
		all = slices.Concat(p.Endpoints, p.ExternalEndpoints, p.ClusterEndpoints)
		slices.SortFunc(all, netip.AddrPort.Compare)
		all = slices.Compact(all)
	}
	for i, ep := range all {
		if i == 0 || ep.Addr() != all[i-1].Addr() {
			o.hairpin = append(o.hairpin, ep.Addr())
		}
	}
	rule := func(chain string, stmts ...Stmt) Rule { return Rule{Family: f, Chain: chain, Stmts: stmts} }
	// With ClientIP affinity each endpoint has a chain of its own, which
	// records the client in the endpoint's set and DNATs. Without, the
	// list chains DNAT themselves through the endpoints map: fewer chains
	// keep nft fast, as it lists every chain of the table before each
	// transaction.
	var epChain map[netip.AddrPort]string
	var epSet map[netip.AddrPort]string
	if p.AffinitySeconds > 0 {
		seconds := strconv.Itoa(int(p.AffinitySeconds))
		epChain = make(map[netip.AddrPort]string, len(all))
		epSet = make(map[netip.AddrPort]string, len(all))
		for _, ep := range all {
			epLabel := label + "__" + readable(endpointLabel(ep))
			epID := endpointLabel(ep)
			c := objectName("endpoint", epLabel, id, epID)
			// The timeout is part of the set's identity: a set's timeout
			// cannot change, so a new timeout makes a new set.
			set := objectName("affinity", epLabel, id, epID, seconds)
			epChain[ep], epSet[ep] = c, set
			o.sets = append(o.sets, Set{Family: f, Name: set, Key: []KeyType{KeyAddr}, Timeout: uint32(p.AffinitySeconds)})
			o.chains = append(o.chains, portChain{Chain{Family: f, Name: c}, []Rule{
				rule(c, UpdateSaddr{set}),
				rule(c, DNAT{proto, ep}),
			}})
		}
	}
	// listRules chooses among eps. With affinity, one rule per endpoint,
	// each drawing its own number: the first of k endpoints left is taken
	// with chance 1/k, so that every endpoint is equally likely. Without,
	// one rule draws a slot of the list's block in the shared endpoints
	// map: an endpoint that changes is a map element replaced, which the
	// kernel takes without checking the table's jumps again (a rule it
	// would check, at a cost that grows with the cluster).
	listRules := func(chain, role string, rules []Rule, eps []netip.AddrPort) []Rule {
		n := len(eps)
		if epChain == nil {
			b := blockFor(prev, role, n, alloc)
			o.blocks = append(o.blocks, roleBlock{role, b})
			m := endpointsMap(proto, alloc.shard(id))
			for i, ep := range eps {
				o.slots = append(o.slots, Element{Family: f, Set: m, Slot: b.offset + uint32(i), To: ep})
			}
			return append(rules, rule(chain, DNATSlot{Proto: proto, Mod: n, Offset: b.offset, Map: m}))
		}
		for _, ep := range eps {
			rules = append(rules, rule(chain, SaddrIn{epSet[ep]}, Goto{epChain[ep]}))
		}
		for i, ep := range eps {
			stmts := make([]Stmt, 0, 2)
			if left := n - i; left > 1 {
				stmts = append(stmts, Numgen{left})
			}
			stmts = append(stmts, Goto{epChain[ep]})
			rules = append(rules, rule(chain, stmts...))
		}
		return rules
	}

	type list struct {
		eps   []netip.AddrPort
		chain string
		// masq is set for the service chain when it masquerades traffic
		// from outside the pods: traffic that must keep its source
		// address cannot share it.
		masq bool
	}
	var lists []list
	if len(p.Endpoints) > 0 {
		rules := make([]Rule, 0, 1+2*len(p.Endpoints))
		switch {
		case r.masqueradeAll:
			rules = append(rules, rule(svcChain, Jump{chainMarkMasq}))
		case r.clusterCIDR.IsValid():
			rules = append(rules, rule(svcChain, AddrCmp{Src: true, Not: true, Prefix: r.clusterCIDR}, Jump{chainMarkMasq}))
		}
		o.chains = append(o.chains, portChain{Chain{Family: f, Name: svcChain}, listRules(svcChain, "service", rules, p.Endpoints)})
		element(mapServiceIPs, serviceKey(p.ClusterIP, proto, p.Port), svcChain)
		lists = append(lists, list{p.Endpoints, svcChain, r.masqueradeAll || r.clusterCIDR.IsValid()})
	}
	chainFor := func(role string, eps []netip.AddrPort, keepSource bool) string {
		if len(eps) == 0 {
			return ""
		}
		for _, l := range lists {
			if slices.Equal(l.eps, eps) && !(keepSource && l.masq) {
				return l.chain
			}
		}
		c := objectName("endpoints-"+role, label, id, role)
		o.chains = append(o.chains, portChain{Chain{Family: f, Name: c}, listRules(c, role, nil, eps)})
		lists = append(lists, list{eps, c, false})
		return c
	}

	if !external {
		return o
	}
	extChain := objectName("external", label, id)
	var ext []Rule
	extList := chainFor("external", p.ExternalEndpoints, p.ExternalLocal)
	if p.ExternalLocal {
		// Pods and the node itself reach every endpoint, as if they had
		// gone out to a load balancer and come back; the node's traffic has
		// a local source address, which must not reach a pod.
		if cluster := chainFor("cluster", p.ClusterEndpoints, false); cluster != "" {
			if r.clusterCIDR.IsValid() {
				ext = append(ext, rule(extChain, AddrCmp{Src: true, Prefix: r.clusterCIDR}, Goto{cluster}))
			}
			ext = append(ext, rule(extChain, FibLocal{Src: true}, Jump{chainMarkMasq}), rule(extChain, FibLocal{Src: true}, Goto{cluster}))
		}
	} else if extList != "" {
		ext = append(ext, rule(extChain, Jump{chainMarkMasq}))
	}
	if extList != "" {
		ext = append(ext, rule(extChain, Goto{extList}))
	}
	o.chains = append(o.chains, portChain{Chain{Family: f, Name: extChain}, ext})
	lbChain := extChain
	if fw {
		lbChain = objectName("firewall", label, id)
		rules := make([]Rule, 0, len(p.SourceRanges)+len(p.LoadBalancerIPs))
		for _, src := range p.SourceRanges {
			rules = append(rules, rule(lbChain, AddrCmp{Src: true, Prefix: src}, Goto{extChain}))
		}
		// A load balancer that sends traffic on with its own address as
		// the source is allowed too.
		for _, ip := range p.LoadBalancerIPs {
			rules = append(rules, rule(lbChain, AddrCmp{Src: true, Prefix: netip.PrefixFrom(ip, ip.BitLen())}, Goto{extChain}))
		}
		o.chains = append(o.chains, portChain{Chain{Family: f, Name: lbChain}, rules})
	}
	for _, ip := range p.ExternalIPs {
		element(mapServiceIPs, serviceKey(ip, proto, p.Port), extChain)
	}
	for _, ip := range p.LoadBalancerIPs {
		element(mapServiceIPs, serviceKey(ip, proto, p.Port), lbChain)
	}
	if nodePort {
		element(mapServiceNodePorts, nodePortKey(proto, p.NodePort), extChain)
	}
	return o
}

// baseObjects adds the objects that do not depend on the Services, emptied
// (with flush), followed by their rules; it returns how many rules that is.
// The table must exist. shards is the number of endpoints maps per protocol.
func (r *renderer) baseObjects(tx *txBuilder, flush bool, shards int) int {
	f := r.Family
	add := func(verb Verb, o Object) { tx.head = append(tx.head, Op{verb, o}) }
	for _, c := range baseChains {
		add(Add, &Chain{Family: f, Name: c.name, Hook: &c.hook})
	}
	for _, c := range regularChains {
		add(Add, &Chain{Family: f, Name: c})
	}
	sets := slices.Clone(baseSets)
	for _, p := range protocols {
		for k := range shards {
			sets = append(sets, Set{Name: endpointsMap(p, k), Map: true, Endpoints: p})
		}
	}
	for i := range sets {
		s := sets[i]
		s.Family = f
		add(Add, &s)
	}
	if flush {
		for _, c := range baseChains {
			add(Flush, &Chain{Family: f, Name: c.name})
		}
		for _, c := range regularChains {
			add(Flush, &Chain{Family: f, Name: c})
		}
		for i := range sets {
			s := sets[i]
			s.Family = f
			add(Flush, &s)
		}
	}
	rules := 0
	rule := func(c string, stmts ...Stmt) {
		add(Add, &Rule{Family: f, Chain: c, Stmts: stmts})
		rules++
	}
	for _, c := range baseChains {
		rule(c.name, c.rule...)
	}
	rule(chainServices, VMap{mapServiceIPs, true})
	rule(chainNoEndpoints, VMap{mapNoEndpointServices, true})
	if r.nodePorts {
		rule(chainServices, append(slices.Clone(r.nodePortMatch), VMap{mapServiceNodePorts, false})...)
		rule(chainNoEndpoints, append(slices.Clone(r.nodePortMatch), VMap{mapNoEndpointNodePort, false})...)
	}
	// A pod reaching itself through a Service: after DNAT the packet's
	// source and destination are the same address.
	rule(chainMasquerade, PairIn{setHairpin}, Masquerade{})
	rule(chainMasquerade, MarkClear{r.mark}, Return{})
	rule(chainMasquerade, MarkSet{'^', r.mark})
	rule(chainMasquerade, Masquerade{})
	rule(chainMarkMasq, MarkSet{'|', r.mark})
	rule(chainReject, Reject{})
	rule(chainDrop, Drop{})
	return rules
}
