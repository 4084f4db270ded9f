package nftables

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/clusterdns/clusterdns/proxy"
)

// Fake is an in-memory nftables for tests. It applies a transaction whole
// or not at all and refuses what the kernel would: an object in a missing
// table, a rule in a missing chain, a jump, goto or map element leading to a
// missing (or base) chain, a lookup of a missing set, an element of a
// missing set or of the wrong type, deleting what is not there, deleting a
// chain or set that is referenced, a loop of jumps, and a statement in a
// chain that a hook of the wrong kind reaches (dnat outside nat
// prerouting/output, masquerade outside nat postrouting, reject in
// postrouting). TestKernelRefusesWhatTheFakeRefuses holds these to the
// kernel. Dump prints the tables as
// `nft list table` does, in a stable order.
type Fake struct {
	mu sync.Mutex // protects the following fields
	// Scripts lists every transaction given to Apply, as an nft script.
	Scripts []string
	// Fail makes that many of the next Apply calls fail (after recording).
	Fail   int
	tables map[proxy.Family]*fakeTable
}

var _ Runner = (*Fake)(nil)

// NewFake returns a Fake without tables.
func NewFake() *Fake {
	return &Fake{tables: make(map[proxy.Family]*fakeTable)}
}

type fakeTable struct {
	family proxy.Family
	chains map[string]*fakeChain
	sets   map[string]*fakeSet
}

type fakeChain struct {
	Chain
	rules []*Rule
}

type fakeSet struct {
	Set
	elements map[string]*Element // by key text
}

func (t *fakeTable) clone() *fakeTable {
	c := &fakeTable{family: t.family, chains: make(map[string]*fakeChain, len(t.chains)), sets: make(map[string]*fakeSet, len(t.sets))}
	for k, v := range t.chains {
		c.chains[k] = &fakeChain{v.Chain, slices.Clone(v.rules)}
	}
	for k, v := range t.sets {
		c.sets[k] = &fakeSet{v.Set, maps.Clone(v.elements)}
	}
	return c
}

var errFakeApply = errors.New("fake nftables: failing on purpose")

// Apply implements Runner.
func (f *Fake) Apply(_ context.Context, tx *Transaction) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Scripts = append(f.Scripts, string(tx.Script()))
	if f.Fail > 0 {
		f.Fail--
		return errFakeApply
	}
	next := make(map[proxy.Family]*fakeTable, len(f.tables))
	for fam, t := range f.tables {
		next[fam] = t.clone()
	}
	for i, o := range tx.Ops {
		if err := apply(next, o); err != nil {
			var w textWriter
			w.op(o)
			return fmt.Errorf("fake nftables: operation %d (%s): %w", i+1, strings.TrimSpace(w.String()), err)
		}
	}
	for _, t := range next {
		if err := t.validate(); err != nil {
			return fmt.Errorf("fake nftables: commit: %w", err)
		}
	}
	f.tables = next
	return nil
}

// The errors the kernel answers with, by the name of its errno.
var (
	errNotFound = errors.New("no such file or directory")
	errBusy     = errors.New("device or resource busy")
	errExists   = errors.New("file exists")
	errInvalid  = errors.New("invalid argument")
	errNotSupp  = errors.New("operation not supported")
	errLoop     = errors.New("too many levels of symbolic links")
)

func apply(tables map[proxy.Family]*fakeTable, o Op) error {
	fam := o.Object.family()
	if tbl, ok := o.Object.(*Table); ok {
		switch o.Verb {
		case Add:
			if tables[fam] == nil {
				tables[fam] = &fakeTable{family: fam, chains: map[string]*fakeChain{}, sets: map[string]*fakeSet{}}
			}
		case Delete:
			if tables[fam] == nil {
				return fmt.Errorf("table %s: %w", tableText(tbl.Family), errNotFound)
			}
			delete(tables, fam)
		default:
			return fmt.Errorf("%s table: %w", o.Verb, errNotSupp)
		}
		return nil
	}
	t := tables[fam]
	if t == nil {
		return fmt.Errorf("table %s: %w", tableText(fam), errNotFound)
	}
	switch obj := o.Object.(type) {
	case *Chain:
		return t.chainOp(o.Verb, obj)
	case *Rule:
		return t.addRule(o.Verb, obj)
	case *Set:
		return t.setOp(o.Verb, obj)
	case *Element:
		return t.elementOp(o.Verb, obj)
	}
	return fmt.Errorf("object %T: %w", o.Object, errNotSupp)
}

