package iptables

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/clusterdns/clusterdns/proxy"
)

// Chain names, each starting with ChainPrefix, which is how cleanup and
// stale-chain removal recognise them.
const (
	chainServices    = "CDNS-SERVICES"
	chainNodePorts   = "CDNS-NODEPORTS"
	chainPostrouting = "CDNS-POSTROUTING"
	chainMarkMasq    = "CDNS-MARK-MASQ"
)

// hooks lists the built-in chains the backend hooks into. Filter rules see new
// connections only, so replies to established flows never walk our chains.
func hooks() []Hook {
	portals := []string{"-m", "comment", "--comment", "clusterdns service portals", "-j", chainServices}
	newPortals := append([]string{"-m", "conntrack", "--ctstate", "NEW"}, portals...)
	return []Hook{
		{TableNAT, "PREROUTING", portals},
		{TableNAT, "OUTPUT", portals},
		{TableNAT, "POSTROUTING", []string{"-m", "comment", "--comment", "clusterdns postrouting rules", "-j", chainPostrouting}},
		{TableFilter, "INPUT", newPortals},
		{TableFilter, "FORWARD", newPortals},
		{TableFilter, "OUTPUT", newPortals},
	}
}

// familyInfo holds what differs between IPv4 and IPv6 rules.
type familyInfo struct {
	hostBits string // suffix making an address a one-host prefix
	fullMask string // the recent match's mask for a whole address
	loopback string // node ports are not served on loopback
}

