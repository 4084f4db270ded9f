package ipvs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/iptables"
)

// DefaultDummyLink is the link that holds the service addresses.
const DefaultDummyLink = "cdns-ipvs0"

// Schedulers are the IPVS schedulers the backend accepts.
var Schedulers = []string{"rr", "lc", "dh", "sh", "sed", "nq", "wrr", "mh"}

// Config configures the backend.
type Config struct {
	// IPVS is the kernel's IPVS table. Nil means the kernel has none: Sync
	// fails and Cleanup skips it.
	IPVS   IPVS
	Links  Links
	IPSets IPSets
	Sysctl Sysctl
	// Runner runs iptables-restore for the few rules IPVS mode needs.
	Runner iptables.Runner
	// Families lists the families to program; nil means IPv4 and IPv6.
	Families []proxy.Family
	// Scheduler is the IPVS scheduler of every virtual server; empty is rr.
	Scheduler string
	// StrictARP makes the node answer ARP only for addresses on the link
	// asked on (arp_ignore=1, arp_announce=2), so the dummy link's addresses
	// are never announced.
	StrictARP bool
	// TCPTimeout, TCPFinTimeout and UDPTimeout are IPVS's connection
	// timeouts; zero keeps the kernel's.
	TCPTimeout, TCPFinTimeout, UDPTimeout time.Duration
	// Routing holds the options all modes share.
	proxy.Routing
	// DummyLink names the link holding service addresses; empty means
	// DefaultDummyLink.
	DummyLink string
	Logger    *slog.Logger
}

// Backend is the IPVS proxy.Backend.
type Backend struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex // protects the following fields
	st *state
}

var _ proxy.Backend = (*Backend)(nil)

// New returns the backend. Nothing touches the kernel until the first Sync.
func New(cfg Config) *Backend {
	if cfg.Families == nil {
		cfg.Families = []proxy.Family{proxy.IPv4, proxy.IPv6}
	}
	if cfg.Scheduler == "" {
		cfg.Scheduler = "rr"
	}
	if cfg.DummyLink == "" {
		cfg.DummyLink = DefaultDummyLink
	}
	b := &Backend{cfg: cfg, log: cfg.Logger}
	if b.log == nil {
		b.log = slog.Default()
	}
	return b
}

// Name implements proxy.Backend.
func (b *Backend) Name() string { return "ipvs" }

// setMember is one member of one set.
type setMember struct {
	set string
	m   Member
}

// wantVS is a virtual server as one service port wants it.
type wantVS struct {
	spec  VirtualServer
	reals []netip.AddrPort
}

// portPlan is what one service port needs in the kernel.
type portPlan struct {
	sp      *proxy.ServicePort
	vss     []wantVS
	addrs   []netip.Addr // on the dummy link
	members []setMember
}

// Programmed implements proxy.Programmed.
func (p *portPlan) Programmed() *proxy.ServicePort { return p.sp }

// programmed is a virtual server as the backend believes the kernel has it.
type programmed struct {
	spec VirtualServer
	// reals maps each real server to its weight; weight 0 is draining.
	reals map[netip.AddrPort]int
}

// state is what the backend has programmed.
type state struct {
	ports map[proxy.PortKey]*portPlan
	vs    map[VSKey]*programmed
	// addrRefs and memberRefs count the ports needing each dummy address and
	// set member (ports can share them).
	addrRefs   map[netip.Addr]int
	memberRefs map[setMember]int
	// draining lists the virtual servers with real servers at weight 0.
	draining map[VSKey]bool
	// nodeAddrs are the addresses node ports are served on, per family;
	// local are the node's addresses off the dummy link.
	nodeAddrs map[proxy.Family][]netip.Addr
	local     map[netip.Addr]bool
	modelID   uint64
	// objects counts the virtual and real servers programmed.
	objects int
}

func newState() *state {
	return &state{
		ports:      make(map[proxy.PortKey]*portPlan),
		vs:         make(map[VSKey]*programmed),
		addrRefs:   make(map[netip.Addr]int),
		memberRefs: make(map[setMember]int),
		draining:   make(map[VSKey]bool),
	}
}

func (b *Backend) wantsFamily(f proxy.Family) bool {
	for _, x := range b.cfg.Families {
		if x == f {
			return true
		}
	}
	return false
}