func (t *fakeTable) chainOp(verb Verb, c *Chain) error {
	have := t.chains[c.Name]
	switch verb {
	case Add:
		if have == nil {
			t.chains[c.Name] = &fakeChain{Chain: *c}
			return nil
		}
		if (have.Hook == nil) != (c.Hook == nil) || (c.Hook != nil && *have.Hook != *c.Hook) {
			return fmt.Errorf("chain %s exists with another hook: %w", c.Name, errExists)
		}
		return nil
	case Flush:
		if have == nil {
			return fmt.Errorf("chain %s: %w", c.Name, errNotFound)
		}
		have.rules = nil
		return nil
	case Delete:
		if have == nil {
			return fmt.Errorf("chain %s: %w", c.Name, errNotFound)
		}
		// The kernel deletes a chain's rules with it; what matters is that
		// nothing leads to it.
		if by := t.chainUser(c.Name); by != "" {
			return fmt.Errorf("chain %s is referenced by %s: %w", c.Name, by, errBusy)
		}
		delete(t.chains, c.Name)
		return nil
	}
	return fmt.Errorf("%s chain: %w", verb, errNotSupp)
}

// chainUser names a rule or map element that jumps or goes to chain, or
// returns "".
func (t *fakeTable) chainUser(chain string) string {
	for _, c := range t.chains {
		for _, r := range c.rules {
			for _, s := range r.Stmts {
				if target, ok := stmtChain(s); ok && target == chain {
					return "a rule of chain " + c.Name
				}
			}
		}
	}
	for _, s := range t.sets {
		for k, e := range s.elements {
			if e.Goto == chain {
				return "element " + k + " of map " + s.Name
			}
		}
	}
	return ""
}

// stmtChain is the chain a jump or goto leads to.
func stmtChain(s Stmt) (string, bool) {
	switch s := s.(type) {
	case Jump:
		return s.Chain, true
	case Goto:
		return s.Chain, true
	}
	return "", false
}

// stmtSet is the set or map a statement looks up or updates, and the set
// it needs.
func stmtSet(s Stmt) (name string, want Set, ok bool) {
	switch s := s.(type) {
	case SaddrIn:
		return s.Set, Set{Key: []KeyType{KeyAddr}}, true
	case PairIn:
		return s.Set, Set{Key: []KeyType{KeyAddr, KeyAddr}}, true
	case UpdateSaddr:
		return s.Set, Set{Key: []KeyType{KeyAddr}}, true
	case DNATSlot:
		return s.Map, Set{Map: true, Endpoints: s.Proto}, true
	case VMap:
		if s.Addr {
			return s.Map, Set{Key: []KeyType{KeyAddr, KeyProto, KeyPort}, Map: true}, true
		}
		return s.Map, Set{Key: []KeyType{KeyProto, KeyPort}, Map: true}, true
	}
	return "", Set{}, false
}

// target checks that a jump, goto or verdict may lead to chain.
func (t *fakeTable) target(chain string) error {
	c := t.chains[chain]
	if c == nil {
		return fmt.Errorf("chain %s: %w", chain, errNotFound)
	}
	if c.Hook != nil {
		return fmt.Errorf("base chain %s is not a jump target: %w", chain, errNotSupp)
	}
	return nil
}

func (t *fakeTable) addRule(verb Verb, r *Rule) error {
	if verb != Add {
		return fmt.Errorf("%s rule: %w", verb, errNotSupp)
	}
	c := t.chains[r.Chain]
	if c == nil {
		return fmt.Errorf("chain %s: %w", r.Chain, errNotFound)
	}
	for _, s := range r.Stmts {
		if target, ok := stmtChain(s); ok {
			if err := t.target(target); err != nil {
				return err
			}
		}
		if name, want, ok := stmtSet(s); ok {
			have := t.sets[name]
			switch {
			case have == nil:
				return fmt.Errorf("set %s: %w", name, errNotFound)
			case have.Map != want.Map || have.Endpoints != want.Endpoints || !slices.Equal(have.Key, want.Key):
				return fmt.Errorf("set %s has another type: %w", name, errInvalid)
			}
		}
		if err := checkFamily(s, r.Family); err != nil {
			return err
		}
	}
	cp := *r
	c.rules = append(c.rules, &cp)
	return nil
}

