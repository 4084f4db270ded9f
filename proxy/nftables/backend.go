package nftables

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/clusterdns/clusterdns/proxy"
)

// Config configures the backend. Its fields mean what they mean in iptables
// mode.
type Config struct {
	Runner Runner
	// Families lists the families to program; nil means IPv4 and IPv6.
	Families []proxy.Family
	// Routing holds the options all modes share.
	proxy.Routing
	Logger *slog.Logger
}

// Backend is the nftables proxy.Backend.
type Backend struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex // protects the following fields
	families []*familyState
	// trusted is false until a sync succeeded, and again after a failure:
	// the next sync then replaces the tables whole.
	trusted bool
	// modelID is the ID of the model programmed last.
	modelID uint64
	tx      txBuilder
}

var _ proxy.Backend = (*Backend)(nil)

// familyState is what the backend programmed in one family's table.
type familyState struct {
	r         *renderer
	ports     map[proxy.PortKey]*portObjects
	baseRules int
	portRules int // rules and map elements the ports own
	// hairpin counts, per endpoint address, the service ports that have
	// it: the address pair is in the hairpin set while any port has it.
	// It is updated while a transaction is planned; a failed sync makes the
	// next one start over.
	hairpin map[netip.Addr]int
	// claims names, per map element key ("map key"), the service port whose
	// element it is. Two ports claiming one key (two Services of a manifests
	// folder with one cluster IP, say) would fail every transaction; the
	// first keeps it, the other's element is left out (and logged) until
	// it changes or the next full sync. Reset with the maps, like hairpin.
	claims map[claimKey]proxy.PortKey
	// conflicts lists the claims refused while planning, for the log.
	conflicts []string
	// slots hands out the blocks of the endpoints map. Like hairpin, it is
	// updated while a transaction is planned and starts over with the maps.
	slots slotAlloc
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
	for _, f := range cfg.Families {
		b.families = append(b.families, &familyState{r: newRenderer(f, &cfg), ports: make(map[proxy.PortKey]*portObjects), hairpin: make(map[netip.Addr]int),
			claims: make(map[claimKey]proxy.PortKey)})
	}
	return b
}

// Name implements proxy.Backend.
func (b *Backend) Name() string { return "nftables" }

// Sync implements proxy.Backend: one nft transaction for both families.
func (b *Backend) Sync(ctx context.Context, m *proxy.Model, full bool) (proxy.SyncResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fresh := !b.trusted
	plans := b.plan(m, full || fresh, fresh)
	for _, st := range b.families {
		for _, c := range st.conflicts {
			b.log.Warn("nftables: two service ports want one map key; the first keeps it", "conflict", c)
		}
		st.conflicts = st.conflicts[:0]
	}
	var res proxy.SyncResult
	if tx := b.tx.transaction(); len(tx.Ops) > 0 {
		if err := b.cfg.Runner.Apply(ctx, tx); err != nil {
			b.trusted = false
			return res, fmt.Errorf("nftables: sync: %w", err)
		}
	}
	b.trusted, b.modelID = true, m.ID
	for i, st := range b.families {
		st.commit(plans[i])
		res.Rewritten += len(plans[i].updates)
		res.Rules += st.baseRules + st.portRules + len(st.hairpin)
	}
	return res, nil
}

// DryRun writes, as an nft script, the transaction the first sync of m
// would apply.
func (b *Backend) DryRun(m *proxy.Model, w io.Writer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	saved := b.families
	b.families = nil
	for _, st := range saved {
		b.families = append(b.families, &familyState{r: st.r, ports: make(map[proxy.PortKey]*portObjects), hairpin: make(map[netip.Addr]int),
			claims: make(map[claimKey]proxy.PortKey)})
	}
	defer func() { b.families = saved }()
	b.plan(m, true, true)
	_, err := w.Write(b.tx.transaction().Script())
	return err
}

// familyPlan is what one family's part of a transaction changes.
type familyPlan struct {
	fresh     bool
	baseRules int // set when the base objects were written
	updates   []*portObjects
	removals  []proxy.PortKey
}

