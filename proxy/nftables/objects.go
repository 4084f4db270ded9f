package nftables

import (
	"net/netip"

	"github.com/clusterdns/clusterdns/proxy"
)

// The backend describes what it wants of the kernel as typed objects and a
// list of operations on them, one list per transaction. Each runner turns
// the same operations into what it speaks: nft script text (ExecRunner),
// netlink messages (NetlinkRunner) or changes of an in-memory table (Fake).
// Nothing parses text back into objects.

// Verb is what an operation does to its object.
type Verb uint8

const (
	// Add creates the object, or leaves it as it is when it exists (a rule
	// is always appended).
	Add Verb = iota
	// Flush empties a chain, set or map.
	Flush
	// Delete removes the object, which must exist and (for chains and
	// sets) be unreferenced.
	Delete
)

func (v Verb) String() string {
	switch v {
	case Add:
		return "add"
	case Flush:
		return "flush"
	case Delete:
		return "delete"
	}
	return "verb?"
}

// Object is one of *Table, *Chain, *Rule, *Set and *Element.
type Object interface {
	// family is the table the object lives in.
	family() proxy.Family
}

// Op is one operation of a transaction.
type Op struct {
	Verb   Verb
	Object Object
}

// Transaction is the operations of one sync, in the order the kernel needs
// them: objects are declared and filled before anything refers to them and
// removed only after the last reference is gone. All apply or none.
type Transaction struct {
	// Full says the transaction declares the tables and their fixed
	// objects (a full sync or cleanup) rather than changing a few service
	// ports' objects.
	Full bool
	Ops  []Op
	text textWriter // Script's buffer, kept between syncs
}

// Table is the backend's table of one family, named TableName.
type Table struct {
	Family proxy.Family
}

// Hook attaches a base chain to a netfilter hook.
type Hook struct {
	Type     string // "nat" or "filter"
	Hook     string // "prerouting", "output", ...
	Priority string // a number or a name nft knows ("dstnat")
}

// Chain is a chain; a base chain has a Hook.
type Chain struct {
	Family proxy.Family
	Name   string
	Hook   *Hook
}

// Rule is a rule appended to a chain: its statements in order.
type Rule struct {
	Family proxy.Family
	Chain  string
	Stmts  []Stmt
}

// KeyType is one field of a set's (concatenated) key.
type KeyType uint8

const (
	KeyAddr  KeyType = iota // an address of the table's family
	KeyProto                // inet_proto
	KeyPort                 // inet_service
)

// Set is a set or, with Map, a verdict map.
type Set struct {
	Family proxy.Family
	Name   string
	Key    []KeyType
	Map    bool // a map from Key to a verdict
	// Timeout, in seconds, makes a dynamic set whose entries expire (the
	// ClientIP affinity sets, filled by the packet path).
	Timeout uint32
	// Endpoints, a protocol ("tcp"), makes Map a data map of the slots of
	// that protocol's endpoints (Key unused): a number, as numgen draws
	// it, to an endpoint address and port. A map per protocol, because
	// nft 1.0.6 reads a map whose data is a port of any transport protocol
	// ("th dport") back as conflicting with the rules that use it.
	Endpoints string
}

// Value is one field of an element's key: an address, a protocol or a port,
// as the set's KeyType at its position says.
type Value struct {
	Addr  netip.Addr
	Proto string // "tcp", "udp", "sctp"
	Port  uint16
}

// Element is an element of a set or, with a Goto, of a verdict map or,
// with To, of the endpoints map (then Slot is its key and Key is unused).
type Element struct {
	Family proxy.Family
	Set    string
	Key    []Value
	Goto   string // the chain a map element goes to
	Slot   uint32
	To     netip.AddrPort
}

func (t *Table) family() proxy.Family   { return t.Family }
func (c *Chain) family() proxy.Family   { return c.Family }
func (r *Rule) family() proxy.Family    { return r.Family }
func (s *Set) family() proxy.Family     { return s.Family }
func (e *Element) family() proxy.Family { return e.Family }

// Stmt is one statement of a rule. Only the statements below exist: the
// runners and the fake know each of them.
type Stmt interface {
	// write writes the statement as nft reads it or, with list, as
	// `nft list` prints it; ip is "ip" or "ip6".
	write(w *textWriter, ip string, list bool)
}

// The statements. A match ends the rule when it fails; a verdict ends it
// when it is reached.
type (
	// Numgen matches `numgen random mod Mod == 0`: one packet in Mod.
	Numgen struct{ Mod int }
	// CtStateNew matches the first packet of a connection.
	CtStateNew struct{}
	// FibLocal matches a destination (with Src, a source) that is an
	// address of the node.
	FibLocal struct{ Src bool }
	// AddrCmp compares the source (Src) or destination with a prefix.
	AddrCmp struct {
		Src, Not bool
		Prefix   netip.Prefix
	}
	// DaddrIn matches a destination inside any of the prefixes.
	DaddrIn struct{ Prefixes []netip.Prefix }
	// SaddrIn matches a source listed in Set.
	SaddrIn struct{ Set string }
	// PairIn matches a source . destination pair listed in Set.
	PairIn struct{ Set string }
	// MarkClear matches a packet whose mark has none of Mask's bits.
	MarkClear struct{ Mask uint32 }

	// VMap looks the destination (with Addr) . protocol . port up in a
	// verdict map.
	VMap struct {
		Map  string
		Addr bool
	}
	// UpdateSaddr adds (or refreshes) the source address in a dynamic set.
	UpdateSaddr struct{ Set string }
	// MarkSet ors (Op '|') or xors (Op '^') Mask into the packet's mark.
	MarkSet struct {
		Op   byte
		Mask uint32
	}
	// DNAT translates the destination of a Proto packet to To.
	DNAT struct {
		Proto string
		To    netip.AddrPort
	}
	// DNATSlot translates the destination of a Proto packet to one of Mod
	// endpoints, drawn at random: `numgen random mod Mod offset Offset`
	// picks a slot of the endpoints map Map, whose element is the target.
	DNATSlot struct {
		Proto  string
		Mod    int
		Offset uint32
		Map    string
	}
	// Masquerade translates the source to the outgoing interface's address.
	Masquerade struct{}
	// Reject refuses the packet (a TCP reset, an ICMP error).
	Reject struct{}
	// Drop discards the packet silently.
	Drop struct{}
	// Jump runs another chain and comes back; Goto does not come back.
	Jump struct{ Chain string }
	Goto struct{ Chain string }
	// Return leaves the chain.
	Return struct{}
)

// stmtEqual compares two statements; DaddrIn, the one statement with a
// slice, is compared by value.
func stmtEqual(a, b Stmt) bool {
	if x, ok := a.(DaddrIn); ok {
		y, ok := b.(DaddrIn)
		if !ok || len(x.Prefixes) != len(y.Prefixes) {
			return false
		}
		for i := range x.Prefixes {
			if x.Prefixes[i] != y.Prefixes[i] {
				return false
			}
		}
		return true
	}
	if _, ok := b.(DaddrIn); ok {
		return false
	}
	return a == b
}

func rulesEqual(a, b []Rule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i].Stmts) != len(b[i].Stmts) {
			return false
		}
		for j := range a[i].Stmts {
			if !stmtEqual(a[i].Stmts[j], b[i].Stmts[j]) {
				return false
			}
		}
	}
	return true
}