// plan renders one service port against the node's addresses.
//
// A virtual server has one list of real servers whatever the client, so
// where iptables and nftables modes send pods and the node to every
// endpoint of an externalTrafficPolicy Local Service (and outside clients
// to the local ones), IPVS mode sends all to the local ones; when there
// are none, to every endpoint, and a filter rule drops the traffic from
// outside the pods and the node.
func (b *Backend) plan(sp *proxy.ServicePort, st *state) *portPlan {
	f := sp.Key.Family
	proto := strings.ToLower(string(sp.Protocol))
	p := &portPlan{sp: sp}
	vs := func(addr netip.Addr, port uint16, reals []netip.AddrPort) {
		p.vss = append(p.vss, wantVS{
			spec: VirtualServer{
				Protocol:    string(sp.Protocol),
				Address:     netip.AddrPortFrom(addr, port),
				Scheduler:   b.cfg.Scheduler,
				Persistence: uint32(max(sp.AffinitySeconds, 0)),
			},
			reals: reals,
		})
	}
	member := func(role string, m Member) {
		p.members = append(p.members, setMember{setName(f, role), m})
	}
	external := sp.ExternalEndpoints
	externalDrop := false
	if sp.HasEndpoints() {
		if len(sp.Endpoints) == 0 {
			member(setDrop, Member{IP: sp.ClusterIP, Protocol: proto, Port: sp.Port})
		}
		if sp.External() && len(external) == 0 {
			external, externalDrop = sp.ClusterEndpoints, true
		}
	}
	// externalAddr is one external destination: its virtual server and
	// the sets that apply the external traffic policy to it.
	externalAddr := func(addr netip.Addr, port uint16, role string) {
		vs(addr, port, external)
		m := Member{IP: addr, Protocol: proto, Port: port}
		member(role, m)
		if sp.ExternalLocal {
			member(setExternalLocal, m)
		}
		if externalDrop {
			member(setExternalDrop, m)
		}
	}
	vs(sp.ClusterIP, sp.Port, sp.Endpoints)
	p.addrs = append(p.addrs, sp.ClusterIP)
	member(setClusterIP, Member{IP: sp.ClusterIP, Protocol: proto, Port: sp.Port})
	for _, ip := range sp.ExternalIPs {
		externalAddr(ip, sp.Port, setExternalIP)
		if !st.local[ip] {
			p.addrs = append(p.addrs, ip)
		}
	}
	for _, ip := range sp.LoadBalancerIPs {
		// A load balancer IP is served like an external IP.
		externalAddr(ip, sp.Port, setExternalIP)
		if !st.local[ip] {
			p.addrs = append(p.addrs, ip)
		}
		if !limitsSources(sp.SourceRanges, ip) {
			continue
		}
		m := Member{IP: ip, Protocol: proto, Port: sp.Port}
		member(setLBFirewall, m)
		for _, r := range sp.SourceRanges {
			if r.Addr().Is4() == ip.Is4() {
				member(setLBSourceCIDR, NetMember(ip, proto, sp.Port, r))
			}
		}
		member(setLBSourceIP, Member{IP: ip, Protocol: proto, Port: sp.Port, IP2: ip})
	}
	if sp.NodePort != 0 {
		for _, a := range st.nodeAddrs[f] {
			externalAddr(a, sp.NodePort, setNodePort)
		}
	}
	seen := make(map[netip.AddrPort]bool, len(sp.Endpoints))
	for _, l := range [][]netip.AddrPort{sp.Endpoints, external} {
		for _, ep := range l {
			if !seen[ep] {
				seen[ep] = true
				member(setLoopBack, Member{IP: ep.Addr(), Protocol: proto, Port: ep.Port(), IP2: ep.Addr()})
			}
		}
	}
	return p
}

// limitsSources reports whether ranges keep any source of lbIP's family
// out. A /0 of the family admits every one, and ipset takes no /0 network,
// so such a load balancer IP gets no firewall at all.
func limitsSources(ranges []netip.Prefix, lbIP netip.Addr) bool {
	limited := false
	for _, r := range ranges {
		if r.Addr().Is4() != lbIP.Is4() {
			continue
		}
		if r.Bits() == 0 {
			return false
		}
		limited = true
	}
	return limited
}

