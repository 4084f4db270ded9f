package ipvs

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"
)

// FakeKernel is an in-memory IPVS table, set of links and ipsets, for tests.
// It refuses what the kernel refuses (adding what exists, deleting or
// changing what does not, a member that does not fit its set) and can dump
// itself as stable text for golden files.
type FakeKernel struct {
	mu sync.Mutex // protects the following fields
	vs map[VSKey]*fakeVS
	// links maps link names to their addresses.
	links    map[string]map[netip.Addr]bool
	loopback map[string]bool
	sets     map[string]*fakeSet
	sysctls  map[string]string
	timeouts [3]time.Duration
	// Writes counts every call that changed something.
	Writes int
	// FailAt, when positive, makes the FailAt-th IPVS or ipset write from
	// now on fail, as a kernel refusing it would (out of memory, say), and
	// every write after it succeed again.
	FailAt int
}

var errInjected = fmt.Errorf("%w: write refused on purpose", errFake)

// refuse counts one write toward FailAt and says whether it fails; k.mu is
// held.
func (k *FakeKernel) refuse() error {
	if k.FailAt <= 0 {
		return nil
	}
	k.FailAt--
	if k.FailAt == 0 {
		return errInjected
	}
	return nil
}

type fakeVS struct {
	spec  VirtualServer
	reals map[netip.AddrPort]*RealServer
}

type fakeSet struct {
	spec    SetSpec
	members map[Member]bool
}

// NewFakeKernel returns a kernel with a loopback link and the given node
// links, each with its addresses.
func NewFakeKernel(nodeLinks map[string][]string) *FakeKernel {
	k := &FakeKernel{
		vs:       make(map[VSKey]*fakeVS),
		links:    map[string]map[netip.Addr]bool{"lo": {netip.MustParseAddr("127.0.0.1"): true, netip.MustParseAddr("::1"): true}},
		loopback: map[string]bool{"lo": true},
		sets:     make(map[string]*fakeSet),
		sysctls:  make(map[string]string),
	}
	for name, addrs := range nodeLinks {
		k.links[name] = make(map[netip.Addr]bool)
		for _, a := range addrs {
			k.links[name][netip.MustParseAddr(a)] = true
		}
	}
	return k
}

var errFake = errors.New("fake kernel")

// --- IPVS

// VirtualServers implements IPVS.
func (k *FakeKernel) VirtualServers() ([]VirtualServer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]VirtualServer, 0, len(k.vs))
	for _, v := range k.vs {
		out = append(out, v.spec)
	}
	return out, nil
}

// RealServers implements IPVS.
func (k *FakeKernel) RealServers(key VSKey) ([]RealServer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v := k.vs[key]
	if v == nil {
		return nil, fmt.Errorf("%w: no virtual server %s", errFake, key)
	}
	out := make([]RealServer, 0, len(v.reals))
	for _, r := range v.reals {
		out = append(out, *r)
	}
	return out, nil
}

func validScheduler(s string) bool {
	switch s {
	case "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf", "twos":
		return true
	}
	return false
}

// AddVirtualServer implements IPVS.
func (k *FakeKernel) AddVirtualServer(vs VirtualServer) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.refuse(); err != nil {
		return err
	}
	if k.vs[vs.Key()] != nil {
		return fmt.Errorf("%w: virtual server %s exists", errFake, vs.Key())
	}
	if !validScheduler(vs.Scheduler) || protocols[vs.Protocol] == 0 {
		return fmt.Errorf("%w: bad virtual server %+v", errFake, vs)
	}
	k.vs[vs.Key()] = &fakeVS{spec: vs, reals: make(map[netip.AddrPort]*RealServer)}
	k.Writes++
	return nil
}

// UpdateVirtualServer implements IPVS.
func (k *FakeKernel) UpdateVirtualServer(vs VirtualServer) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.refuse(); err != nil {
		return err
	}
	v := k.vs[vs.Key()]
	if v == nil || !validScheduler(vs.Scheduler) {
		return fmt.Errorf("%w: update of %s", errFake, vs.Key())
	}
	v.spec = vs
	k.Writes++
	return nil
}

// DeleteVirtualServer implements IPVS.
func (k *FakeKernel) DeleteVirtualServer(key VSKey) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.refuse(); err != nil {
		return err
	}
	if k.vs[key] == nil {
		return fmt.Errorf("%w: no virtual server %s", errFake, key)
	}
	delete(k.vs, key)
	k.Writes++
	return nil
}

