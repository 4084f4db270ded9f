// Package iptablestest follows packets through rules in iptables-save
// syntax, for the tests of the two modes that render such rules (iptables
// and IPVS). It is deliberately tiny: it knows the matches and targets those
// modes render and fails the test on anything else.
package iptablestest

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// Tracer walks packets through a dump of tables. Random choices (statistic)
// and affinity checks (recent --rcheck) fork the walk, so a trace returns
// every outcome the packet can have.
type Tracer struct {
	t      testing.TB
	tables map[string]map[string][][]string // table -> chain -> rules as words
	local  map[netip.Addr]bool              // the node's addresses
	// InSet answers "-m set --match-set NAME DIRS" (DIRS as in the rule,
	// such as "dst,dst"); nil when the rules use no sets.
	InSet func(name, dirs string, p Packet) bool
}

// NewTracer reads a dump (iptables-save output, or restore input) of a
// node whose own addresses are local.
func NewTracer(t testing.TB, dump string, local ...string) *Tracer {
	tr := &Tracer{t: t, tables: map[string]map[string][][]string{}, local: map[netip.Addr]bool{}}
	for _, l := range local {
		tr.local[netip.MustParseAddr(l)] = true
	}
	var table string
	for _, line := range strings.Split(dump, "\n") {
		switch {
		case line == "" || line[0] == '#' || line == "COMMIT":
		case line[0] == '*':
			table = line[1:]
			if tr.tables[table] == nil {
				tr.tables[table] = map[string][][]string{}
			}
		case line[0] == ':':
			name, _, _ := strings.Cut(line[1:], " ")
			if _, ok := tr.tables[table][name]; !ok {
				tr.tables[table][name] = nil
			}
		case strings.HasPrefix(line, "-A "):
			words := splitWords(t, line)
			tr.tables[table][words[1]] = append(tr.tables[table][words[1]], words[2:])
		default:
			t.Fatalf("tracer: unexpected line %q", line)
		}
	}
	return tr
}

// Local reports whether an address is the node's.
func (tr *Tracer) Local(a netip.Addr) bool { return tr.local[a] }