// plan builds in b.tx the transaction that makes the tables match m: with full,
// every object (and, with fresh, the tables replaced whole); otherwise only
// the service ports that changed since the model programmed last.
func (b *Backend) plan(m *proxy.Model, full, fresh bool) []*familyPlan {
	s := &b.tx
	s.reset(full)
	plans := make([]*familyPlan, len(b.families))
	for i, st := range b.families {
		p := &familyPlan{fresh: fresh}
		plans[i] = p
		r := st.r
		if full {
			table := &Table{Family: r.Family}
			s.head = append(s.head, Op{Add, table})
			if fresh {
				s.head = append(s.head, Op{Delete, table}, Op{Add, table})
			}
			if fresh {
				st.slots.shards = 0 // the table is new: its maps too
			}
			ports := 0
			for _, sp := range m.Ports {
				if sp.Key.Family == r.Family {
					ports++
				}
			}
			st.slots.setShards(ports)
			p.baseRules = r.baseObjects(s, !fresh, st.slots.shards)
			// The hairpin set was emptied; every port adds its pairs.
			st.hairpin = make(map[netip.Addr]int, len(st.hairpin))
			st.claims = make(map[claimKey]proxy.PortKey, len(st.claims))
			st.slots.reset()
		}
		old := st.ports
		if fresh {
			old = nil // the table is replaced: nothing of it is left
		}
		consider := func(k proxy.PortKey, sp *proxy.ServicePort) {
			prev := old[k]
			if sp == nil {
				if prev != nil {
					p.removals = append(p.removals, k)
					st.write(s, prev, nil, full)
				}
				return
			}
			if !full && prev != nil && (prev.sp == sp || prev.sp.Equal(sp)) {
				return
			}
			var blocks []roleBlock
			if prev != nil && !full {
				blocks = prev.blocks
			}
			cur := r.render(sp, blocks, &st.slots)
			st.write(s, prev, cur, full)
			p.updates = append(p.updates, cur)
		}
		in := func(f proxy.Family) bool { return f == r.Family }
		if !full {
			for _, k := range proxy.ChangedPorts(m, b.modelID, old, in) {
				consider(k, m.Lookup(k))
			}
			continue
		}
		// A full sync rewrites every port, and removes those m lacks.
		for _, sp := range m.Ports {
			if in(sp.Key.Family) {
				consider(sp.Key, sp)
			}
		}
		for k := range old {
			if m.Lookup(k) == nil {
				consider(k, nil)
			}
		}
	}
	return plans
}

// Programmed is the service port the objects were rendered from.
func (o *portObjects) Programmed() *proxy.ServicePort { return o.sp }

// write adds to the transaction what turns prev (nil: nothing) into cur
// (nil: nothing). With full, the maps were emptied and the base chains
// rewritten, so every element and chain of cur is written, not just the
// different ones.
func (st *familyState) write(s *txBuilder, prev, cur *portObjects, full bool) {
	var prevSets, curSets []Set
	var prevChains, curChains []portChain
	var prevElements, curElements []Element
	if prev != nil {
		prevSets, prevChains, prevElements = prev.sets, prev.chains, prev.elements
	}
	if cur != nil {
		st.claim(cur)
		curSets, curChains, curElements = cur.sets, cur.chains, cur.elements
	}
	if prev != nil && !full {
		for i := range prevElements {
			e := &prevElements[i]
			if k := claimOf(e); st.claims[k] == prev.sp.Key && (cur == nil || !hasElementKey(curElements, e)) {
				delete(st.claims, k)
			}
		}
	}

	for i := range curSets {
		if full || !hasSet(prevSets, curSets[i].Name) {
			s.sets = append(s.sets, Op{Add, &curSets[i]})
		}
	}
	for i := range curChains {
		c := &curChains[i]
		old := findChain(prevChains, c.Name)
		if !full && old != nil && rulesEqual(old.rules, c.rules) {
			continue
		}
		s.chains = append(s.chains, Op{Add, &c.Chain})
		if old != nil || (full && prev != nil) {
			s.chains = append(s.chains, Op{Flush, &c.Chain})
		}
		for j := range c.rules {
			s.chains = append(s.chains, Op{Add, &c.rules[j]})
		}
	}
	if !full {
		for i := range prevElements {
			if !hasElement(curElements, &prevElements[i]) {
				s.unmap = append(s.unmap, Op{Delete, &prevElements[i]})
			}
		}
	}
	for i := range curElements {
		if full || !hasElement(prevElements, &curElements[i]) {
			s.mapAdd = append(s.mapAdd, Op{Add, &curElements[i]})
		}
	}
	st.writeSlots(s, prev, cur, full)
	st.writeHairpin(s, prev, cur, full)
	for i := range prevChains {
		if c := &prevChains[i]; findChain(curChains, c.Name) == nil {
			s.flush = append(s.flush, Op{Flush, &c.Chain})
			s.drop = append(s.drop, Op{Delete, &c.Chain})
		}
	}
	for i := range prevSets {
		if !hasSet(curSets, prevSets[i].Name) {
			s.dropSets = append(s.dropSets, Op{Delete, &prevSets[i]})
		}
	}
}

// writeSlots replaces the endpoints map elements that changed between prev
// and cur (with full, the map was emptied: all of cur's are added) and
// frees the blocks prev had and cur does not keep.
func (st *familyState) writeSlots(s *txBuilder, prev, cur *portObjects, full bool) {
	var had, has []Element
	var blocks []roleBlock
	if prev != nil && !full {
		had, blocks = prev.slots, prev.blocks
	}
	if cur != nil {
		has = cur.slots
	}
	for i := range had {
		if !hasSlot(has, &had[i]) {
			s.unmap = append(s.unmap, Op{Delete, &had[i]})
		}
	}
	for i := range has {
		if !hasSlot(had, &has[i]) {
			s.mapAdd = append(s.mapAdd, Op{Add, &has[i]})
		}
	}
	for _, b := range blocks {
		if cur == nil || !slices.ContainsFunc(cur.blocks, func(c roleBlock) bool { return c.block == b.block }) {
			st.slots.put(b.block)
		}
	}
}