// checkFamily refuses an address of the other family.
func checkFamily(s Stmt, f proxy.Family) error {
	var bad bool
	switch s := s.(type) {
	case AddrCmp:
		bad = proxy.FamilyOf(s.Prefix.Addr()) != f
	case DaddrIn:
		for _, p := range s.Prefixes {
			bad = bad || proxy.FamilyOf(p.Addr()) != f
		}
	case DNAT:
		bad = proxy.FamilyOf(s.To.Addr()) != f
	}
	if bad {
		return fmt.Errorf("%T with an address not of %s: %w", s, f, errInvalid)
	}
	return nil
}

func (t *fakeTable) setOp(verb Verb, s *Set) error {
	have := t.sets[s.Name]
	switch verb {
	case Add:
		if have == nil {
			t.sets[s.Name] = &fakeSet{Set: *s, elements: map[string]*Element{}}
			return nil
		}
		if have.Map != s.Map || have.Endpoints != s.Endpoints || have.Timeout != s.Timeout || !slices.Equal(have.Key, s.Key) {
			return fmt.Errorf("set %s exists with another type: %w", s.Name, errExists)
		}
		return nil
	case Flush:
		if have == nil {
			return fmt.Errorf("set %s: %w", s.Name, errNotFound)
		}
		clear(have.elements)
		return nil
	case Delete:
		if have == nil {
			return fmt.Errorf("set %s: %w", s.Name, errNotFound)
		}
		for _, c := range t.chains {
			for _, r := range c.rules {
				for _, st := range r.Stmts {
					if name, _, ok := stmtSet(st); ok && name == s.Name {
						return fmt.Errorf("set %s is used by a rule of chain %s: %w", s.Name, c.Name, errBusy)
					}
				}
			}
		}
		delete(t.sets, s.Name)
		return nil
	}
	return fmt.Errorf("%s set: %w", verb, errNotSupp)
}

func (t *fakeTable) elementOp(verb Verb, e *Element) error {
	s := t.sets[e.Set]
	if s == nil {
		return fmt.Errorf("set %s: %w", e.Set, errNotFound)
	}
	if (s.Endpoints != "") != e.To.IsValid() {
		return fmt.Errorf("element of set %s: endpoints map and target do not match: %w", e.Set, errInvalid)
	}
	if e.To.IsValid() && proxy.FamilyOf(e.To.Addr()) != t.family {
		return fmt.Errorf("target %s in map %s: %w", e.To, e.Set, errInvalid)
	}
	if len(e.Key) != len(s.Key) {
		return fmt.Errorf("key of %d fields in set %s of %d: %w", len(e.Key), e.Set, len(s.Key), errInvalid)
	}
	for i, v := range e.Key {
		var ok bool
		switch s.Key[i] {
		case KeyAddr:
			ok = v.Addr.IsValid() && proxy.FamilyOf(v.Addr) == t.family
		case KeyProto:
			_, err := protocolNumber(v.Proto)
			ok = !v.Addr.IsValid() && err == nil
		case KeyPort:
			ok = !v.Addr.IsValid() && v.Proto == ""
		}
		if !ok {
			return fmt.Errorf("key field %d of set %s: %w", i+1, e.Set, errInvalid)
		}
	}
	var w textWriter
	w.key(e, false)
	k := w.String()
	have := s.elements[k]
	switch verb {
	case Add:
		if s.Endpoints == "" && s.Map != (e.Goto != "") {
			return fmt.Errorf("element %s of %s: map and verdict do not match: %w", k, e.Set, errInvalid)
		}
		if e.Goto != "" {
			if err := t.target(e.Goto); err != nil {
				return err
			}
		}
		if have != nil && (have.Goto != e.Goto || have.To != e.To) {
			return fmt.Errorf("element %s of %s exists with another value: %w", k, e.Set, errBusy)
		}
		cp := *e // the fake keeps its own, whatever the caller does later
		s.elements[k] = &cp
		return nil
	case Delete:
		if have == nil {
			return fmt.Errorf("element %s of %s: %w", k, e.Set, errNotFound)
		}
		delete(s.elements, k)
		return nil
	}
	return fmt.Errorf("%s element: %w", verb, errNotSupp)
}

// validate walks from every base chain through jumps, gotos and verdict
// maps, as the kernel does at commit: it refuses loops and statements that
// the hook reaching them does not allow.
func (t *fakeTable) validate() error {
	for _, c := range t.chains {
		if c.Hook != nil {
			if err := t.walk(c.Hook, c, nil); err != nil {
				return fmt.Errorf("from %s: %w", c.Name, err)
			}
		}
	}
	return nil
}

