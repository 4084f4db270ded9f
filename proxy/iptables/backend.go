package iptables

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/clusterdns/clusterdns/proxy"
)

// Config configures the backend.
type Config struct {
	Runner Runner
	// Families lists the families to program; nil means IPv4 and IPv6.
	Families []proxy.Family
	// Routing holds the options all modes share.
	proxy.Routing
	Logger *slog.Logger
}

// Backend is the iptables proxy.Backend.
type Backend struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex // protects the following fields
	families []*familyState
}

var _ proxy.Backend = (*Backend)(nil)

// familyState is what the backend programmed in one family's tables.
type familyState struct {
	family proxy.Family
	r      *renderer
	ports  map[proxy.PortKey]*portState
	// Rule counts: base chains, the dispatch chains (nat and filter) and the
	// chains service ports own.
	baseRules, natDispatchRules, filterDispatchRules, portRules int
	// trusted is false until the kernel's chains have been listed once, and
	// again after a failure: the next full sync then lists them and deletes
	// every CDNS- chain it does not want.
	trusted bool
	// modelID is the ID of the model programmed last.
	modelID uint64

	// Buffers reused across syncs.
	natDecl, natBase, natDispatch, natPorts, natDel, filterDecl, filterRules, out bytes.Buffer
}

// New returns the backend. Nothing touches the kernel until the first Sync.
func New(cfg Config) *Backend {
	if cfg.Families == nil {
		cfg.Families = []proxy.Family{proxy.IPv4, proxy.IPv6}
	}
	b := &Backend{cfg: cfg, log: cfg.Logger}
	if b.log == nil {
		b.log = slog.Default()
	}
	b.reset()
	return b
}

func (b *Backend) reset() {
	b.families = b.families[:0]
	for _, f := range b.cfg.Families {
		b.families = append(b.families, &familyState{family: f, r: newRenderer(f, &b.cfg), ports: make(map[proxy.PortKey]*portState)})
	}
}

// Name implements proxy.Backend.
func (b *Backend) Name() string { return "iptables" }

// Sync implements proxy.Backend: one iptables-restore per family with changes.
func (b *Backend) Sync(ctx context.Context, m *proxy.Model, full bool) (proxy.SyncResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var res proxy.SyncResult
	for _, st := range b.families {
		// A family whose kernel state is not known (at start, after a
		// failure) gets a full sync, which lists the chains first.
		fullSync := full || !st.trusted
		var existing map[string][]string
		if fullSync {
			// Read the kernel's tables once: the chains we own (needed when
			// our memory of them is not trusted) and which hook rules exist.
			// Missing hooks go in before the restore, while a fresh table is
			// still small: with iptables-legacy every later command rewrites
			// the whole table.
			owned, err := ReadOwned(ctx, b.cfg.Runner, st.family, ChainPrefix, IPVSChainPrefix)
			if err != nil {
				st.trusted = false
				return res, fmt.Errorf("iptables: %w", err)
			}
			if !st.trusted {
				existing = owned.Chains
			}
			if err := EnsureHooks(ctx, b.cfg.Runner, st.family, hooks(), owned); err != nil {
				st.trusted = false
				return res, fmt.Errorf("iptables: %w", err)
			}
		}
		p := st.plan(m, fullSync, existing, &b.cfg)
		if p.data != nil {
			if err := b.cfg.Runner.Restore(ctx, st.family, p.data); err != nil {
				st.trusted = false
				return res, fmt.Errorf("iptables: sync %s: %w", st.family, err)
			}
		}
		st.commit(p)
		if fullSync {
			st.trusted = true
		}
		res.Rewritten += len(p.updates)
		res.Rules += st.baseRules + st.natDispatchRules + st.filterDispatchRules + st.portRules
	}
	return res, nil
}

// plan is one family's transaction: the restore input and the state changes
// to keep once it applied.
type plan struct {
	data     []byte
	updates  []*portState
	removals []proxy.PortKey
	full     bool
	modelID  uint64
	// natDispatch and filterDispatch say which dispatch chains were
	// rewritten.
	natDispatch, filterDispatch bool
	// natDispatchRules, filterDispatchRules are the new totals when rewritten.
	natDispatchRules, filterDispatchRules int
}

