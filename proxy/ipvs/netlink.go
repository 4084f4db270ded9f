package ipvs

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	mobyipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// flagPersistent is IP_VS_SVC_F_PERSISTENT.
const flagPersistent = 0x1

// NetlinkIPVS programs the IPVS table of the calling process's network
// namespace through generic netlink.
type NetlinkIPVS struct {
	h *mobyipvs.Handle
}

// OpenIPVS opens a netlink handle to IPVS (loading ip_vs if it can).
func OpenIPVS() (*NetlinkIPVS, error) {
	h, err := mobyipvs.New("")
	if err != nil {
		return nil, fmt.Errorf("ipvs: netlink: %w", err)
	}
	return &NetlinkIPVS{h: h}, nil
}

// Available reports whether the kernel has IPVS loaded in this namespace.
func Available() bool {
	_, err := os.Stat("/proc/net/ip_vs")
	return err == nil
}

// Close releases the handle.
func (n *NetlinkIPVS) Close() { n.h.Close() }

var protocols = map[string]uint16{"TCP": unix.IPPROTO_TCP, "UDP": unix.IPPROTO_UDP, "SCTP": unix.IPPROTO_SCTP}

func protocolName(p uint16) string {
	for name, n := range protocols {
		if n == p {
			return name
		}
	}
	return fmt.Sprintf("proto-%d", p)
}

func familyOf(a netip.Addr) uint16 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func toService(k VSKey) *mobyipvs.Service {
	s := &mobyipvs.Service{
		AddressFamily: familyOf(k.Address.Addr()),
		Protocol:      protocols[k.Protocol],
		Address:       k.Address.Addr().AsSlice(),
		Port:          k.Address.Port(),
		Netmask:       0xffffffff,
	}
	if s.AddressFamily == unix.AF_INET6 {
		s.Netmask = 128
	}
	return s
}

func toFullService(vs VirtualServer) *mobyipvs.Service {
	s := toService(vs.Key())
	s.SchedName = vs.Scheduler
	if vs.Persistence > 0 {
		s.Flags = flagPersistent
		s.Timeout = vs.Persistence
	}
	return s
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// VirtualServers implements IPVS. Firewall-mark services are left out: the
// backend never makes them.
func (n *NetlinkIPVS) VirtualServers() ([]VirtualServer, error) {
	svcs, err := n.h.GetServices()
	if err != nil {
		return nil, fmt.Errorf("ipvs: list virtual servers: %w", err)
	}
	out := make([]VirtualServer, 0, len(svcs))
	for _, s := range svcs {
		if s.FWMark != 0 {
			continue
		}
		vs := VirtualServer{
			Protocol:  protocolName(s.Protocol),
			Address:   netip.AddrPortFrom(addrOf(s.Address), s.Port),
			Scheduler: s.SchedName,
		}
		if s.Flags&flagPersistent != 0 {
			vs.Persistence = s.Timeout
		}
		out = append(out, vs)
	}
	return out, nil
}

// RealServers implements IPVS.
func (n *NetlinkIPVS) RealServers(k VSKey) ([]RealServer, error) {
	dsts, err := n.h.GetDestinations(toService(k))
	if err != nil {
		return nil, fmt.Errorf("ipvs: list real servers of %s: %w", k, err)
	}
	out := make([]RealServer, 0, len(dsts))
	for _, d := range dsts {
		out = append(out, RealServer{
			Address:    netip.AddrPortFrom(addrOf(d.Address), d.Port),
			Weight:     d.Weight,
			ActiveConn: d.ActiveConnections,
			InactConn:  d.InactiveConnections,
		})
	}
	return out, nil
}

// AddVirtualServer implements IPVS.
func (n *NetlinkIPVS) AddVirtualServer(vs VirtualServer) error {
	if err := n.h.NewService(toFullService(vs)); err != nil {
		return fmt.Errorf("ipvs: add virtual server %s: %w", vs.Key(), err)
	}
	return nil
}

// UpdateVirtualServer implements IPVS.
func (n *NetlinkIPVS) UpdateVirtualServer(vs VirtualServer) error {
	if err := n.h.UpdateService(toFullService(vs)); err != nil {
		return fmt.Errorf("ipvs: update virtual server %s: %w", vs.Key(), err)
	}
	return nil
}

// DeleteVirtualServer implements IPVS.
func (n *NetlinkIPVS) DeleteVirtualServer(k VSKey) error {
	if err := n.h.DelService(toService(k)); err != nil {
		return fmt.Errorf("ipvs: delete virtual server %s: %w", k, err)
	}
	return nil
}

func toDestination(rs RealServer) *mobyipvs.Destination {
	return &mobyipvs.Destination{
		AddressFamily:   familyOf(rs.Address.Addr()),
		Address:         rs.Address.Addr().AsSlice(),
		Port:            rs.Address.Port(),
		Weight:          rs.Weight,
		ConnectionFlags: mobyipvs.ConnectionFlagMasq,
	}
}

// AddRealServer implements IPVS.
func (n *NetlinkIPVS) AddRealServer(k VSKey, rs RealServer) error {
	if err := n.h.NewDestination(toService(k), toDestination(rs)); err != nil {
		return fmt.Errorf("ipvs: add real server %s to %s: %w", rs.Address, k, err)
	}
	return nil
}

// UpdateRealServer implements IPVS.
func (n *NetlinkIPVS) UpdateRealServer(k VSKey, rs RealServer) error {
	if err := n.h.UpdateDestination(toService(k), toDestination(rs)); err != nil {
		return fmt.Errorf("ipvs: update real server %s of %s: %w", rs.Address, k, err)
	}
	return nil
}

// DeleteRealServer implements IPVS.
func (n *NetlinkIPVS) DeleteRealServer(k VSKey, addr netip.AddrPort) error {
	if err := n.h.DelDestination(toService(k), toDestination(RealServer{Address: addr})); err != nil {
		return fmt.Errorf("ipvs: delete real server %s of %s: %w", addr, k, err)
	}
	return nil
}

// SetTimeouts implements IPVS.
func (n *NetlinkIPVS) SetTimeouts(tcp, tcpFin, udp time.Duration) error {
	if tcp == 0 && tcpFin == 0 && udp == 0 {
		return nil
	}
	if err := n.h.SetConfig(&mobyipvs.Config{TimeoutTCP: tcp, TimeoutTCPFin: tcpFin, TimeoutUDP: udp}); err != nil {
		return fmt.Errorf("ipvs: set timeouts: %w", err)
	}
	return nil
}

var _ IPVS = (*NetlinkIPVS)(nil)

// NetlinkLinks manages links and addresses through rtnetlink.
type NetlinkLinks struct{}

var _ Links = NetlinkLinks{}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// EnsureDummy implements Links.
func (NetlinkLinks) EnsureDummy(name string) error {
	if _, err := netlink.LinkByName(name); err == nil {
		return nil
	} else if !isNotFound(err) {
		return fmt.Errorf("links: find %s: %w", name, err)
	}
	if err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("links: add dummy %s: %w", name, err)
	}
	return nil
}

