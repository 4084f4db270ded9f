package iptables

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/clusterdns/clusterdns/proxy"
)

// FakeRunner is an in-memory iptables for tests. It applies restore input
// the way iptables-restore --noflush does (a table changes at its COMMIT, or
// not at all), checks what the kernel would refuse (a rule in a missing chain,
// a jump to a missing chain, deleting a chain that is not empty or still
// referenced) and records every input.
type FakeRunner struct {
	mu sync.Mutex // protects the following fields
	// Restores lists every restore input, in order.
	Restores []FakeRestore
	// FailRestores makes that many of the next restores fail.
	FailRestores int
	// Saves counts Save calls; Runs counts Run calls (single commands).
	Saves  int
	Runs   int
	tables map[proxy.Family]map[string]*fakeTable
}

// FakeRestore is one recorded restore input.
type FakeRestore struct {
	Family proxy.Family
	Data   string
}

type fakeTable struct {
	builtin []string
	chains  map[string][]string // chain -> rules, each "args" after "-A CHAIN "
}

func (t *fakeTable) clone() *fakeTable {
	c := &fakeTable{builtin: t.builtin, chains: make(map[string][]string, len(t.chains))}
	for k, v := range t.chains {
		c.chains[k] = slices.Clone(v)
	}
	return c
}

var errFakeRestore = errors.New("fake: restore failed on purpose")

// NewFakeRunner returns empty tables with the built-in chains.
func NewFakeRunner() *FakeRunner {
	f := &FakeRunner{tables: make(map[proxy.Family]map[string]*fakeTable)}
	for _, fam := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
		f.tables[fam] = map[string]*fakeTable{
			TableNAT:    newFakeTable("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
			TableFilter: newFakeTable("INPUT", "FORWARD", "OUTPUT"),
		}
	}
	return f
}

func newFakeTable(builtin ...string) *fakeTable {
	t := &fakeTable{builtin: builtin, chains: make(map[string][]string)}
	for _, b := range builtin {
		t.chains[b] = nil
	}
	return t
}

// Restore implements Runner.
func (f *FakeRunner) Restore(_ context.Context, family proxy.Family, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Restores = append(f.Restores, FakeRestore{Family: family, Data: string(data)})
	if f.FailRestores > 0 {
		f.FailRestores--
		return errFakeRestore
	}
	var cur *fakeTable
	var name string
	for i, line := range strings.Split(string(data), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("fake iptables-restore: line %d (%q): %s", i+1, line, fmt.Sprintf(format, args...))
		}
		switch {
		case line[0] == '*':
			name = line[1:]
			t, ok := f.tables[family][name]
			if !ok {
				return fail("unknown table")
			}
			cur = t.clone()
			continue
		case cur == nil:
			return fail("outside a table")
		case line == "COMMIT":
			f.tables[family][name] = cur
			cur = nil
			continue
		}
		if err := cur.apply(line); err != nil {
			return fail("%v", err)
		}
	}
	if cur != nil {
		return errors.New("fake iptables-restore: missing COMMIT")
	}
	return nil
}

// apply runs one restore line (or one iptables command, in restore syntax).
func (t *fakeTable) apply(line string) error {
	if line[0] == ':' {
		chain, _, _ := strings.Cut(line[1:], " ")
		if slices.Contains(t.builtin, chain) {
			return nil
		}
		t.chains[chain] = nil // create or flush
		return nil
	}
	op, rest, _ := strings.Cut(line, " ")
	chain, rule, _ := strings.Cut(rest, " ")
	rules, ok := t.chains[chain]
	if !ok && op != "-N" {
		return fmt.Errorf("no chain %s", chain)
	}
	if op == "-N" {
		if _, exists := t.chains[chain]; exists || slices.Contains(t.builtin, chain) {
			return errors.New("chain already exists")
		}
		t.chains[chain] = nil
		return nil
	}
	switch op {
	case "-A", "-I":
		if target := jumpTarget(rule); strings.HasPrefix(target, ChainPrefix) {
			if _, ok := t.chains[target]; !ok {
				return fmt.Errorf("jump to missing chain %s", target)
			}
		}
		if op == "-A" {
			t.chains[chain] = append(rules, rule)
		} else {
			if n, r, ok := strings.Cut(rule, " "); ok && n == "1" {
				rule = r
			}
			t.chains[chain] = append([]string{rule}, rules...)
		}
	case "-D":
		i := slices.Index(rules, rule)
		if i < 0 {
			return errors.New("no such rule to delete")
		}
		t.chains[chain] = slices.Delete(rules, i, i+1)
	case "-C":
		if !slices.Contains(rules, rule) {
			return errors.New("no such rule")
		}
	case "-X":
		if len(rules) > 0 {
			return fmt.Errorf("chain %s is not empty", chain)
		}
		for other, list := range t.chains {
			for _, r := range list {
				if jumpTarget(r) == chain {
					return fmt.Errorf("chain %s is referenced from %s", chain, other)
				}
			}
		}
		delete(t.chains, chain)
	default:
		return fmt.Errorf("unknown command %s", op)
	}
	return nil
}

// jumpTarget is the -j target of a rule.
func jumpTarget(rule string) string {
	i := strings.LastIndex(rule, "-j ")
	if i < 0 {
		return ""
	}
	target, _, _ := strings.Cut(rule[i+3:], " ")
	return target
}

// Save implements Runner, in iptables-save's layout.
func (f *FakeRunner) Save(_ context.Context, family proxy.Family, table string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Saves++
	t, ok := f.tables[family][table]
	if !ok {
		return nil, fmt.Errorf("fake iptables-save: no table %s", table)
	}
	return []byte(t.dump(table)), nil
}

func (t *fakeTable) dump(table string) string {
	var own []string
	for c := range t.chains {
		if !slices.Contains(t.builtin, c) {
			own = append(own, c)
		}
	}
	sort.Strings(own)
	var b strings.Builder
	b.WriteString("*" + table + "\n")
	for _, c := range t.builtin {
		b.WriteString(":" + c + " ACCEPT [0:0]\n")
	}
	for _, c := range own {
		b.WriteString(":" + c + " - [0:0]\n")
	}
	for _, c := range append(slices.Clone(t.builtin), own...) {
		for _, r := range t.chains[c] {
			b.WriteString("-A " + c + " " + r + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// Run implements Runner for the commands the backend issues: -t TABLE with
// -C, -I or -D of one rule.
func (f *FakeRunner) Run(_ context.Context, family proxy.Family, args ...string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Runs++
	table := TableFilter
	if len(args) >= 2 && args[0] == "-t" {
		table, args = args[1], args[2:]
	}
	t, ok := f.tables[family][table]
	if !ok {
		return fmt.Errorf("fake iptables: no table %s", table)
	}
	if len(args) < 2 {
		return fmt.Errorf("fake iptables: bad arguments %q", args)
	}
	c := t.clone()
	if err := c.apply(args[0] + " " + args[1] + " " + quoteArgs(args[2:])); err != nil {
		return fmt.Errorf("fake iptables: %w", err)
	}
	f.tables[family][table] = c
	return nil
}

// Dump returns both tables of a family (filter, then nat) as iptables-save
// would print them.
func (f *FakeRunner) Dump(family proxy.Family) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tables[family][TableFilter].dump(TableFilter) + f.tables[family][TableNAT].dump(TableNAT)
}

// RuleCount counts the rules in a family's tables, built-in chains included.
func (f *FakeRunner) RuleCount(family proxy.Family) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, t := range f.tables[family] {
		for _, rules := range t.chains {
			n += len(rules)
		}
	}
	return n
}

var _ Runner = (*FakeRunner)(nil)
