package iptables

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/clusterdns/clusterdns/proxy"
)

// What iptables mode and IPVS mode share in the kernel's tables: both hook
// into the same built-in chains, own the chains named with their prefix,
// and masquerade what carries the mark. This is the one place that reads,
// hooks and removes what a mode owns.

// Chain name prefixes. Every chain clusterdns owns starts with ChainPrefix;
// IPVS mode's start with IPVSChainPrefix, so that each mode's cleanup can
// tell its own from the other's.
const (
	ChainPrefix     = "CDNS-"
	IPVSChainPrefix = "CDNS-IPVS-"
)

// The tables the modes write.
const (
	TableNAT    = "nat"
	TableFilter = "filter"
)

// tables are the tables a mode's chains live in, in the order a restore
// that removes them writes them.
var tables = [...]string{TableFilter, TableNAT}

// Hook is the one rule a mode puts in a built-in chain: a jump to a chain
// it owns. Everything else lives in chains it owns.
type Hook struct {
	Table, Chain string
	// Spec is the rule after "-A Chain"; it ends with "-j TARGET".
	Spec []string
}

// Target is the chain the hook jumps to.
func (h Hook) Target() string { return h.Spec[len(h.Spec)-1] }

// MarkHex is a mark as iptables rules write it: "0x2000".
func MarkHex(mark uint32) string { return "0x" + strconv.FormatUint(uint64(mark), 16) }

// Owned is what the kernel holds of one mode in one family, per table: the
// chains named with its prefix and the built-in chains' rules (as
// iptables-save writes them) that jump into them.
type Owned struct {
	Chains, Hooks map[string][]string
}

// ReadOwned lists, through one save per table, the chains named with
// prefix and the hooks into them, leaving out those named with except
// (empty for none).
func ReadOwned(ctx context.Context, r Runner, f proxy.Family, prefix, except string) (Owned, error) {
	o := Owned{Chains: make(map[string][]string), Hooks: make(map[string][]string)}
	for _, table := range tables {
		data, err := r.Save(ctx, f, table)
		if err != nil {
			return o, fmt.Errorf("list %s %s chains: %w", f, table, err)
		}
		o.Chains[table], o.Hooks[table] = ownedInSave(data, prefix, except)
	}
	return o, nil
}

// ownedInSave finds, in iptables-save output of one table, the chains named
// with prefix and the rules of other chains that jump into them.
func ownedInSave(data []byte, prefix, except string) (chains []string, hookRules []string) {
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case except != "" && (strings.HasPrefix(line, ":"+except) || strings.Contains(line, "-j "+except)):
		case strings.HasPrefix(line, ":"+prefix):
			name, _, _ := strings.Cut(line[1:], " ")
			chains = append(chains, name)
		case strings.HasPrefix(line, "-A ") && !strings.HasPrefix(line, "-A "+prefix) && strings.Contains(line, "-j "+prefix):
			hookRules = append(hookRules, line)
		}
	}
	return chains, hookRules
}

// hasHook reports whether the kernel's hook rules of a table have a jump
// from chain to target.
func (o Owned) hasHook(table, chain, target string) bool {
	for _, l := range o.Hooks[table] {
		if strings.HasPrefix(l, "-A "+chain+" ") && strings.HasSuffix(strings.TrimSpace(l), "-j "+target) {
			return true
		}
	}
	return false
}

// EnsureHooks inserts, first in their chains, the hooks that o lacks,
// creating the chains they jump to when those do not exist yet. A present
// hook costs no command: with iptables-legacy every command rewrites the
// whole table.
func EnsureHooks(ctx context.Context, r Runner, f proxy.Family, hooks []Hook, o Owned) error {
	for _, h := range hooks {
		if o.hasHook(h.Table, h.Chain, h.Target()) {
			continue
		}
		// -N fails when the chain exists, which is fine: it only has to exist.
		_ = r.Run(ctx, f, "-t", h.Table, "-N", h.Target())
		insert := append([]string{"-t", h.Table, "-I", h.Chain, "1"}, h.Spec...)
		if err := r.Run(ctx, f, insert...); err != nil {
			return fmt.Errorf("hook %s %s: %w", h.Table, h.Chain, err)
		}
	}
	return nil
}

// RemoveOwned deletes the hooks and chains of o in one restore; with
// nothing to remove it runs nothing.
func RemoveOwned(ctx context.Context, r Runner, f proxy.Family, o Owned) error {
	var in bytes.Buffer
	for _, table := range tables {
		chains, hookRules := o.Chains[table], o.Hooks[table]
		if len(chains) == 0 && len(hookRules) == 0 {
			continue
		}
		in.WriteString("*" + table + "\n")
		for _, c := range chains {
			declare(&in, c)
		}
		for _, rule := range hookRules {
			in.WriteString("-D " + strings.TrimPrefix(rule, "-A ") + "\n")
		}
		for _, c := range chains {
			in.WriteString("-X " + c + "\n")
		}
		in.WriteString("COMMIT\n")
	}
	if in.Len() == 0 {
		return nil
	}
	if err := r.Restore(ctx, f, in.Bytes()); err != nil {
		return fmt.Errorf("remove %s chains: %w", f, err)
	}
	return nil
}