// DeleteLink implements Links.
func (NetlinkLinks) DeleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("links: find %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("links: delete %s: %w", name, err)
	}
	return nil
}

// Addrs implements Links.
func (NetlinkLinks) Addrs(name string) ([]netip.Addr, error) {
	link, err := netlink.LinkByName(name)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("links: find %s: %w", name, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("links: addresses of %s: %w", name, err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, addrOf(a.IP))
	}
	return out, nil
}

func hostAddr(a netip.Addr) *netlink.Addr {
	bits := a.BitLen()
	na := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
	if a.Is6() {
		// A service address is never a duplicate worth detecting, and
		// duplicate address detection would hold it unusable for a while.
		na.Flags = unix.IFA_F_NODAD
	}
	return na
}

// AddAddr implements Links.
func (NetlinkLinks) AddAddr(name string, a netip.Addr) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("links: find %s: %w", name, err)
	}
	if err := netlink.AddrReplace(link, hostAddr(a)); err != nil {
		return fmt.Errorf("links: add %s to %s: %w", a, name, err)
	}
	return nil
}

// DelAddr implements Links.
func (NetlinkLinks) DelAddr(name string, a netip.Addr) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("links: find %s: %w", name, err)
	}
	if err := netlink.AddrDel(link, hostAddr(a)); err != nil && !errors.Is(err, syscall.EADDRNOTAVAIL) {
		return fmt.Errorf("links: delete %s from %s: %w", a, name, err)
	}
	return nil
}

// LocalAddrs implements Links.
func (NetlinkLinks) LocalAddrs() ([]LocalAddr, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("links: list: %w", err)
	}
	var out []LocalAddr
	for _, link := range links {
		attrs := link.Attrs()
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("links: addresses of %s: %w", attrs.Name, err)
		}
		for _, a := range addrs {
			ip := addrOf(a.IP)
			out = append(out, LocalAddr{
				Addr:      ip,
				Link:      attrs.Name,
				Loopback:  attrs.Flags&net.FlagLoopback != 0,
				LinkLocal: ip.IsLinkLocalUnicast(),
			})
		}
	}
	return out, nil
}