func infoFor(f proxy.Family) familyInfo {
	if f == proxy.IPv6 {
		return familyInfo{"/128", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::1/128"}
	}
	return familyInfo{"/32", "255.255.255.255", "127.0.0.0/8"}
}

// chainHash names a chain after what it serves, so the same service port
// always gets the same chain: 16 base32 characters of a SHA-256.
func chainHash(kind string, parts ...string) string {
	var in [128]byte
	b := in[:0]
	for _, p := range parts {
		b = append(b, p...)
		b = append(b, 0)
	}
	sum := sha256.Sum256(b)
	var name [32]byte
	n := copy(name[:], kind)
	base32.StdEncoding.Encode(name[n:n+16], sum[:10])
	return string(name[:n+16])
}

func portID(p *proxy.ServicePort) string {
	return p.Key.String() + "/" + string(p.Protocol) + "/" + p.Key.Family.String()
}

// portState is what the backend programmed for one service port: the model
// entry, the chains it owns and its lines in the shared dispatch chains (kept
// rendered, so rewriting a dispatch chain costs a copy, not a render).
type portState struct {
	sp       *proxy.ServicePort
	svcChain string
	extChain string // empty without external traffic
	fwChain  string // empty without source ranges
	// listChains are the chains choosing among endpoint lists other than
	// the cluster IP's (svcChain's): the external traffic's, and with
	// externalTrafficPolicy Local the cluster-wide one.
	listChains []string
	sepChains  []string
	// ownRules counts the rules in the chains it owns.
	ownRules int
	// Its lines in nat CDNS-SERVICES, nat CDNS-NODEPORTS and filter
	// CDNS-SERVICES, and how many rules they are.
	natDispatch, nodePortDispatch, filterDispatch []byte
	natDispatchRules, filterDispatchRules         int
}

// Programmed implements proxy.Programmed.
func (ps *portState) Programmed() *proxy.ServicePort { return ps.sp }

func (ps *portState) chains() []string {
	out := make([]string, 0, 3+len(ps.listChains)+len(ps.sepChains))
	out = append(out, ps.svcChain)
	if ps.extChain != "" {
		out = append(out, ps.extChain)
	}
	if ps.fwChain != "" {
		out = append(out, ps.fwChain)
	}
	out = append(out, ps.listChains...)
	return append(out, ps.sepChains...)
}

// renderer writes the rules of one family. It holds the options that shape
// rules and caches the probability strings.
type renderer struct {
	family        proxy.Family
	info          familyInfo
	clusterCIDR   string // first cluster CIDR of the family, "" for none
	masqueradeAll bool
	nodePortCIDRs []string // node port destinations of the family; nil for every local address
	markMasq      string   // "0x2000"
	markMasqMask  string   // "0x2000/0x2000"
	probabilities []string
}

func newRenderer(f proxy.Family, opts *Config) *renderer {
	r := &renderer{family: f, info: infoFor(f), masqueradeAll: opts.MasqueradeAll}
	for _, p := range opts.ClusterCIDRs {
		if proxy.FamilyOf(p.Addr()) == f {
			r.clusterCIDR = p.Masked().String()
			break
		}
	}
	for _, p := range opts.NodePortAddresses {
		if proxy.FamilyOf(p.Addr()) == f {
			r.nodePortCIDRs = append(r.nodePortCIDRs, p.Masked().String())
		}
	}
	r.markMasq = MarkHex(opts.Mark())
	r.markMasqMask = r.markMasq + "/" + r.markMasq
	return r
}

// nodePortsOff reports whether node ports are limited to some addresses and
// none is of this family, in which case this family serves no node ports.
func (r *renderer) nodePortsOff(opts *Config) bool {
	return len(opts.NodePortAddresses) > 0 && len(r.nodePortCIDRs) == 0
}

// probability is 1/n with ten decimals, the chance that the first of n
// remaining endpoints is taken, so that the choice is uniform overall.
func (r *renderer) probability(n int) string {
	for len(r.probabilities) <= n && len(r.probabilities) < 4096 {
		k := len(r.probabilities)
		s := ""
		if k > 0 {
			s = strconv.FormatFloat(1/float64(k), 'f', 10, 64)
		}
		r.probabilities = append(r.probabilities, s)
	}
	if n < len(r.probabilities) {
		return r.probabilities[n]
	}
	return strconv.FormatFloat(1/float64(n), 'f', 10, 64)
}

// writeBase writes the chains that do not depend on the Services.
func (r *renderer) writeBase(decl, out *bytes.Buffer) int {
	declare(decl, chainPostrouting)
	declare(decl, chainMarkMasq)
	out.WriteString("-A " + chainPostrouting + " -m mark ! --mark " + r.markMasqMask + " -j RETURN\n")
	out.WriteString("-A " + chainPostrouting + " -j MARK --xor-mark " + r.markMasq + "\n")
	out.WriteString("-A " + chainPostrouting + " -m comment --comment \"clusterdns service traffic requiring SNAT\" -j MASQUERADE --random-fully\n")
	out.WriteString("-A " + chainMarkMasq + " -j MARK --or-mark " + r.markMasq + "\n")
	return 4
}

// writeNodePortJump writes the last rules of nat CDNS-SERVICES: what is left
// and addressed to the node goes to the node ports.
func (r *renderer) writeNodePortJump(out *bytes.Buffer, opts *Config) int {
	if r.nodePortsOff(opts) {
		return 0
	}
	const comment = "-A " + chainServices + " -m comment --comment \"clusterdns node ports\""
	if len(r.nodePortCIDRs) == 0 {
		out.WriteString(comment + " -m addrtype --dst-type LOCAL ! -d " + r.info.loopback + " -j " + chainNodePorts + "\n")
		return 1
	}
	for _, c := range r.nodePortCIDRs {
		out.WriteString(comment + " -d " + c + " -m addrtype --dst-type LOCAL -j " + chainNodePorts + "\n")
	}
	return len(r.nodePortCIDRs)
}

func declare(decl *bytes.Buffer, chain string) {
	decl.WriteByte(':')
	decl.WriteString(chain)
	decl.WriteString(" - [0:0]\n")
}

// portMatch is " -p tcp -m tcp --dport N".
func portMatch(proto string, port uint16) string {
	return " -p " + proto + " -m " + proto + " --dport " + strconv.Itoa(int(port))
}

// renderPort declares and writes the chains one service port owns and renders
// its dispatch lines.
// maxCommentName bounds a service port's name in rule comments: the
// kernel takes comments of up to 255 bytes, and the longest text that
// follows the name is " has no endpoints".
const maxCommentName = 200

// commentText makes a service port's name safe inside a quoted
// iptables-restore argument. Names from the API server are DNS labels, but a
// manifests folder is not validated: a quote, a backslash or an overlong
// name would make iptables-restore reject the whole input, and with it every
// Service's rules. Other bytes become '?'.
func commentText(s string) string {
	safe := func(c byte) bool {
		return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-./:_ ", c) >= 0
	}
	i := 0
	for i < len(s) && i < maxCommentName && safe(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s[:min(len(s), maxCommentName)])
	for j := i; j < len(b); j++ {
		if !safe(b[j]) {
			b[j] = '?'
		}
	}
	return string(b)
}

func (r *renderer) renderPort(p *proxy.ServicePort, opts *Config, decl, out *bytes.Buffer) *portState {
	id := portID(p)
	ps := &portState{sp: p, svcChain: chainHash("CDNS-SVC-", id)}
	name := commentText(p.Key.String())
	proto := strings.ToLower(string(p.Protocol))
	dst := " -d " + p.ClusterIP.String() + r.info.hostBits
	ports := portMatch(proto, p.Port)
	nodePort := p.NodePort != 0 && !r.nodePortsOff(opts)
	// Traffic to a node port, an external IP or a load balancer IP comes
	// from outside the cluster: its chain applies the external traffic
	// policy before the endpoints are chosen.
	external := nodePort || len(p.ExternalIPs) > 0 || len(p.LoadBalancerIPs) > 0
	if external {
		ps.extChain = chainHash("CDNS-EXT-", id)
	}
	lbChain := ps.extChain
	if len(p.LoadBalancerIPs) > 0 && len(p.SourceRanges) > 0 {
		ps.fwChain = chainHash("CDNS-FW-", id)
		lbChain = ps.fwChain
	}

	// Dispatch lines.
	ps.natDispatch = []byte("-A " + chainServices + " -m comment --comment \"" + name + " cluster IP\"" + dst + ports + " -j " + ps.svcChain + "\n")
	ps.natDispatchRules = 1
	for _, ip := range p.ExternalIPs {
		ps.natDispatch = append(ps.natDispatch, "-A "+chainServices+" -m comment --comment \""+name+" external IP\" -d "+ip.String()+r.info.hostBits+ports+" -j "+ps.extChain+"\n"...)
		ps.natDispatchRules++
	}
	for _, ip := range p.LoadBalancerIPs {
		ps.natDispatch = append(ps.natDispatch, "-A "+chainServices+" -m comment --comment \""+name+" loadbalancer IP\" -d "+ip.String()+r.info.hostBits+ports+" -j "+lbChain+"\n"...)
		ps.natDispatchRules++
	}
	if nodePort {
		ps.nodePortDispatch = []byte("-A " + chainNodePorts + " -m comment --comment \"" + name + "\"" + portMatch(proto, p.NodePort) + " -j " + ps.extChain + "\n")
		ps.natDispatchRules++
	}
	ps.filterDispatch, ps.filterDispatchRules = r.filterLines(p, name, dst, proto, ports, nodePort, external)

	// Own chains. Without endpoints they stay empty: the packet is not
	// translated and the filter table rejects (or drops) it.
	declare(decl, ps.svcChain)
	if external {
		declare(decl, ps.extChain)
	}
	if ps.fwChain != "" {
		declare(decl, ps.fwChain)
	}
	if !p.HasEndpoints() {
		return ps
	}
	// Each distinct endpoint list gets a chain choosing among its
	// endpoints; svcChain holds the cluster IP's. A SEP chain per endpoint
	// serves every list the endpoint is in.
	var all []netip.AddrPort
	for _, l := range [][]netip.AddrPort{p.Endpoints, p.ExternalEndpoints, p.ClusterEndpoints} {
		all = append(all, l...)
	}
	all = uniqueSorted(all)
	ps.sepChains = make([]string, len(all))
	sepOf := make(map[netip.AddrPort]string, len(all))
	for i, ep := range all {
		ps.sepChains[i] = chainHash("CDNS-SEP-", id, ep.String())
		sepOf[ep] = ps.sepChains[i]
		declare(decl, ps.sepChains[i])
	}
	if len(p.Endpoints) > 0 {
		switch {
		case r.masqueradeAll:
			r.writeRule(out, ps.svcChain, name, " cluster IP\"", dst+ports+" -j "+chainMarkMasq)
			ps.ownRules++
		case r.clusterCIDR != "":
			r.writeRule(out, ps.svcChain, name, " cluster IP\" ! -s ", r.clusterCIDR+dst+ports+" -j "+chainMarkMasq)
			ps.ownRules++
		}
		ps.ownRules += r.writeList(out, p, ps.svcChain, name, p.Endpoints, sepOf)
	}
	type list struct {
		eps   []netip.AddrPort
		chain string
	}
	lists := []list{{p.Endpoints, ps.svcChain}}
	chainFor := func(role string, eps []netip.AddrPort) string {
		if len(eps) == 0 {
			return ""
		}
		for _, l := range lists {
			if slices.Equal(l.eps, eps) {
				return l.chain
			}
		}
		c := chainHash("CDNS-SVL-", id, role)
		declare(decl, c)
		ps.listChains = append(ps.listChains, c)
		lists = append(lists, list{eps, c})
		ps.ownRules += r.writeList(out, p, c, name, eps, sepOf)
		return c
	}
	if external {
		extList := chainFor("external", p.ExternalEndpoints)
		rule := func(match, target string) {
			out.WriteString("-A " + ps.extChain + match + " -j " + target + "\n")
			ps.ownRules++
		}
		if p.ExternalLocal {
			// Pods and the node itself reach every endpoint, as if they had
			// gone out to a load balancer and come back; the node's traffic
			// has a local source address, which must not reach a pod.
			if cluster := chainFor("cluster", p.ClusterEndpoints); cluster != "" {
				if r.clusterCIDR != "" {
					rule(" -m comment --comment \"pod traffic for external destinations\" -s "+r.clusterCIDR, cluster)
				}
				rule(" -m comment --comment \"masquerade node traffic for external destinations\" -m addrtype --src-type LOCAL", chainMarkMasq)
				rule(" -m comment --comment \"node traffic for external destinations\" -m addrtype --src-type LOCAL", cluster)
			}
		} else if extList != "" {
			comment := "masquerade traffic to a node port"
			if !nodePort {
				comment = "masquerade traffic to an external IP"
			}
			rule(" -m comment --comment \""+comment+"\"", chainMarkMasq)
		}
		if extList != "" {
			rule("", extList)
		}
	}
	if ps.fwChain != "" {
		var addr [64]byte
		for _, src := range p.SourceRanges {
			out.WriteString("-A " + ps.fwChain + " -m comment --comment \"" + name + " loadbalancer source range\" -s ")
			out.WriteString(src.String())
			out.WriteString(" -j " + ps.extChain + "\n")
		}
		// A load balancer that sends traffic on with its own address as
		// the source is allowed too.
		for _, ip := range p.LoadBalancerIPs {
			out.WriteString("-A " + ps.fwChain + " -m comment --comment \"" + name + " loadbalancer IP as source\" -s ")
			out.Write(ip.AppendTo(addr[:0]))
			out.WriteString(r.info.hostBits + " -j " + ps.extChain + "\n")
		}
		ps.ownRules += len(p.SourceRanges) + len(p.LoadBalancerIPs)
	}
	var addr [64]byte
	for i, ep := range all {
		sepRule := func() {
			out.WriteString("-A ")
			out.WriteString(ps.sepChains[i])
			out.WriteString(" -m comment --comment \"")
			out.WriteString(name)
			out.WriteByte('"')
		}
		sepRule()
		out.WriteString(" -s ")
		out.Write(ep.Addr().AppendTo(addr[:0]))
		out.WriteString(r.info.hostBits)
		out.WriteString(" -j " + chainMarkMasq + "\n")
		sepRule()
		out.WriteString(" -p ")
		out.WriteString(proto)
		out.WriteString(" -m ")
		out.WriteString(proto)
		if p.AffinitySeconds > 0 {
			out.WriteString(" -m recent --name ")
			out.WriteString(ps.sepChains[i])
			out.WriteString(" --mask ")
			out.WriteString(r.info.fullMask)
			out.WriteString(" --rsource --set")
		}
		out.WriteString(" -j DNAT --to-destination ")
		out.Write(ep.AppendTo(addr[:0]))
		out.WriteByte('\n')
	}
	ps.ownRules += 2 * len(all)
	return ps
}

// writeRule writes "-A chain -m comment --comment "name<what><rest>".
// The rules are written piece by piece: this is the hot path of a full
// sync, and concatenating each line first would allocate it.
func (r *renderer) writeRule(out *bytes.Buffer, chain, name, what, rest string) {
	out.WriteString("-A ")
	out.WriteString(chain)
	out.WriteString(" -m comment --comment \"")
	out.WriteString(name)
	out.WriteString(what)
	out.WriteString(rest)
	out.WriteByte('\n')
}

// writeList writes the rules of a chain choosing uniformly among eps (with
// ClientIP affinity first when the port has it) and returns their count.
func (r *renderer) writeList(out *bytes.Buffer, p *proxy.ServicePort, chain, name string, eps []netip.AddrPort, sepOf map[netip.AddrPort]string) int {
	var addr [64]byte
	head := func(ep netip.AddrPort) {
		out.WriteString("-A ")
		out.WriteString(chain)
		out.WriteString(" -m comment --comment \"")
		out.WriteString(name)
		out.WriteString(" -> ")
		out.Write(ep.AppendTo(addr[:0]))
		out.WriteByte('"')
	}
	n := len(eps)
	if p.AffinitySeconds > 0 {
		seconds := strconv.Itoa(int(p.AffinitySeconds))
		for _, ep := range eps {
			head(ep)
			out.WriteString(" -m recent --name ")
			out.WriteString(sepOf[ep])
			out.WriteString(" --mask ")
			out.WriteString(r.info.fullMask)
			out.WriteString(" --rsource --rcheck --seconds ")
			out.WriteString(seconds)
			out.WriteString(" --reap -j ")
			out.WriteString(sepOf[ep])
			out.WriteByte('\n')
		}
	}
	for i, ep := range eps {
		head(ep)
		if i < n-1 {
			out.WriteString(" -m statistic --mode random --probability ")
			out.WriteString(r.probability(n - i))
		}
		out.WriteString(" -j ")
		out.WriteString(sepOf[ep])
		out.WriteByte('\n')
	}
	if p.AffinitySeconds > 0 {
		return 2 * n
	}
	return n
}

// filterLines renders a port's lines in filter CDNS-SERVICES: what the nat
// table left untranslated because there is no endpoint for it. Without any
// endpoint the Service rejects; with endpoints none of which this traffic
// may reach (a Local policy), or from a source not allowed, it drops.
func (r *renderer) filterLines(p *proxy.ServicePort, name, dst, proto, ports string, nodePort, external bool) ([]byte, int) {
	var f bytes.Buffer
	n := 0
	write := func(comment, match, target string) {
		f.WriteString("-A " + chainServices + " -m comment --comment \"" + name + comment + "\"" + match + " -j " + target + "\n")
		n++
	}
	externals := func(comment, target string, lbIPs bool) {
		for _, ip := range p.ExternalIPs {
			write(comment, " -d "+ip.String()+r.info.hostBits+ports, target)
		}
		if lbIPs {
			for _, ip := range p.LoadBalancerIPs {
				write(comment, " -d "+ip.String()+r.info.hostBits+ports, target)
			}
		}
		if nodePort {
			np := portMatch(proto, p.NodePort)
			if len(r.nodePortCIDRs) == 0 {
				write(comment, " -m addrtype --dst-type LOCAL"+np, target)
			}
			for _, c := range r.nodePortCIDRs {
				write(comment, " -d "+c+" -m addrtype --dst-type LOCAL"+np, target)
			}
		}
	}
	switch {
	case !p.HasEndpoints():
		write(" has no endpoints", dst+ports, "REJECT")
		externals(" has no endpoints", "REJECT", true)
	default:
		if len(p.Endpoints) == 0 {
			write(" has no local endpoints", dst+ports, "DROP")
		}
		if external && len(p.ExternalEndpoints) == 0 {
			externals(" has no local endpoints", "DROP", true)
		} else if len(p.SourceRanges) > 0 {
			for _, ip := range p.LoadBalancerIPs {
				write(" loadbalancer source not allowed", " -d "+ip.String()+r.info.hostBits+ports, "DROP")
			}
		}
	}
	return f.Bytes(), n
}

// uniqueSorted sorts endpoints and drops repeats.
func uniqueSorted(eps []netip.AddrPort) []netip.AddrPort {
	slices.SortFunc(eps, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return slices.Compact(eps)
}
