package iptables

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// tracer follows a packet through rules in iptables-save syntax. It is
// deliberately tiny: it knows the matches and targets the backend renders
// and fails the test on anything else. Random choices (statistic) and
// affinity checks (recent --rcheck) fork the trace, so a trace returns every
// outcome the packet can have.
type tracer struct {
	t      testing.TB
	tables map[string]map[string][][]string // table -> chain -> rules as words
	local  map[netip.Addr]bool              // the node's addresses
}

func newTracer(t testing.TB, dump string, local ...string) *tracer {
	tr := &tracer{t: t, tables: map[string]map[string][][]string{}, local: map[netip.Addr]bool{}}
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

type packet struct {
	src, dst netip.Addr
	proto    string
	dport    uint16
}

// verdict is where one path of a packet ends up.
type verdict struct {
	dnat   netip.AddrPort // zero when not translated
	masq   bool
	reject bool
}

func (v verdict) String() string {
	switch {
	case v.reject:
		return "REJECT"
	case !v.dnat.IsValid():
		return "untranslated"
	case v.masq:
		return v.dnat.String() + " masq"
	}
	return v.dnat.String()
}

type walkState struct {
	mark   uint64
	dnat   netip.AddrPort
	masq   bool
	reject bool
	done   bool // a terminating target was hit
}

// trace sends a packet that arrives from outside the node (fromNode false)
// or leaves a local process (fromNode true) and returns the sorted, distinct
// verdicts.
func (tr *tracer) trace(p packet, fromNode bool) []string {
	first := "PREROUTING"
	if fromNode {
		first = "OUTPUT"
	}
	seen := map[string]bool{}
	for _, s := range tr.walk("nat", first, p, walkState{}) {
		v := verdict{dnat: s.dnat}
		after := p
		if s.dnat.IsValid() {
			after.dst, after.dport = s.dnat.Addr(), s.dnat.Port()
		}
		filterChain := "FORWARD"
		switch {
		case fromNode:
			filterChain = "OUTPUT"
		case tr.local[after.dst]:
			filterChain = "INPUT"
		}
		for _, f := range tr.walk("filter", filterChain, after, walkState{}) {
			if f.reject {
				v.reject = true
			}
		}
		if !v.reject {
			for _, post := range tr.walk("nat", "POSTROUTING", after, walkState{mark: s.mark}) {
				v.masq = v.masq || post.masq
			}
		}
		seen[v.String()] = true
	}
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// walk runs a chain and returns the states the packet can leave it in.
func (tr *tracer) walk(table, chain string, p packet, in walkState) []walkState {
	rules, ok := tr.tables[table][chain]
	if !ok {
		if chain == "PREROUTING" || chain == "OUTPUT" || chain == "POSTROUTING" || chain == "INPUT" || chain == "FORWARD" {
			return []walkState{in}
		}
		tr.t.Fatalf("tracer: jump to missing chain %s/%s", table, chain)
	}
	return tr.walkFrom(table, rules, 0, p, in)
}

func (tr *tracer) walkFrom(table string, rules [][]string, i int, p packet, s walkState) []walkState {
	for ; i < len(rules); i++ {
		rule := rules[i]
		match, fork := tr.matches(rule, p, s)
		if fork {
			// Either way: the rule matched or it did not.
			out := tr.walkFrom(table, rules, i+1, p, s)
			return append(out, tr.apply(table, rules, i, p, s)...)
		}
		if match {
			return tr.apply(table, rules, i, p, s)
		}
	}
	return []walkState{s}
}

// apply runs the rule's target and the rest of the chain when the target
// lets the packet continue.
func (tr *tracer) apply(table string, rules [][]string, i int, p packet, s walkState) []walkState {
	rule := rules[i]
	target, args := targetOf(rule)
	switch target {
	case "RETURN":
		return []walkState{s}
	case "ACCEPT":
		s.done = true
		return []walkState{s}
	case "REJECT":
		s.reject, s.done = true, true
		return []walkState{s}
	case "DNAT":
		ap, err := netip.ParseAddrPort(valueOf(args, "--to-destination"))
		if err != nil {
			tr.t.Fatalf("tracer: bad DNAT in %q: %v", rule, err)
		}
		s.dnat, s.done = ap, true
		return []walkState{s}
	case "MASQUERADE":
		s.masq, s.done = true, true
		return []walkState{s}
	case "MARK":
		if v := valueOf(args, "--or-mark"); v != "" {
			s.mark |= parseMark(tr.t, v)
		} else if v := valueOf(args, "--xor-mark"); v != "" {
			s.mark ^= parseMark(tr.t, v)
		} else {
			tr.t.Fatalf("tracer: unknown MARK in %q", rule)
		}
		return tr.walkFrom(table, rules, i+1, p, s)
	}
	var out []walkState
	for _, r := range tr.walk(table, target, p, s) {
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
func (tr *tracer) matches(rule []string, p packet, s walkState) (match, fork bool) {
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
			addr := p.src
			if w == "-d" {
				addr = p.dst
			}
			result = pfx.Contains(addr)
		case "-p":
			result = next() == p.proto
		case "-m":
			switch mod := next(); mod {
			case "tcp", "udp", "sctp", "comment", "addrtype", "statistic", "recent", "mark", "conntrack":
			default:
				tr.t.Fatalf("tracer: unknown match module %s", mod)
			}
			continue
		case "--dport":
			result = next() == strconv.Itoa(int(p.dport))
		case "--comment":
			next()
			continue
		case "--dst-type":
			if next() != "LOCAL" {
				tr.t.Fatalf("tracer: only --dst-type LOCAL is known")
			}
			result = tr.local[p.dst]
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
			result = s.mark&mask == parseMark(tr.t, v)
		case "--ctstate":
			result = strings.Contains(next(), "NEW")
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

func tcp(src, dst string, port uint16) packet {
	return packet{src: netip.MustParseAddr(src), dst: netip.MustParseAddr(dst), proto: "tcp", dport: port}
}

func udp(src, dst string, port uint16) packet {
	p := tcp(src, dst, port)
	p.proto = "udp"
	return p
}

func endpointsOf(addrs []string, port int, masq bool) []string {
	var out []string
	for _, a := range addrs {
		s := netip.AddrPortFrom(netip.MustParseAddr(a), uint16(port)).String()
		if masq {
			s += " masq"
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}