// NetlinkIPSets manages ipsets through nfnetlink.
type NetlinkIPSets struct{}

var _ IPSets = NetlinkIPSets{}

// isNoSet reports the kernel's answer about a set that does not exist.
func isNoSet(err error) bool { return errors.Is(err, syscall.ENOENT) }

// isSetExists reports the kernel's answer to creating a set that exists.
func isSetExists(err error) bool {
	var ipsetErr nl.IPSetError
	return errors.As(err, &ipsetErr) && ipsetErr == nl.IPSET_ERR_EXIST
}

// EnsureSet implements IPSets.
func (NetlinkIPSets) EnsureSet(s SetSpec) error {
	family := uint8(unix.AF_INET)
	if s.Family == 6 {
		family = unix.AF_INET6
	}
	err := netlink.IpsetCreate(s.Name, s.Type, netlink.IpsetCreateOptions{Family: family})
	if err != nil && !errors.Is(err, syscall.EEXIST) && !isSetExists(err) {
		return fmt.Errorf("ipset: create %s: %w", s.Name, err)
	}
	return nil
}

// Members implements IPSets.
func (NetlinkIPSets) Members(name string) ([]Member, error) {
	res, err := netlink.IpsetList(name)
	if err != nil {
		if isNoSet(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("ipset: list %s: %w", name, err)
	}
	out := make([]Member, 0, len(res.Entries))
	for i := range res.Entries {
		out = append(out, fromEntry(&res.Entries[i]))
	}
	return out, nil
}

// fromEntry reads a listed entry. The kernel lists the network of a
// hash:ip,port,net member as the second address with its length (CIDR2),
// which no other set type sends.
func fromEntry(e *netlink.IPSetEntry) Member {
	m := Member{IP: addrOf(e.IP)}
	if e.Port != nil {
		m.Port = *e.Port
		if e.Protocol != nil {
			m.Protocol = strings.ToLower(protocolName(uint16(*e.Protocol)))
		}
	}
	switch {
	case e.IP2 != nil && e.CIDR2 != 0:
		m = NetMember(m.IP, m.Protocol, m.Port, netip.PrefixFrom(addrOf(e.IP2), int(e.CIDR2)))
	case e.IP2 != nil:
		m.IP2 = addrOf(e.IP2)
	}
	return m
}

// toEntry is the entry that adds or deletes m: a network goes as the
// second address and its length, as the kernel's hash:ip,port,net wants.
func toEntry(m Member) *netlink.IPSetEntry {
	e := &netlink.IPSetEntry{IP: m.IP.AsSlice()}
	if m.Protocol != "" {
		proto := uint8(protocols[strings.ToUpper(m.Protocol)])
		port := m.Port
		e.Protocol, e.Port = &proto, &port
	}
	switch {
	case m.NetBits != 0:
		e.IP2, e.CIDR2 = m.Net().Masked().Addr().AsSlice(), m.NetBits
	case m.IP2.IsValid():
		e.IP2 = m.IP2.AsSlice()
	}
	return e
}

// Add implements IPSets.
func (NetlinkIPSets) Add(set string, m Member) error {
	e := toEntry(m)
	e.Replace = true
	if err := netlink.IpsetAdd(set, e); err != nil {
		return fmt.Errorf("ipset: add %s to %s: %w", m, set, err)
	}
	return nil
}

// Del implements IPSets.
func (NetlinkIPSets) Del(set string, m Member) error {
	if err := netlink.IpsetDel(set, toEntry(m)); err != nil {
		return fmt.Errorf("ipset: delete %s from %s: %w", m, set, err)
	}
	return nil
}

// Destroy implements IPSets. A set that cannot be listed (missing, or no
// ipset support in the kernel at all) is not there to destroy.
func (NetlinkIPSets) Destroy(name string) error {
	if _, err := netlink.IpsetList(name); err != nil {
		return nil
	}
	if err := netlink.IpsetDestroy(name); err != nil && !isNoSet(err) {
		return fmt.Errorf("ipset: destroy %s: %w", name, err)
	}
	return nil
}

// ProcSysctl writes settings under /proc/sys.
type ProcSysctl struct{}

// Set implements Sysctl.
func (ProcSysctl) Set(key, value string) error {
	path := filepath.Join("/proc/sys", key)
	if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == value {
		return nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}