// plan renders what must change for the family's ports to match m.
// existing, when not nil, lists the chains the kernel has per table.
func (st *familyState) plan(m *proxy.Model, full bool, existing map[string][]string, cfg *Config) *plan {
	p := &plan{full: full, modelID: m.ID}
	r := st.r
	for _, buf := range []*bytes.Buffer{&st.natDecl, &st.natBase, &st.natDispatch, &st.natPorts, &st.natDel, &st.filterDecl, &st.filterRules, &st.out} {
		buf.Reset()
	}
	natDispatch, filterDispatch := full, full
	var changed map[proxy.PortKey]*portState
	var deleted []string // chains this plan deletes
	// consider renders one port that may have changed; sp nil means the
	// port is gone.
	consider := func(k proxy.PortKey, sp *proxy.ServicePort) {
		old := st.ports[k]
		if sp == nil {
			if old == nil {
				return
			}
			p.removals = append(p.removals, k)
			natDispatch = true
			if len(old.filterDispatch) > 0 {
				filterDispatch = true
			}
			deleted = deleteGone(old.chains(), nil, &st.natDecl, &st.natDel, deleted)
			return
		}
		if !full && old != nil && (old.sp == sp || old.sp.Equal(sp)) {
			return
		}
		ps := r.renderPort(sp, cfg, &st.natDecl, &st.natPorts)
		if old == nil || !bytes.Equal(old.natDispatch, ps.natDispatch) || !bytes.Equal(old.nodePortDispatch, ps.nodePortDispatch) {
			natDispatch = true
		}
		if old == nil || !bytes.Equal(old.filterDispatch, ps.filterDispatch) {
			filterDispatch = true
		}
		if old != nil {
			deleted = deleteGone(old.chains(), ps.chains(), &st.natDecl, &st.natDel, deleted)
		}
		p.updates = append(p.updates, ps)
		if changed == nil {
			changed = make(map[proxy.PortKey]*portState)
		}
		changed[k] = ps
	}
	if full {
		for _, sp := range m.Ports {
			if sp.Key.Family == st.family {
				consider(sp.Key, sp)
			}
		}
		for k := range st.ports {
			if m.Lookup(k) == nil {
				consider(k, nil)
			}
		}
	} else {
		for _, k := range proxy.ChangedPorts(m, st.modelID, st.ports, st.family.Is) {
			consider(k, m.Lookup(k))
		}
	}
	// current returns the state a port will have after this plan.
	current := func(k proxy.PortKey) *portState {
		if ps, ok := changed[k]; ok {
			return ps
		}
		return st.ports[k]
	}
	if full {
		r.writeBase(&st.natDecl, &st.natBase)
	}
	// dispatch writes a dispatch chain: every port's lines of it, in model
	// order, and counts the rules.
	dispatch := func(out *bytes.Buffer, lines func(*portState) ([]byte, int)) int {
		rules := 0
		for _, sp := range m.Ports {
			if sp.Key.Family == st.family {
				b, n := lines(current(sp.Key))
				out.Write(b)
				rules += n
			}
		}
		return rules
	}
	if natDispatch {
		declare(&st.natDecl, chainServices)
		declare(&st.natDecl, chainNodePorts)
		rules := dispatch(&st.natDispatch, func(ps *portState) ([]byte, int) { return ps.natDispatch, ps.natDispatchRules })
		rules += r.writeNodePortJump(&st.natDispatch, cfg)
		// The node port lines are counted in natDispatchRules.
		dispatch(&st.natDispatch, func(ps *portState) ([]byte, int) { return ps.nodePortDispatch, 0 })
		p.natDispatch, p.natDispatchRules = true, rules
	}
	if filterDispatch {
		declare(&st.filterDecl, chainServices)
		p.filterDispatch = true
		p.filterDispatchRules = dispatch(&st.filterRules, func(ps *portState) ([]byte, int) { return ps.filterDispatch, ps.filterDispatchRules })
	}
	if existing != nil {
		// Leftovers from an earlier run or a failed sync: every CDNS- chain
		// the plan does not write.
		want := map[string]bool{chainServices: true, chainNodePorts: true, chainPostrouting: true, chainMarkMasq: true}
		for _, ps := range changed {
			for _, c := range ps.chains() {
				want[c] = true
			}
		}
		for _, c := range deleted {
			want[c] = true // already on its way out
		}
		for _, c := range existing[TableNAT] {
			if !want[c] {
				declare(&st.natDecl, c)
				st.natDel.WriteString("-X " + c + "\n")
			}
		}
		for _, c := range existing[TableFilter] {
			if c != chainServices {
				declare(&st.filterDecl, c)
				st.filterRules.WriteString("-X " + c + "\n")
			}
		}
	}

	out := &st.out
	if st.filterDecl.Len() > 0 {
		out.WriteString("*filter\n")
		out.Write(st.filterDecl.Bytes())
		out.Write(st.filterRules.Bytes())
		out.WriteString("COMMIT\n")
	}
	if st.natDecl.Len() > 0 {
		out.WriteString("*nat\n")
		out.Write(st.natDecl.Bytes())
		out.Write(st.natBase.Bytes())
		out.Write(st.natDispatch.Bytes())
		out.Write(st.natPorts.Bytes())
		out.Write(st.natDel.Bytes())
		out.WriteString("COMMIT\n")
	}
	if out.Len() > 0 {
		p.data = out.Bytes()
	}
	return p
}

