package nftables

import (
	"net/netip"
	"slices"
	"sort"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
)

// tracer follows a packet through the fake's tables as the kernel would
// through the hooks: nat prerouting (or output, for a packet of the node),
// then filter input, forward or output, then nat postrouting for a packet
// that leaves. It knows every statement of objects.go; random choices
// (numgen) and lookups of the dynamic affinity sets fork the trace, so a
// trace returns every outcome the packet can have.
type tracer struct {
	t     testing.TB
	table *fakeTable
	local map[netip.Addr]bool // the node's addresses
}

func newTracer(t testing.TB, f *Fake, fam proxy.Family, local ...string) *tracer {
	t.Helper()
	f.mu.Lock()
	table := f.tables[fam]
	f.mu.Unlock()
	if table == nil {
		t.Fatalf("tracer: no %s table", fam)
	}
	tr := &tracer{t: t, table: table, local: map[netip.Addr]bool{}}
	for _, l := range local {
		tr.local[netip.MustParseAddr(l)] = true
	}
	return tr
}

type packet struct {
	src, dst netip.Addr
	proto    string
	dport    uint16
}

func (p packet) String() string {
	return p.proto + " " + p.src.String() + " → " + netip.AddrPortFrom(p.dst, p.dport).String()
}

func tcp(src, dst string, port uint16) packet {
	return packet{src: netip.MustParseAddr(src), dst: netip.MustParseAddr(dst), proto: "tcp", dport: port}
}

func udp(src, dst string, port uint16) packet {
	p := tcp(src, dst, port)
	p.proto = "udp"
	return p
}

// state is one path of a packet through a hook.
type state struct {
	mark   uint32
	dnat   netip.AddrPort // invalid when not translated
	masq   bool
	reject bool
	drop   bool
	done   bool // a terminal statement was reached
	// affinity is the timeout of the affinity set the path records the
	// client in, in seconds; zero when it records it nowhere.
	affinity uint32
}

// verdict is where one path ends: "REJECT", "untranslated", "ADDR:PORT"
// or "ADDR:PORT masq".
func (s state) verdict() string {
	switch {
	case s.reject:
		return "REJECT"
	case s.drop:
		return "DROP"
	case !s.dnat.IsValid():
		return "untranslated"
	case s.masq:
		return s.dnat.String() + " masq"
	}
	return s.dnat.String()
}

// trace sends a packet that arrives at the node (from a pod or from
// outside: the source address tells) or, with fromNode, that a process of
// the node sends, and returns the sorted, distinct verdicts.
func (tr *tracer) trace(p packet, fromNode bool) []string {
	out, _ := tr.route(p, fromNode)
	return out
}

// route is trace, plus the ClientIP affinity timeout the packet's paths
// record it with (the largest, when paths differ; zero for none).
func (tr *tracer) route(p packet, fromNode bool) ([]string, int) {
	first := "prerouting"
	if fromNode {
		first = "output"
	}
	seen := map[string]bool{}
	affinity := 0
	for _, s := range tr.hook("nat", first, p, state{}) {
		affinity = max(affinity, int(s.affinity))
		after := p
		if s.dnat.IsValid() {
			after.dst, after.dport = s.dnat.Addr(), s.dnat.Port()
		}
		filter := "forward"
		switch {
		case fromNode:
			filter = "output"
		case tr.local[after.dst]:
			filter = "input"
		}
		v := state{dnat: s.dnat, mark: s.mark}
		for _, f := range tr.hook("filter", filter, after, state{mark: s.mark}) {
			v.reject = v.reject || f.reject
			v.drop = v.drop || f.drop
		}
		if !v.reject && !v.drop && filter != "input" {
			for _, post := range tr.hook("nat", "postrouting", after, state{mark: s.mark}) {
				v.masq = v.masq || post.masq
			}
		}
		seen[v.verdict()] = true
	}
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return out, affinity
}

// hook runs the base chains of a hook (this table has one per type and
// hook) and returns the states the packet can leave it in.
func (tr *tracer) hook(typ, hook string, p packet, s state) []state {
	out := []state{s}
	for _, c := range tr.table.chains {
		if c.Hook != nil && c.Hook.Type == typ && c.Hook.Hook == hook {
			var next []state
			for _, in := range out {
				next = append(next, tr.chain(c.Name, p, in)...)
			}
			out = next
		}
	}
	return out
}

