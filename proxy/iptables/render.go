package iptables

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
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
	sp        *proxy.ServicePort
	svcChain  string
	extChain  string // empty without a node port
	sepChains []string
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
	out := make([]string, 0, 2+len(ps.sepChains))
	out = append(out, ps.svcChain)
	if ps.extChain != "" {
		out = append(out, ps.extChain)
	}
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
	// Traffic to a node port or an external IP comes from outside the
	// cluster: its chain masquerades it before the service chain.
	external := nodePort || len(p.ExternalIPs) > 0
	if external {
		ps.extChain = chainHash("CDNS-EXT-", id)
	}

	// Dispatch lines.
	ps.natDispatch = []byte("-A " + chainServices + " -m comment --comment \"" + name + " cluster IP\"" + dst + ports + " -j " + ps.svcChain + "\n")
	ps.natDispatchRules = 1
	for _, ip := range p.ExternalIPs {
		ps.natDispatch = append(ps.natDispatch, "-A "+chainServices+" -m comment --comment \""+name+" external IP\" -d "+ip.String()+r.info.hostBits+ports+" -j "+ps.extChain+"\n"...)
		ps.natDispatchRules++
	}
	if nodePort {
		ps.nodePortDispatch = []byte("-A " + chainNodePorts + " -m comment --comment \"" + name + "\"" + portMatch(proto, p.NodePort) + " -j " + ps.extChain + "\n")
		ps.natDispatchRules++
	}
	if len(p.Endpoints) == 0 {
		var f bytes.Buffer
		prefix := "-A " + chainServices + " -m comment --comment \"" + name + " has no endpoints\""
		f.WriteString(prefix + dst + ports + " -j REJECT\n")
		ps.filterDispatchRules = 1
		for _, ip := range p.ExternalIPs {
			f.WriteString(prefix + " -d " + ip.String() + r.info.hostBits + ports + " -j REJECT\n")
			ps.filterDispatchRules++
		}
		if nodePort {
			np := portMatch(proto, p.NodePort)
			if len(r.nodePortCIDRs) == 0 {
				f.WriteString(prefix + " -m addrtype --dst-type LOCAL" + np + " -j REJECT\n")
				ps.filterDispatchRules++
			}
			for _, c := range r.nodePortCIDRs {
				f.WriteString(prefix + " -d " + c + " -m addrtype --dst-type LOCAL" + np + " -j REJECT\n")
				ps.filterDispatchRules++
			}
		}
		ps.filterDispatch = f.Bytes()
	}

	// Own chains. Without endpoints they stay empty: the packet is not
	// translated and the filter table rejects it.
	declare(decl, ps.svcChain)
	if external {
		declare(decl, ps.extChain)
	}
	if len(p.Endpoints) == 0 {
		return ps
	}
	ps.sepChains = make([]string, len(p.Endpoints))
	eps := make([]string, len(p.Endpoints))
	for i, ep := range p.Endpoints {
		eps[i] = ep.String()
		ps.sepChains[i] = chainHash("CDNS-SEP-", id, eps[i])
		declare(decl, ps.sepChains[i])
	}
	// The rules below are written piece by piece: this is the hot path of a
	// full sync, and concatenating each line first would allocate it.
	svcRule := func(what string) {
		out.WriteString("-A ")
		out.WriteString(ps.svcChain)
		out.WriteString(" -m comment --comment \"")
		out.WriteString(name)
		out.WriteString(what)
	}
	switch {
	case r.masqueradeAll:
		svcRule(" cluster IP\"")
		out.WriteString(dst)
		out.WriteString(ports)
		out.WriteString(" -j " + chainMarkMasq + "\n")
		ps.ownRules++
	case r.clusterCIDR != "":
		svcRule(" cluster IP\" ! -s ")
		out.WriteString(r.clusterCIDR)
		out.WriteString(dst)
		out.WriteString(ports)
		out.WriteString(" -j " + chainMarkMasq + "\n")
		ps.ownRules++
	}
	if external {
		comment := "masquerade traffic to a node port"
		if !nodePort {
			comment = "masquerade traffic to an external IP"
		}
		out.WriteString("-A " + ps.extChain + " -m comment --comment \"" + comment + "\" -j " + chainMarkMasq + "\n")
		out.WriteString("-A " + ps.extChain + " -j " + ps.svcChain + "\n")
		ps.ownRules += 2
	}
	n := len(p.Endpoints)
	if p.AffinitySeconds > 0 {
		seconds := strconv.Itoa(int(p.AffinitySeconds))
		for i := range p.Endpoints {
			svcRule(" -> ")
			out.WriteString(eps[i])
			out.WriteString("\" -m recent --name ")
			out.WriteString(ps.sepChains[i])
			out.WriteString(" --mask ")
			out.WriteString(r.info.fullMask)
			out.WriteString(" --rsource --rcheck --seconds ")
			out.WriteString(seconds)
			out.WriteString(" --reap -j ")
			out.WriteString(ps.sepChains[i])
			out.WriteByte('\n')
		}
		ps.ownRules += n
	}
	for i := range p.Endpoints {
		svcRule(" -> ")
		out.WriteString(eps[i])
		out.WriteByte('"')
		if i < n-1 {
			out.WriteString(" -m statistic --mode random --probability ")
			out.WriteString(r.probability(n - i))
		}
		out.WriteString(" -j ")
		out.WriteString(ps.sepChains[i])
		out.WriteByte('\n')
	}
	ps.ownRules += n
	var addr [64]byte
	for i, ep := range p.Endpoints {
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
		out.WriteString(eps[i])
		out.WriteByte('\n')
	}
	ps.ownRules += 2 * n
	return ps
}