// splitWords splits a rule like a shell would: double quotes group words.
func splitWords(t testing.TB, line string) []string {
	var out []string
	var cur strings.Builder
	quoted, inWord := false, false
	for _, c := range line {
		switch {
		case c == '"':
			quoted, inWord = !quoted, true
		case c == ' ' && !quoted:
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(c)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("tracer: unbalanced quote in %q", line)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

// Packet is the first packet of a connection.
type Packet struct {
	Src, Dst netip.Addr
	Proto    string // lower case: tcp, udp, sctp
	DPort    uint16
}

// State is where one path of a packet is after a chain.
type State struct {
	Mark   uint64
	DNAT   netip.AddrPort // zero when not translated
	Masq   bool
	Reject bool
	Drop   bool
	// Affinity is the timeout in seconds of the last ClientIP affinity
	// check (recent --rcheck) on the path, zero for none.
	Affinity int
	done     bool // a terminating target was hit
}

// Outcome strings of Trace, beside "address:port" and "address:port masq".
const (
	Rejected     = "REJECT"
	Dropped      = "DROP"
	Untranslated = "untranslated"
)

// String is the outcome of a path that ended in this state.
func (s State) String() string {
	switch {
	case s.Reject:
		return Rejected
	case s.Drop:
		return Dropped
	case !s.DNAT.IsValid():
		return Untranslated
	case s.Masq:
		return s.DNAT.String() + " masq"
	}
	return s.DNAT.String()
}

// Trace sends a packet through the iptables mode's path: one that arrives
// from outside the node (fromNode false) or leaves a local process (fromNode
// true) walks nat PREROUTING (OUTPUT), then filter INPUT, FORWARD or OUTPUT
// and nat POSTROUTING. It returns the sorted, distinct outcomes and the
// largest affinity timeout met on the way.
func (tr *Tracer) Trace(p Packet, fromNode bool) (outcomes []string, affinity int) {
	first := "PREROUTING"
	if fromNode {
		first = "OUTPUT"
	}
	seen := map[string]bool{}
	for _, s := range tr.Walk("nat", first, p, State{}) {
		v := State{DNAT: s.DNAT}
		affinity = max(affinity, s.Affinity)
		after := p
		if s.DNAT.IsValid() {
			after.Dst, after.DPort = s.DNAT.Addr(), s.DNAT.Port()
		}
		filterChain := "FORWARD"
		switch {
		case fromNode:
			filterChain = "OUTPUT"
		case tr.local[after.Dst]:
			filterChain = "INPUT"
		}
		for _, f := range tr.Walk("filter", filterChain, after, State{}) {
			v.Reject = v.Reject || f.Reject
			v.Drop = v.Drop || f.Drop
		}
		if !v.Reject && !v.Drop {
			for _, post := range tr.Walk("nat", "POSTROUTING", after, State{Mark: s.Mark}) {
				v.Masq = v.Masq || post.Masq
			}
		}
		seen[v.String()] = true
	}
	return sortedKeys(seen), affinity
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// Walk runs a chain and returns the states the packet can leave it in.
func (tr *Tracer) Walk(table, chain string, p Packet, in State) []State {
	rules, ok := tr.tables[table][chain]
	if !ok {
		if chain == "PREROUTING" || chain == "OUTPUT" || chain == "POSTROUTING" || chain == "INPUT" || chain == "FORWARD" {
			return []State{in}
		}
		tr.t.Fatalf("tracer: jump to missing chain %s/%s", table, chain)
	}
	return tr.walkFrom(table, rules, 0, p, in)
}

func (tr *Tracer) walkFrom(table string, rules [][]string, i int, p Packet, s State) []State {
	for ; i < len(rules); i++ {
		rule := rules[i]
		match, fork := tr.matches(rule, p, s)
		if fork {
			if secs := valueOf(rule, "--seconds"); secs != "" && contains(rule, "--rcheck") {
				s.Affinity, _ = strconv.Atoi(secs)
			}
			// Either way: the rule matched or it did not.
			out := tr.walkFrom(table, rules, i+1, p, s)
			return append(out, tr.apply(table, rules, i, p, s)...)
		}
		if match {
			return tr.apply(table, rules, i, p, s)
		}
	}
	return []State{s}
}

func contains(words []string, w string) bool {
	for _, x := range words {
		if x == w {
			return true
		}
	}
	return false
}

// apply runs the rule's target and the rest of the chain when the target
// lets the packet continue.
func (tr *Tracer) apply(table string, rules [][]string, i int, p Packet, s State) []State {
	rule := rules[i]
	target, args := targetOf(rule)
	switch target {
	case "RETURN":
		return []State{s}
	case "ACCEPT":
		s.done = true
		return []State{s}
	case "REJECT":
		s.Reject, s.done = true, true
		return []State{s}
	case "DROP":
		s.Drop, s.done = true, true
		return []State{s}
	case "DNAT":
		ap, err := netip.ParseAddrPort(valueOf(args, "--to-destination"))
		if err != nil {
			tr.t.Fatalf("tracer: bad DNAT in %q: %v", rule, err)
		}
		s.DNAT, s.done = ap, true
		return []State{s}
	case "MASQUERADE":
		s.Masq, s.done = true, true
		return []State{s}
	case "MARK":
		if v := valueOf(args, "--or-mark"); v != "" {
			s.Mark |= parseMark(tr.t, v)
		} else if v := valueOf(args, "--xor-mark"); v != "" {
			s.Mark ^= parseMark(tr.t, v)
		} else {
			tr.t.Fatalf("tracer: unknown MARK in %q", rule)
		}
		return tr.walkFrom(table, rules, i+1, p, s)
	}
	var out []State
	for _, r := range tr.Walk(table, target, p, s) {
		if r.done {
			out = append(out, r)
		} else {
			out = append(out, tr.walkFrom(table, rules, i+1, p, r)...)
		}
	}
	return out
}

func targetOf(rule []string) (string, []string) {
	for i, w := range rule {
		if w == "-j" && i+1 < len(rule) {
			return rule[i+1], rule[i+2:]
		}
	}
	return "", nil
}

func valueOf(args []string, flag string) string {
	for i, w := range args {
		if w == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func parseMark(t testing.TB, s string) uint64 {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32)
	if err != nil {
		t.Fatalf("tracer: bad mark %q", s)
	}
	return v
}

// matches evaluates a rule's matches. fork is true when the outcome is
// random or depends on state the tracer does not keep (recent --rcheck).
func (tr *Tracer) matches(rule []string, p Packet, s State) (match, fork bool) {
	match = true
	neg := false
	for i := 0; i < len(rule); i++ {
		w := rule[i]
		next := func() string {
			i++
			if i >= len(rule) {
				tr.t.Fatalf("tracer: %q ends early", strings.Join(rule, " "))
			}
			return rule[i]
		}
		result := true
		switch w {
		case "!":
			neg = true
			continue
		case "-j":
			return match, fork && match
		case "-s", "-d":
			pfx := parsePrefix(tr.t, next())
			addr := p.Src
			if w == "-d" {
				addr = p.Dst
			}
			result = pfx.Contains(addr)
		case "-p":
			result = next() == p.Proto
		case "-m":
			switch mod := next(); mod {
			case "tcp", "udp", "sctp", "comment", "addrtype", "statistic", "recent", "mark", "conntrack", "set":
			default:
				tr.t.Fatalf("tracer: unknown match module %s", mod)
			}
			continue
		case "--dport":
			result = next() == strconv.Itoa(int(p.DPort))
		case "--comment":
			next()
			continue
		case "--dst-type", "--src-type":
			if next() != "LOCAL" {
				tr.t.Fatalf("tracer: only address type LOCAL is known")
			}
			if w == "--dst-type" {
				result = tr.local[p.Dst]
			} else {
				result = tr.local[p.Src]
			}
		case "--mode", "--name", "--mask", "--seconds":
			next()
			continue
		case "--probability":
			next()
			fork = true
			continue
		case "--rsource", "--reap", "--set":
			continue
		case "--rcheck":
			fork = true
			continue
		case "--mark":
			v, m, _ := strings.Cut(next(), "/")
			mask := uint64(0xffffffff)
			if m != "" {
				mask = parseMark(tr.t, m)
			}
			result = s.Mark&mask == parseMark(tr.t, v)
		case "--ctstate":
			result = strings.Contains(next(), "NEW")
		case "--match-set":
			name, dirs := next(), next()
			if tr.InSet == nil {
				tr.t.Fatalf("tracer: %q matches a set, and the tracer has no InSet", strings.Join(rule, " "))
			}
			result = tr.InSet(name, dirs, p)
		default:
			tr.t.Fatalf("tracer: unknown word %q in %q", w, strings.Join(rule, " "))
		}
		if neg {
			result = !result
			neg = false
		}
		match = match && result
	}
	return match, fork && match
}

func parsePrefix(t testing.TB, s string) netip.Prefix {
	if !strings.Contains(s, "/") {
		a := netip.MustParseAddr(s)
		return netip.PrefixFrom(a, a.BitLen())
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatalf("tracer: bad prefix %q", s)
	}
	return p
}