// writeHairpin counts the endpoint addresses cur has and prev had (with
// full, prev is gone from the set already) and adds the pairs that became
// wanted and removes those no port wants any more.
func (st *familyState) writeHairpin(s *txBuilder, prev, cur *portObjects, full bool) {
	var had, has []netip.Addr
	if prev != nil && !full {
		had = prev.hairpin
	}
	if cur != nil {
		has = cur.hairpin
	}
	pair := func(a netip.Addr) *Element {
		// One allocation for the element and its key.
		p := &struct {
			e Element
			k [2]Value
		}{k: [2]Value{{Addr: a}, {Addr: a}}}
		p.e = Element{Family: st.r.Family, Set: setHairpin, Key: p.k[:]}
		return &p.e
	}
	for _, a := range has {
		if slices.Contains(had, a) {
			continue
		}
		if st.hairpin[a]++; st.hairpin[a] == 1 {
			s.mapAdd = append(s.mapAdd, Op{Add, pair(a)})
		}
	}
	for _, a := range had {
		if slices.Contains(has, a) {
			continue
		}
		if st.hairpin[a]--; st.hairpin[a] == 0 {
			delete(st.hairpin, a)
			s.unmap = append(s.unmap, Op{Delete, pair(a)})
		}
	}
}

// claimKey identifies a map element by map and key; the maps' keys have at
// most three fields.
type claimKey struct {
	set string
	key [3]Value
}

func claimOf(e *Element) claimKey {
	k := claimKey{set: e.Set}
	copy(k.key[:], e.Key)
	return k
}

// claim takes the keys of o's elements that no other port holds and drops
// from o the elements whose keys another port holds, so that o records only
// what it programs.
func (st *familyState) claim(o *portObjects) {
	kept := o.elements[:0]
	for _, e := range o.elements {
		k := claimOf(&e)
		if owner, ok := st.claims[k]; ok && owner != o.sp.Key {
			var w textWriter
			w.key(&e, false)
			st.conflicts = append(st.conflicts, fmt.Sprintf("%s %s wanted by %s, held by %s", e.Set, w.String(), o.sp.Key, owner))
			continue
		}
		st.claims[k] = o.sp.Key
		kept = append(kept, e)
	}
	o.elements = kept
}

func keyEqual(a, b []Value) bool { return slices.Equal(a, b) }

func hasElementKey(elements []Element, e *Element) bool {
	for i := range elements {
		if o := &elements[i]; o.Set == e.Set && keyEqual(o.Key, e.Key) {
			return true
		}
	}
	return false
}

func hasElement(elements []Element, e *Element) bool {
	for i := range elements {
		if o := &elements[i]; o.Set == e.Set && o.Goto == e.Goto && keyEqual(o.Key, e.Key) {
			return true
		}
	}
	return false
}

func hasSlot(elements []Element, e *Element) bool {
	for i := range elements {
		if o := &elements[i]; o.Slot == e.Slot && o.To == e.To {
			return true
		}
	}
	return false
}

func findChain(chains []portChain, name string) *portChain {
	for i := range chains {
		if chains[i].Name == name {
			return &chains[i]
		}
	}
	return nil
}

func hasSet(sets []Set, name string) bool {
	for _, s := range sets {
		if s.Name == name {
			return true
		}
	}
	return false
}

// commit records an applied plan.
func (st *familyState) commit(p *familyPlan) {
	if p.fresh {
		st.ports = make(map[proxy.PortKey]*portObjects, len(p.updates))
		st.portRules = 0
	}
	if p.baseRules > 0 {
		st.baseRules = p.baseRules
	}
	for _, k := range p.removals {
		st.portRules -= st.ports[k].rules()
		delete(st.ports, k)
	}
	for _, o := range p.updates {
		if old := st.ports[o.sp.Key]; old != nil {
			st.portRules -= old.rules()
		}
		st.portRules += o.rules()
		st.ports[o.sp.Key] = o
	}
}

// Cleanup implements proxy.Backend: it deletes the backend's tables.
func (b *Backend) Cleanup(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trusted = false
	listing, err := b.cfg.Runner.ListTables(ctx)
	if err != nil {
		return fmt.Errorf("nftables: cleanup: %w", err)
	}
	tx := &Transaction{Full: true}
	for _, line := range strings.Split(string(listing), "\n") {
		switch strings.TrimSpace(line) {
		case "table ip " + TableName:
			tx.Ops = append(tx.Ops, Op{Delete, &Table{Family: proxy.IPv4}})
		case "table ip6 " + TableName:
			tx.Ops = append(tx.Ops, Op{Delete, &Table{Family: proxy.IPv6}})
		}
	}
	if len(tx.Ops) == 0 {
		return nil
	}
	if err := b.cfg.Runner.Apply(ctx, tx); err != nil {
		return fmt.Errorf("nftables: cleanup: %w", err)
	}
	return nil
}