// readNodeAddrs lists the node's addresses off the dummy link, and those of
// them that serve node ports.
func (b *Backend) readNodeAddrs(st *state) error {
	addrs, err := b.cfg.Links.LocalAddrs()
	if err != nil {
		return fmt.Errorf("ipvs: node addresses: %w", err)
	}
	st.local = make(map[netip.Addr]bool)
	st.nodeAddrs = make(map[proxy.Family][]netip.Addr)
	for _, a := range addrs {
		if a.Link == b.cfg.DummyLink {
			continue
		}
		st.local[a.Addr] = true
		if a.Loopback || a.LinkLocal {
			continue
		}
		if len(b.cfg.NodePortAddresses) > 0 {
			in := false
			for _, p := range b.cfg.NodePortAddresses {
				in = in || p.Contains(a.Addr)
			}
			if !in {
				continue
			}
		}
		f := proxy.FamilyOf(a.Addr)
		st.nodeAddrs[f] = append(st.nodeAddrs[f], a.Addr)
	}
	for f := range st.nodeAddrs {
		list := st.nodeAddrs[f]
		sortAddrs(list)
		st.nodeAddrs[f] = compactAddrs(list)
	}
	return nil
}

// desired renders every port of m.
func (b *Backend) desired(m *proxy.Model, st *state) {
	for _, sp := range m.Ports {
		if !b.wantsFamily(sp.Key.Family) {
			continue
		}
		p := b.plan(sp, st)
		st.ports[sp.Key] = p
		for _, a := range p.addrs {
			st.addrRefs[a]++
		}
		for _, sm := range p.members {
			st.memberRefs[sm]++
		}
	}
}

// Sync implements proxy.Backend.
func (b *Backend) Sync(ctx context.Context, m *proxy.Model, full bool) (proxy.SyncResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cfg.IPVS == nil {
		return proxy.SyncResult{}, errors.New("ipvs: the kernel has no IPVS (is ip_vs loaded?)")
	}
	var (
		rewritten int
		err       error
	)
	if full || b.st == nil {
		rewritten, err = b.fullSync(ctx, m)
	} else {
		rewritten, err = b.partialSync(m)
	}
	if err != nil {
		// The kernel is now somewhere between the two states: the next sync
		// is a full one, which reads it back.
		b.st = nil
		return proxy.SyncResult{}, err
	}
	b.st.modelID = m.ID
	b.drain()
	return proxy.SyncResult{Rules: b.st.objects, Rewritten: rewritten}, nil
}

// settings are the kernel settings IPVS mode relies on.
func (b *Backend) settings() [][2]string {
	s := [][2]string{
		// Let netfilter see IPVS connections, so masquerade and the conntrack
		// cleanup of UDP flows work.
		{"net/ipv4/vs/conntrack", "1"},
		// Drop connections to a deleted real server at once instead of
		// blackholing them, and forget persistence to weight-0 servers.
		{"net/ipv4/vs/expire_nodest_conn", "1"},
		{"net/ipv4/vs/expire_quiescent_template", "1"},
		{"net/ipv4/ip_forward", "1"},
	}
	if b.cfg.StrictARP {
		s = append(s, [2]string{"net/ipv4/conf/all/arp_ignore", "1"}, [2]string{"net/ipv4/conf/all/arp_announce", "2"})
	}
	return s
}

// fullSync reads the kernel and makes it match m, in steps ordered so that
// traffic never meets a half-made state: the fixed settings and objects,
// the set members a new address needs, the rules, the virtual servers, the
// dummy link's addresses, and last the stale set members.
func (b *Backend) fullSync(ctx context.Context, m *proxy.Model) (int, error) {
	if err := b.ensureFixed(); err != nil {
		return 0, err
	}
	old := b.st
	st := newState()
	if err := b.readNodeAddrs(st); err != nil {
		return 0, err
	}
	b.desired(m, st)
	if old != nil {
		for k := range old.draining {
			st.draining[k] = true
		}
	}
	// Set members first, so that a new address never meets the filter
	// before its ports are allowed.
	stale, err := b.addSetMembers(st)
	if err != nil {
		return 0, err
	}
	if err := b.writeRules(ctx); err != nil {
		return 0, err
	}
	onDummy, err := b.dummyAddrs()
	if err != nil {
		return 0, err
	}
	if err := b.syncVirtualServers(st, onDummy); err != nil {
		return 0, err
	}
	if err := b.syncDummyAddrs(st, onDummy); err != nil {
		return 0, err
	}
	for _, sm := range stale {
		if err := b.cfg.IPSets.Del(sm.set, sm.m); err != nil {
			return 0, err
		}
	}
	st.objects = len(st.vs)
	for _, v := range st.vs {
		st.objects += len(v.reals)
	}
	b.st = st
	return len(st.ports), nil
}