// deleteGone flushes and deletes the chains in old that are not in cur, and
// adds them to deleted.
func deleteGone(old, cur []string, decl, del *bytes.Buffer, deleted []string) []string {
	for _, c := range old {
		found := false
		for _, n := range cur {
			if n == c {
				found = true
				break
			}
		}
		if !found {
			declare(decl, c)
			del.WriteString("-X " + c + "\n")
			deleted = append(deleted, c)
		}
	}
	return deleted
}

// commit records an applied plan.
func (st *familyState) commit(p *plan) {
	st.modelID = p.modelID
	if p.full {
		st.baseRules = 4
	}
	for _, k := range p.removals {
		st.portRules -= st.ports[k].ownRules
		delete(st.ports, k)
	}
	for _, ps := range p.updates {
		if old := st.ports[ps.sp.Key]; old != nil {
			st.portRules -= old.ownRules
		}
		st.portRules += ps.ownRules
		st.ports[ps.sp.Key] = ps
	}
	if p.natDispatch {
		st.natDispatchRules = p.natDispatchRules
	}
	if p.filterDispatch {
		st.filterDispatchRules = p.filterDispatchRules
	}
}

// Cleanup implements proxy.Backend: for each family, one restore deletes the
// hook rules and every CDNS- chain found in the kernel, whoever made them,
// apart from IPVS mode's CDNS-IPVS- chains: cleaning up before IPVS mode
// starts must not cut its traffic, and its own cleanup removes them.
func (b *Backend) Cleanup(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range b.cfg.Families {
		owned, err := ReadOwned(ctx, b.cfg.Runner, f, ChainPrefix, IPVSChainPrefix)
		if err == nil {
			err = RemoveOwned(ctx, b.cfg.Runner, f, owned)
		}
		if err != nil {
			return fmt.Errorf("iptables: cleanup: %w", err)
		}
	}
	b.reset()
	return nil
}

// DryRun writes, for each family, the iptables-restore input a first full
// sync of m would apply, and the hook rules as comments. It changes nothing,
// in the kernel or in the backend.
func (b *Backend) DryRun(m *proxy.Model, w io.Writer) error {
	for _, f := range b.cfg.Families {
		st := &familyState{family: f, r: newRenderer(f, &b.cfg), ports: make(map[proxy.PortKey]*portState)}
		p := st.plan(m, true, nil, &b.cfg)
		tool := "iptables"
		if f == proxy.IPv6 {
			tool = "ip6tables"
		}
		if _, err := fmt.Fprintf(w, "# %s-restore --noflush input (%s)\n", tool, f); err != nil {
			return err
		}
		if _, err := w.Write(p.data); err != nil {
			return err
		}
		for _, h := range hooks() {
			if _, err := fmt.Fprintf(w, "# hook: %s -t %s -I %s 1 %s\n", tool, h.Table, h.Chain, quoteArgs(h.Spec)); err != nil {
				return err
			}
		}
	}
	return nil
}

func quoteArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \t\"") {
			a = `"` + a + `"`
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}
