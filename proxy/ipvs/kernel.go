package ipvs

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// VirtualServer is one IPVS virtual service: where clients send.
type VirtualServer struct {
	// Protocol is "TCP", "UDP" or "SCTP".
	Protocol  string
	Address   netip.AddrPort
	Scheduler string
	// Persistence is the ClientIP affinity timeout in seconds; zero means none.
	Persistence uint32
}

// Key identifies a virtual server in the kernel.
func (v VirtualServer) Key() VSKey { return VSKey{Protocol: v.Protocol, Address: v.Address} }

// VSKey is what the kernel identifies a virtual server by.
type VSKey struct {
	Protocol string
	Address  netip.AddrPort
}

func (k VSKey) String() string { return k.Protocol + " " + k.Address.String() }

func (k VSKey) less(o VSKey) bool {
	if k.Protocol != o.Protocol {
		return k.Protocol < o.Protocol
	}
	return k.Address.Compare(o.Address) < 0
}

// RealServer is one destination of a virtual server. Forwarding is always
// masquerade.
type RealServer struct {
	Address netip.AddrPort
	Weight  int
	// ActiveConn and InactConn are the kernel's connection counts; they are
	// read, never written.
	ActiveConn, InactConn int
}

// IPVS is the backend's view of the kernel's IPVS table. NetlinkIPVS is the
// real one, FakeKernel the one for tests. Deleting what is not there is an
// error here; the backend only deletes what it listed or programmed.
type IPVS interface {
	VirtualServers() ([]VirtualServer, error)
	RealServers(vs VSKey) ([]RealServer, error)
	AddVirtualServer(vs VirtualServer) error
	UpdateVirtualServer(vs VirtualServer) error
	DeleteVirtualServer(vs VSKey) error
	AddRealServer(vs VSKey, rs RealServer) error
	UpdateRealServer(vs VSKey, rs RealServer) error
	DeleteRealServer(vs VSKey, rs netip.AddrPort) error
	// SetTimeouts sets the connection timeouts; a zero duration keeps the
	// kernel's value.
	SetTimeouts(tcp, tcpFin, udp time.Duration) error
}

// LocalAddr is an address of the node and the link it is on.
type LocalAddr struct {
	Addr netip.Addr
	Link string
	// Loopback is set for loopback links; LinkLocal for fe80::/10 and
	// 169.254.0.0/16 addresses.
	Loopback, LinkLocal bool
}

// Links manages the dummy link and lists the node's addresses.
type Links interface {
	// EnsureDummy creates the dummy link if it is missing (and leaves it
	// down: its addresses are local, and it never answers ARP).
	EnsureDummy(name string) error
	// DeleteLink deletes a link; a missing link is not an error.
	DeleteLink(name string) error
	// Addrs lists the addresses on a link; a missing link has none.
	Addrs(name string) ([]netip.Addr, error)
	AddAddr(link string, a netip.Addr) error
	DelAddr(link string, a netip.Addr) error
	// LocalAddrs lists every address of the node, on every link.
	LocalAddrs() ([]LocalAddr, error)
}

// Member is one ipset entry: an address; an address and protocol:port
// (hash:ip,port); or both plus a second address (hash:ip,port,ip) or a
// network (hash:ip,port,net).
//
// A network is IP2 and NetBits rather than a netip.Prefix field, which
// would make every member, and the maps of members a full sync builds,
// a third larger for the sake of one set.
type Member struct {
	IP       netip.Addr
	Protocol string // lower case, as ipset writes it; empty for hash:ip
	Port     uint16
	// NetBits is the network's length in a hash:ip,port,net member, whose
	// IP2 is then the network's address, masked as the kernel keeps it;
	// zero for an address (ipset takes no /0 network).
	NetBits uint8
	IP2     netip.Addr
}

// NetMember is the hash:ip,port,net member of ip, proto:port and network n.
func NetMember(ip netip.Addr, proto string, port uint16, n netip.Prefix) Member {
	n = n.Masked()
	return Member{IP: ip, Protocol: proto, Port: port, IP2: n.Addr(), NetBits: uint8(n.Bits())}
}

// Net is the network of a hash:ip,port,net member; invalid for others.
func (m Member) Net() netip.Prefix {
	if m.NetBits == 0 {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(m.IP2, int(m.NetBits))
}

// String is the member in ipset's own syntax: "10.0.0.1,tcp:80,10.0.0.1"
// or "10.0.0.1,tcp:80,192.0.2.0/24". A network is always written with its
// length, so that it reads back as a network.
func (m Member) String() string {
	s := m.IP.String()
	if m.Protocol != "" {
		s += "," + m.Protocol + ":" + strconv.Itoa(int(m.Port))
	}
	switch {
	case m.NetBits != 0:
		s += "," + m.Net().String()
	case m.IP2.IsValid():
		s += "," + m.IP2.String()
	}
	return s
}

// ParseMember reads a member in ipset's syntax; a third part with a "/" is
// a network.
func ParseMember(s string) (Member, error) {
	parts := strings.Split(s, ",")
	var m Member
	var err error
	if m.IP, err = netip.ParseAddr(parts[0]); err != nil {
		return m, fmt.Errorf("ipset member %q: %w", s, err)
	}
	if len(parts) > 1 {
		proto, port, ok := strings.Cut(parts[1], ":")
		n, err := strconv.ParseUint(port, 10, 16)
		if !ok || err != nil {
			return m, fmt.Errorf("ipset member %q: want proto:port", s)
		}
		m.Protocol, m.Port = proto, uint16(n)
	}
	switch {
	case len(parts) > 3:
		return m, fmt.Errorf("ipset member %q: too many parts", s)
	case len(parts) == 3 && strings.Contains(parts[2], "/"):
		n, err := netip.ParsePrefix(parts[2])
		if err == nil && n.Bits() == 0 {
			err = fmt.Errorf("a /0 network is no member")
		}
		if err != nil {
			return m, fmt.Errorf("ipset member %q: %w", s, err)
		}
		m = NetMember(m.IP, m.Protocol, m.Port, n)
	case len(parts) == 3:
		if m.IP2, err = netip.ParseAddr(parts[2]); err != nil {
			return m, fmt.Errorf("ipset member %q: %w", s, err)
		}
	}
	return m, nil
}

func (m Member) less(o Member) bool {
	if c := m.IP.Compare(o.IP); c != 0 {
		return c < 0
	}
	if m.Protocol != o.Protocol {
		return m.Protocol < o.Protocol
	}
	if m.Port != o.Port {
		return m.Port < o.Port
	}
	if m.IP2 != o.IP2 {
		return m.IP2.Less(o.IP2)
	}
	return m.NetBits < o.NetBits
}

// SetSpec declares an ipset.
type SetSpec struct {
	Name string
	// Type is an ipset type: hash:ip, hash:ip,port, hash:ip,port,ip or
	// hash:ip,port,net.
	Type   string
	Family uint8 // 4 or 6
}

// IPSets manages ipsets.
type IPSets interface {
	// EnsureSet creates the set if it is missing.
	EnsureSet(s SetSpec) error
	// Members lists a set's members; a missing set has none.
	Members(name string) ([]Member, error)
	Add(set string, m Member) error
	Del(set string, m Member) error
	// Destroy deletes a set; a missing set is not an error.
	Destroy(name string) error
}

// Sysctl writes kernel settings, such as "net/ipv4/vs/conntrack".
type Sysctl interface {
	Set(key, value string) error
}