// ensureFixed sets what does not depend on the Services: the kernel
// settings, IPVS's timeouts, the dummy link and the sets.
func (b *Backend) ensureFixed() error {
	for _, s := range b.settings() {
		if err := b.cfg.Sysctl.Set(s[0], s[1]); err != nil {
			return fmt.Errorf("ipvs: %w", err)
		}
	}
	if err := b.cfg.IPVS.SetTimeouts(b.cfg.TCPTimeout, b.cfg.TCPFinTimeout, b.cfg.UDPTimeout); err != nil {
		return err
	}
	if err := b.cfg.Links.EnsureDummy(b.cfg.DummyLink); err != nil {
		return err
	}
	for _, f := range b.cfg.Families {
		for _, s := range setTypes {
			if err := b.cfg.IPSets.EnsureSet(SetSpec{Name: setName(f, s.role), Type: s.typ, Family: uint8(f)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// addSetMembers adds the members st needs that the kernel's sets lack, and
// returns the members the sets have and st does not need, for deletion once
// nothing leads to them.
func (b *Backend) addSetMembers(st *state) ([]setMember, error) {
	want := make(map[string]map[Member]bool)
	for _, f := range b.cfg.Families {
		for _, s := range setTypes {
			want[setName(f, s.role)] = make(map[Member]bool)
		}
	}
	for sm := range st.memberRefs {
		want[sm.set][sm.m] = true
	}
	for a := range st.addrRefs {
		f := proxy.FamilyOf(a)
		if b.wantsFamily(f) {
			want[setName(f, setIPVSIPs)][Member{IP: a}] = true
		}
	}
	var stale []setMember
	for name, members := range want {
		have, err := b.cfg.IPSets.Members(name)
		if err != nil {
			return nil, err
		}
		present := make(map[Member]bool, len(have))
		for _, m := range have {
			present[m] = true
			if !members[m] {
				stale = append(stale, setMember{name, m})
			}
		}
		for m := range members {
			if !present[m] {
				if err := b.cfg.IPSets.Add(name, m); err != nil {
					return nil, err
				}
			}
		}
	}
	return stale, nil
}

// writeRules writes the iptables rules and hooks of every family. The rules
// only name the sets, so they are the same every time; writing them on
// every full sync repairs any drift.
func (b *Backend) writeRules(ctx context.Context) error {
	for _, f := range b.cfg.Families {
		if err := b.cfg.Runner.Restore(ctx, f, renderRules(f, &b.cfg)); err != nil {
			return fmt.Errorf("ipvs: rules: %w", err)
		}
		if err := b.ensureHooks(ctx, f); err != nil {
			return err
		}
	}
	return nil
}

// dummyAddrs reads the addresses on the dummy link.
func (b *Backend) dummyAddrs() (map[netip.Addr]bool, error) {
	addrs, err := b.cfg.Links.Addrs(b.cfg.DummyLink)
	if err != nil {
		return nil, err
	}
	onDummy := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		onDummy[a] = true
	}
	return onDummy, nil
}

// syncVirtualServers makes the kernel's virtual servers and their real
// servers those of st, recording them in st.vs. A virtual server on the
// node's or the dummy link's addresses is ours; one elsewhere is left alone.
func (b *Backend) syncVirtualServers(st *state, onDummy map[netip.Addr]bool) error {
	want := make(map[VSKey]*wantVS)
	for _, p := range st.ports {
		for i := range p.vss {
			want[p.vss[i].spec.Key()] = &p.vss[i]
		}
	}
	have, err := b.cfg.IPVS.VirtualServers()
	if err != nil {
		return err
	}
	present := make(map[VSKey]VirtualServer, len(have))
	for _, vs := range have {
		present[vs.Key()] = vs
	}
	for k, w := range want {
		cur, ok := present[k]
		var reals []RealServer
		if ok {
			if cur != w.spec {
				if err := b.cfg.IPVS.UpdateVirtualServer(w.spec); err != nil {
					return err
				}
			}
			if reals, err = b.cfg.IPVS.RealServers(k); err != nil {
				return err
			}
		} else if err := b.cfg.IPVS.AddVirtualServer(w.spec); err != nil {
			return err
		}
		pr := &programmed{spec: w.spec, reals: make(map[netip.AddrPort]int, len(reals))}
		for _, r := range reals {
			pr.reals[r.Address] = r.Weight
		}
		if err := b.syncReals(st, k, pr, w.reals, reals); err != nil {
			return err
		}
		st.vs[k] = pr
	}
	for k := range present {
		a := k.Address.Addr()
		if want[k] == nil && (onDummy[a] || st.local[a]) {
			if err := b.cfg.IPVS.DeleteVirtualServer(k); err != nil {
				return err
			}
			delete(st.draining, k)
		}
	}
	return nil
}

// syncDummyAddrs puts on the dummy link the addresses st needs and takes
// off the others.
func (b *Backend) syncDummyAddrs(st *state, onDummy map[netip.Addr]bool) error {
	for a := range st.addrRefs {
		if !onDummy[a] {
			if err := b.cfg.Links.AddAddr(b.cfg.DummyLink, a); err != nil {
				return err
			}
		}
	}
	for a := range onDummy {
		if st.addrRefs[a] == 0 {
			if err := b.cfg.Links.DelAddr(b.cfg.DummyLink, a); err != nil {
				return err
			}
		}
	}
	return nil
}

// syncReals makes a virtual server's real servers the wanted ones. cur lists
// what the kernel has (with connection counts) when known; pr is updated to
// what is programmed afterwards. A real server no longer wanted is deleted at
// once for UDP; for TCP and SCTP it is set to weight 0, so it takes no new
// connections, and deleted when its connections are gone.
func (b *Backend) syncReals(st *state, k VSKey, pr *programmed, want []netip.AddrPort, cur []RealServer) error {
	before := len(pr.reals)
	defer func() { st.objects += len(pr.reals) - before }()
	wanted := make(map[netip.AddrPort]bool, len(want))
	for _, addr := range want {
		wanted[addr] = true
		w, ok := pr.reals[addr]
		switch {
		case !ok:
			if err := b.cfg.IPVS.AddRealServer(k, RealServer{Address: addr, Weight: 1}); err != nil {
				return err
			}
		case w != 1:
			if err := b.cfg.IPVS.UpdateRealServer(k, RealServer{Address: addr, Weight: 1}); err != nil {
				return err
			}
		}
		pr.reals[addr] = 1
	}
	conns := make(map[netip.AddrPort]int, len(cur))
	for _, r := range cur {
		conns[r.Address] = r.ActiveConn + r.InactConn
	}
	for addr, w := range pr.reals {
		if wanted[addr] {
			continue
		}
		n, known := conns[addr]
		if k.Protocol == "UDP" || (w == 0 && known && n == 0) {
			if err := b.cfg.IPVS.DeleteRealServer(k, addr); err != nil {
				return err
			}
			delete(pr.reals, addr)
			continue
		}
		if w != 0 {
			if err := b.cfg.IPVS.UpdateRealServer(k, RealServer{Address: addr, Weight: 0}); err != nil {
				return err
			}
			pr.reals[addr] = 0
		}
		st.draining[k] = true
	}
	return nil
}

// partialSync applies the ports that changed since the programmed model,
// from memory, without reading the kernel.
func (b *Backend) partialSync(m *proxy.Model) (int, error) {
	st := b.st
	keys := proxy.ChangedPorts(m, st.modelID, st.ports, b.wantsFamily)
	rewritten := 0
	for _, k := range keys {
		old, sp := st.ports[k], m.Lookup(k)
		if old != nil && sp != nil && old.sp.Equal(sp) {
			continue
		}
		var next *portPlan
		if sp != nil {
			next = b.plan(sp, st)
		}
		if err := b.replacePort(st, old, next); err != nil {
			return rewritten, err
		}
		if next == nil {
			delete(st.ports, k)
		} else {
			st.ports[k] = next
		}
		rewritten++
	}
	return rewritten, nil
}

// replacePort programs the change of one port from old to next (either may
// be nil).
func (b *Backend) replacePort(st *state, old, next *portPlan) error {
	// New set members and addresses first, then the virtual servers, then
	// what the old plan alone needed.
	if next != nil {
		for _, sm := range next.members {
			if st.memberRefs[sm]++; st.memberRefs[sm] == 1 {
				if err := b.cfg.IPSets.Add(sm.set, sm.m); err != nil {
					return err
				}
			}
		}
		for _, a := range next.addrs {
			if st.addrRefs[a]++; st.addrRefs[a] == 1 {
				if err := b.cfg.IPSets.Add(setName(proxy.FamilyOf(a), setIPVSIPs), Member{IP: a}); err != nil {
					return err
				}
				if err := b.cfg.Links.AddAddr(b.cfg.DummyLink, a); err != nil {
					return err
				}
			}
		}
	}
	keep := make(map[VSKey]bool)
	if next != nil {
		for _, w := range next.vss {
			k := w.spec.Key()
			keep[k] = true
			pr := st.vs[k]
			if pr == nil {
				if err := b.cfg.IPVS.AddVirtualServer(w.spec); err != nil {
					return err
				}
				pr = &programmed{spec: w.spec, reals: make(map[netip.AddrPort]int)}
				st.vs[k] = pr
				st.objects++
			} else if pr.spec != w.spec {
				if err := b.cfg.IPVS.UpdateVirtualServer(w.spec); err != nil {
					return err
				}
				pr.spec = w.spec
			}
			if err := b.syncReals(st, k, pr, w.reals, nil); err != nil {
				return err
			}
		}
	}
	if old == nil {
		return nil
	}
	for _, w := range old.vss {
		k := w.spec.Key()
		if keep[k] || st.vs[k] == nil {
			continue
		}
		if err := b.cfg.IPVS.DeleteVirtualServer(k); err != nil {
			return err
		}
		st.objects -= 1 + len(st.vs[k].reals)
		delete(st.vs, k)
		delete(st.draining, k)
	}
	for _, a := range old.addrs {
		if st.addrRefs[a]--; st.addrRefs[a] == 0 {
			delete(st.addrRefs, a)
			if err := b.cfg.Links.DelAddr(b.cfg.DummyLink, a); err != nil {
				return err
			}
			if err := b.cfg.IPSets.Del(setName(proxy.FamilyOf(a), setIPVSIPs), Member{IP: a}); err != nil {
				return err
			}
		}
	}
	for _, sm := range old.members {
		if st.memberRefs[sm]--; st.memberRefs[sm] == 0 {
			delete(st.memberRefs, sm)
			if err := b.cfg.IPSets.Del(sm.set, sm.m); err != nil {
				return err
			}
		}
	}
	return nil
}

// drain deletes the weight-0 real servers whose connections are gone. It
// reads only the virtual servers that have some. A failure here is logged:
// the next sync tries again.
func (b *Backend) drain() {
	st := b.st
	for k := range st.draining {
		pr := st.vs[k]
		if pr == nil {
			delete(st.draining, k)
			continue
		}
		reals, err := b.cfg.IPVS.RealServers(k)
		if err != nil {
			b.log.Warn("could not read draining real servers", "vs", k.String(), "err", err)
			continue
		}
		left := false
		for _, r := range reals {
			if pr.reals[r.Address] != 0 || r.Weight != 0 {
				continue
			}
			if r.ActiveConn+r.InactConn > 0 {
				left = true
				continue
			}
			if err := b.cfg.IPVS.DeleteRealServer(k, r.Address); err != nil {
				b.log.Warn("could not delete drained real server", "vs", k.String(), "real", r.Address, "err", err)
				left = true
				continue
			}
			delete(pr.reals, r.Address)
			st.objects--
		}
		if !left {
			delete(st.draining, k)
		}
	}
}

// Cleanup implements proxy.Backend: it removes the rules, the virtual
// servers on the node's and the dummy link's addresses, the sets and the
// dummy link, whoever made them.
func (b *Backend) Cleanup(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.st = nil
	for _, f := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
		if err := b.cleanupRules(ctx, f); err != nil {
			return err
		}
	}
	if b.cfg.IPVS != nil {
		local, err := b.cfg.Links.LocalAddrs()
		if err != nil {
			return fmt.Errorf("ipvs: cleanup: %w", err)
		}
		ours := make(map[netip.Addr]bool, len(local))
		for _, a := range local {
			ours[a.Addr] = true
		}
		vss, err := b.cfg.IPVS.VirtualServers()
		if err != nil {
			return fmt.Errorf("ipvs: cleanup: %w", err)
		}
		for _, vs := range vss {
			if ours[vs.Address.Addr()] {
				if err := b.cfg.IPVS.DeleteVirtualServer(vs.Key()); err != nil {
					return fmt.Errorf("ipvs: cleanup: %w", err)
				}
			}
		}
	}
	for _, name := range allSetNames() {
		if err := b.cfg.IPSets.Destroy(name); err != nil {
			return fmt.Errorf("ipvs: cleanup: %w", err)
		}
	}
	if err := b.cfg.Links.DeleteLink(b.cfg.DummyLink); err != nil {
		return fmt.Errorf("ipvs: cleanup: %w", err)
	}
	return nil
}

// DryRun writes the IPVS table a first full sync of m would program, in the
// layout of `ipvsadm -Ln`, with node ports on the node's current addresses.
// It changes nothing.
func (b *Backend) DryRun(m *proxy.Model, w io.Writer) error {
	st := newState()
	if err := b.readNodeAddrs(st); err != nil {
		return err
	}
	b.desired(m, st)
	var table []TableEntry
	for _, p := range st.ports {
		for _, v := range p.vss {
			e := TableEntry{VirtualServer: v.spec}
			for _, r := range v.reals {
				e.Reals = append(e.Reals, RealServer{Address: r, Weight: 1})
			}
			table = append(table, e)
		}
	}
	if err := WriteTable(w, table); err != nil {
		return err
	}
	members := make(map[string][]Member)
	for sm := range st.memberRefs {
		members[sm.set] = append(members[sm.set], sm.m)
	}
	return writePolicySets(w, members)
}

// policySets are the sets that carry a traffic policy, with what they do;
// the IPVS table alone does not show it.
var policySets = []struct{ role, meaning string }{
	{setExternalLocal, "externalTrafficPolicy Local: traffic from outside the node keeps its source"},
	{setDrop, "refused: no local endpoint (internalTrafficPolicy Local)"},
	{setExternalDrop, "dropped unless from a pod or the node: no local endpoint (externalTrafficPolicy Local)"},
	{setLBSourceCIDR, "loadBalancerSourceRanges: the only sources that reach the load balancer IP (and the IP itself)"},
}

// writePolicySets writes the members of the non-empty policy sets after the
// table, one "# set: meaning" line and one line per member.
func writePolicySets(w io.Writer, members map[string][]Member) error {
	var b strings.Builder
	for _, f := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
		for _, ps := range policySets {
			name := setName(f, ps.role)
			list := members[name]
			if len(list) == 0 {
				continue
			}
			sort.Slice(list, func(i, j int) bool { return list[i].less(list[j]) })
			fmt.Fprintf(&b, "# %s: %s\n", name, ps.meaning)
			for _, m := range list {
				b.WriteString(m.String() + "\n")
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// List writes the kernel's IPVS table in the layout of `ipvsadm -Ln`.
func (b *Backend) List(w io.Writer) error {
	if b.cfg.IPVS == nil {
		return errors.New("ipvs: the kernel has no IPVS (is ip_vs loaded?)")
	}
	table, err := ReadTable(b.cfg.IPVS)
	if err != nil {
		return err
	}
	if err := WriteTable(w, table); err != nil {
		return err
	}
	if b.cfg.IPSets == nil {
		return nil
	}
	members := make(map[string][]Member)
	for _, f := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
		for _, ps := range policySets {
			name := setName(f, ps.role)
			if members[name], err = b.cfg.IPSets.Members(name); err != nil {
				return fmt.Errorf("ipvs: list set %s: %w", name, err)
			}
		}
	}
	return writePolicySets(w, members)
}

func sortAddrs(a []netip.Addr) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j].Less(a[j-1]); j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

func compactAddrs(a []netip.Addr) []netip.Addr {
	if len(a) < 2 {
		return a
	}
	out := a[:1]
	for _, x := range a[1:] {
		if x != out[len(out)-1] {
			out = append(out, x)
		}
	}
	return out
}