func (t *fakeTable) walk(h *Hook, c *fakeChain, stack []string) error {
	if c == nil {
		return fmt.Errorf("a verdict leads to a missing chain: %w", errNotFound)
	}
	if slices.Contains(stack, c.Name) {
		return fmt.Errorf("%s leads back to itself: %w", strings.Join(append(stack, c.Name), " → "), errLoop)
	}
	stack = append(stack, c.Name)
	for _, r := range c.rules {
		for _, s := range r.Stmts {
			if err := allowed(h, s); err != nil {
				return fmt.Errorf("chain %s: %w", c.Name, err)
			}
			if target, ok := stmtChain(s); ok {
				if err := t.walk(h, t.chains[target], stack); err != nil {
					return err
				}
			}
			if v, ok := s.(VMap); ok {
				for _, e := range t.sets[v.Map].elements {
					if err := t.walk(h, t.chains[e.Goto], stack); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// allowed checks the statements that only some hooks take.
func allowed(h *Hook, s Stmt) error {
	ok := true
	switch s.(type) {
	case DNAT, DNATSlot:
		ok = h.Type == "nat" && (h.Hook == "prerouting" || h.Hook == "output")
	case Masquerade:
		ok = h.Type == "nat" && h.Hook == "postrouting"
	case Reject:
		ok = h.Hook == "input" || h.Hook == "forward" || h.Hook == "output" || h.Hook == "prerouting"
	}
	if !ok {
		return fmt.Errorf("%T in a %s %s chain: %w", s, h.Type, h.Hook, errNotSupp)
	}
	return nil
}

// ListTables implements Runner.
func (f *Fake) ListTables(context.Context) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var w textWriter
	for _, fam := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
		if f.tables[fam] != nil {
			w.str("table ", tableText(fam), "\n")
		}
	}
	return w.Bytes(), nil
}

// Dump prints the tables (ip, then ip6) as `nft list table` does, except for
// the order, which is stable: sets and maps by name, then base chains by
// name, then the other chains by name, and the elements of a set sorted.
func (f *Fake) Dump() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var w textWriter
	for _, fam := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
		if t := f.tables[fam]; t != nil {
			t.dump(&w)
		}
	}
	return w.String()
}

// DumpTable is Dump of one family's table; "" when there is none.
func (f *Fake) DumpTable(fam proxy.Family) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var w textWriter
	if t := f.tables[fam]; t != nil {
		t.dump(&w)
	}
	return w.String()
}

func (t *fakeTable) dump(w *textWriter) {
	w.str("table ", tableText(t.family), " {\n")
	first := true
	block := func() {
		if !first {
			w.str("\n")
		}
		first = false
	}
	for _, name := range slices.Sorted(maps.Keys(t.sets)) {
		s := t.sets[name]
		block()
		kind := "set"
		if s.Map {
			kind = "map"
		}
		w.str("\t", kind, " ", name, " {\n\t\t")
		w.setType(&s.Set)
		w.str("\n")
		if s.Timeout > 0 {
			w.str("\t\tsize ", strconv.Itoa(affinitySetSize), "\n\t\tflags dynamic,timeout\n\t\ttimeout ", duration(s.Timeout), "\n")
		}
		if len(s.elements) > 0 {
			w.str("\t\telements = { ")
			for i, k := range slices.Sorted(maps.Keys(s.elements)) {
				if i > 0 {
					w.str(",\n\t\t\t     ")
				}
				w.key(s.elements[k], true)
			}
			w.str(" }\n")
		}
		w.str("\t}\n")
	}
	names := slices.SortedFunc(maps.Keys(t.chains), func(a, b string) int {
		ba, bb := t.chains[a].Hook != nil, t.chains[b].Hook != nil
		if ba != bb {
			if ba {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, name := range names {
		c := t.chains[name]
		block()
		w.str("\tchain ", name, " {\n")
		if h := c.Hook; h != nil {
			w.str("\t\ttype ", h.Type, " hook ", h.Hook, " priority ", h.Priority, "; policy accept;\n")
		}
		for _, r := range c.rules {
			w.str("\t\t")
			w.stmts(r, true)
			w.str("\n")
		}
		w.str("\t}\n")
	}
	w.str("}\n")
}

// duration prints seconds as nft prints a timeout: "3h", "1m1s".
func duration(seconds uint32) string {
	var b strings.Builder
	for _, u := range []struct {
		s    uint32
		name string
	}{{86400, "d"}, {3600, "h"}, {60, "m"}, {1, "s"}} {
		if n := seconds / u.s; n > 0 {
			b.WriteString(strconv.Itoa(int(n)) + u.name)
			seconds -= n * u.s
		}
	}
	return b.String()
}