// AddRealServer implements IPVS.
func (k *FakeKernel) AddRealServer(key VSKey, rs RealServer) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.refuse(); err != nil {
		return err
	}
	v := k.vs[key]
	if v == nil || v.reals[rs.Address] != nil || rs.Address.Addr().Is4() != key.Address.Addr().Is4() {
		return fmt.Errorf("%w: add real server %s to %s", errFake, rs.Address, key)
	}
	v.reals[rs.Address] = &RealServer{Address: rs.Address, Weight: rs.Weight}
	k.Writes++
	return nil
}

// UpdateRealServer implements IPVS.
func (k *FakeKernel) UpdateRealServer(key VSKey, rs RealServer) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.refuse(); err != nil {
		return err
	}
	v := k.vs[key]
	if v == nil || v.reals[rs.Address] == nil {
		return fmt.Errorf("%w: update real server %s of %s", errFake, rs.Address, key)
	}
	v.reals[rs.Address].Weight = rs.Weight
	k.Writes++
	return nil
}

// DeleteRealServer implements IPVS.
func (k *FakeKernel) DeleteRealServer(key VSKey, addr netip.AddrPort) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.refuse(); err != nil {
		return err
	}
	v := k.vs[key]
	if v == nil || v.reals[addr] == nil {
		return fmt.Errorf("%w: delete real server %s of %s", errFake, addr, key)
	}
	delete(v.reals, addr)
	k.Writes++
	return nil
}

// SetTimeouts implements IPVS.
func (k *FakeKernel) SetTimeouts(tcp, tcpFin, udp time.Duration) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, d := range []time.Duration{tcp, tcpFin, udp} {
		if d != 0 {
			k.timeouts[i] = d
		}
	}
	return nil
}

// SetConns sets a real server's connection counts, as traffic would.
func (k *FakeKernel) SetConns(key VSKey, addr netip.AddrPort, active, inactive int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if v := k.vs[key]; v != nil && v.reals[addr] != nil {
		v.reals[addr].ActiveConn, v.reals[addr].InactConn = active, inactive
	}
}

// AddForeignVirtualServer puts a virtual server into the table behind the
// backend's back, as an earlier run or an operator would.
func (k *FakeKernel) AddForeignVirtualServer(vs VirtualServer, reals ...RealServer) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v := &fakeVS{spec: vs, reals: make(map[netip.AddrPort]*RealServer)}
	for _, r := range reals {
		r := r
		v.reals[r.Address] = &r
	}
	k.vs[vs.Key()] = v
}

// --- Links

// EnsureDummy implements Links.
func (k *FakeKernel) EnsureDummy(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.links[name] == nil {
		k.links[name] = make(map[netip.Addr]bool)
		k.Writes++
	}
	return nil
}

// DeleteLink implements Links.
func (k *FakeKernel) DeleteLink(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.links[name] != nil {
		delete(k.links, name)
		k.Writes++
	}
	return nil
}

// Addrs implements Links.
func (k *FakeKernel) Addrs(name string) ([]netip.Addr, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []netip.Addr
	for a := range k.links[name] {
		out = append(out, a)
	}
	return out, nil
}

// AddAddr implements Links.
func (k *FakeKernel) AddAddr(link string, a netip.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.links[link] == nil {
		return fmt.Errorf("%w: no link %s", errFake, link)
	}
	k.links[link][a] = true
	k.Writes++
	return nil
}

// DelAddr implements Links.
func (k *FakeKernel) DelAddr(link string, a netip.Addr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.links[link] == nil || !k.links[link][a] {
		return fmt.Errorf("%w: %s has no address %s", errFake, link, a)
	}
	delete(k.links[link], a)
	k.Writes++
	return nil
}

// LocalAddrs implements Links.
func (k *FakeKernel) LocalAddrs() ([]LocalAddr, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []LocalAddr
	for name, addrs := range k.links {
		for a := range addrs {
			out = append(out, LocalAddr{Addr: a, Link: name, Loopback: k.loopback[name], LinkLocal: a.IsLinkLocalUnicast()})
		}
	}
	return out, nil
}

// --- IPSets

// EnsureSet implements IPSets.
func (k *FakeKernel) EnsureSet(s SetSpec) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if cur := k.sets[s.Name]; cur != nil {
		if cur.spec != s {
			return fmt.Errorf("%w: set %s exists as %+v", errFake, s.Name, cur.spec)
		}
		return nil
	}
	k.sets[s.Name] = &fakeSet{spec: s, members: make(map[Member]bool)}
	k.Writes++
	return nil
}