// chain runs a chain; a state that is not done fell off its end or
// returned.
func (tr *tracer) chain(name string, p packet, s state) []state {
	c := tr.table.chains[name]
	if c == nil {
		tr.t.Fatalf("tracer: chain %s is missing", name)
	}
	return tr.run(c.rules, 0, 0, p, s)
}

// run evaluates statement j of rule i and what follows it.
func (tr *tracer) run(rules []*Rule, i, j int, p packet, s state) []state {
	if i == len(rules) {
		return []state{s}
	}
	r := rules[i]
	if j == len(r.Stmts) {
		return tr.run(rules, i+1, 0, p, s)
	}
	next := func(s state) []state { return tr.run(rules, i, j+1, p, s) }
	skip := func() []state { return tr.run(rules, i+1, 0, p, s) }
	match := func(ok bool) []state {
		if ok {
			return next(s)
		}
		return skip()
	}
	switch st := r.Stmts[j].(type) {
	case Numgen, SaddrIn:
		// A random draw, or a client the affinity set may hold: both ways.
		return append(next(s), skip()...)
	case CtStateNew:
		return next(s) // every traced packet opens a connection
	case FibLocal:
		if st.Src {
			return match(tr.local[p.src])
		}
		return match(tr.local[p.dst])
	case AddrCmp:
		a := p.dst
		if st.Src {
			a = p.src
		}
		return match(st.Prefix.Contains(a) != st.Not)
	case DaddrIn:
		return match(slices.ContainsFunc(st.Prefixes, func(q netip.Prefix) bool { return q.Contains(p.dst) }))
	case PairIn:
		return match(tr.lookup(st.Set, []Value{{Addr: p.src}, {Addr: p.dst}}) != nil)
	case MarkClear:
		return match(s.mark&st.Mask == 0)
	case UpdateSaddr:
		set := tr.table.sets[st.Set]
		if set == nil {
			tr.t.Fatalf("tracer: set %s is missing", st.Set)
		}
		s.affinity = set.Timeout
		return next(s)
	case MarkSet:
		switch st.Op {
		case '|':
			s.mark |= st.Mask
		case '^':
			s.mark ^= st.Mask
		default:
			tr.t.Fatalf("tracer: mark operation %q", st.Op)
		}
		return next(s)
	case DNAT:
		if st.Proto != p.proto {
			return skip()
		}
		s.dnat, s.done = st.To, true
		return []state{s}
	case DNATSlot:
		if st.Proto != p.proto {
			return skip()
		}
		// Any slot the draw may give: a missing element fails the lookup
		// and with it the rule.
		var out []state
		for i := range st.Mod {
			if e := tr.lookup(st.Map, nil, st.Offset+uint32(i)); e != nil {
				t := s
				t.dnat, t.done = e.To, true
				out = append(out, t)
			}
		}
		if len(out) < st.Mod {
			out = append(out, skip()...)
		}
		return out
	case Masquerade:
		s.masq, s.done = true, true
		return []state{s}
	case Reject:
		s.reject, s.done = true, true
		return []state{s}
	case Drop:
		s.drop, s.done = true, true
		return []state{s}
	case Return:
		return []state{s}
	case Jump:
		var out []state
		for _, back := range tr.chain(st.Chain, p, s) {
			if back.done {
				out = append(out, back)
			} else {
				out = append(out, tr.run(rules, i+1, 0, p, back)...)
			}
		}
		return out
	case Goto:
		return tr.chain(st.Chain, p, s)
	case VMap:
		key := []Value{{Proto: p.proto}, {Port: p.dport}}
		if st.Addr {
			key = append([]Value{{Addr: p.dst}}, key...)
		}
		if e := tr.lookup(st.Map, key); e != nil {
			return tr.chain(e.Goto, p, s)
		}
		return skip()
	}
	tr.t.Fatalf("tracer: statement %T", r.Stmts[j])
	return nil
}

// lookup finds the element of a set with the key (in the endpoints map,
// the slot).
func (tr *tracer) lookup(set string, key []Value, slot ...uint32) *Element {
	s := tr.table.sets[set]
	if s == nil {
		tr.t.Fatalf("tracer: set %s is missing", set)
	}
	var w textWriter
	e := Element{Key: key}
	if s.Endpoints != "" {
		e.Slot, e.To = slot[0], netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	}
	w.key(&e, false)
	return s.elements[w.String()]
}

// endpointsOf is the verdicts of packets reaching each address at port.
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