// Members implements IPSets.
func (k *FakeKernel) Members(name string) ([]Member, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s := k.sets[name]
	if s == nil {
		return nil, nil
	}
	out := make([]Member, 0, len(s.members))
	for m := range s.members {
		out = append(out, m)
	}
	return out, nil
}

func (s *fakeSet) fits(m Member) bool {
	family := uint8(6)
	if m.IP.Is4() {
		family = 4
	}
	if family != s.spec.Family {
		return false
	}
	switch s.spec.Type {
	case "hash:ip":
		return m.Protocol == "" && !m.IP2.IsValid()
	case "hash:ip,port":
		return m.Protocol != "" && !m.IP2.IsValid()
	case "hash:ip,port,ip":
		return m.Protocol != "" && m.IP2.IsValid() && m.NetBits == 0 && m.IP2.Is4() == m.IP.Is4()
	case "hash:ip,port,net":
		// The kernel keeps a network masked; an unmasked one would be a
		// member the fake holds and the kernel does not.
		n := m.Net()
		return m.Protocol != "" && n.IsValid() && n == n.Masked() && n.Addr().Is4() == m.IP.Is4()
	}
	return false
}

// Add implements IPSets.
func (k *FakeKernel) Add(set string, m Member) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.refuse(); err != nil {
		return err
	}
	s := k.sets[set]
	if s == nil || !s.fits(m) {
		return fmt.Errorf("%w: add %s to %s", errFake, m, set)
	}
	s.members[m] = true
	k.Writes++
	return nil
}

// Del implements IPSets.
func (k *FakeKernel) Del(set string, m Member) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.refuse(); err != nil {
		return err
	}
	s := k.sets[set]
	if s == nil || !s.members[m] {
		return fmt.Errorf("%w: %s not in %s", errFake, m, set)
	}
	delete(s.members, m)
	k.Writes++
	return nil
}

// Destroy implements IPSets.
func (k *FakeKernel) Destroy(name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sets[name] != nil {
		delete(k.sets, name)
		k.Writes++
	}
	return nil
}

// --- Sysctl

// Set implements Sysctl.
func (k *FakeKernel) Set(key, value string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sysctls[key] = value
	return nil
}

// Sysctl returns a setting, empty when never set.
func (k *FakeKernel) Sysctl(key string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sysctls[key]
}

// Dump prints everything the fake holds, sorted: the IPVS table in ipvsadm's
// layout (with weights and connection counts), the links and their addresses,
// the sets and their members, and the settings.
func (k *FakeKernel) Dump() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var b strings.Builder
	table := make([]TableEntry, 0, len(k.vs))
	for _, v := range k.vs {
		e := TableEntry{VirtualServer: v.spec}
		for _, r := range v.reals {
			e.Reals = append(e.Reals, *r)
		}
		table = append(table, e)
	}
	_ = WriteTable(&b, table)
	b.WriteString("# links\n")
	names := make([]string, 0, len(k.links))
	for n := range k.links {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		addrs := make([]netip.Addr, 0, len(k.links[n]))
		for a := range k.links[n] {
			addrs = append(addrs, a)
		}
		sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
		fmt.Fprintf(&b, "%s:", n)
		for _, a := range addrs {
			fmt.Fprintf(&b, " %s", a)
		}
		b.WriteString("\n")
	}
	b.WriteString("# ipsets\n")
	names = names[:0]
	for n := range k.sets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := k.sets[n]
		members := make([]Member, 0, len(s.members))
		for m := range s.members {
			members = append(members, m)
		}
		sort.Slice(members, func(i, j int) bool { return members[i].less(members[j]) })
		fmt.Fprintf(&b, "%s %s family %d:", n, s.spec.Type, s.spec.Family)
		for _, m := range members {
			fmt.Fprintf(&b, " %s", m)
		}
		b.WriteString("\n")
	}
	b.WriteString("# sysctls\n")
	keys := make([]string, 0, len(k.sysctls))
	for key := range k.sysctls {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		fmt.Fprintf(&b, "%s=%s\n", key, k.sysctls[key])
	}
	if k.timeouts != [3]time.Duration{} {
		fmt.Fprintf(&b, "# timeouts tcp %s tcpfin %s udp %s\n", k.timeouts[0], k.timeouts[1], k.timeouts[2])
	}
	return b.String()
}

var (
	_ IPVS   = (*FakeKernel)(nil)
	_ Links  = (*FakeKernel)(nil)
	_ IPSets = (*FakeKernel)(nil)
	_ Sysctl = (*FakeKernel)(nil)
)
