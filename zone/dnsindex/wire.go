package dnsindex

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"strings"

	"github.com/miekg/dns"
)

// Wire is an answer in wire form, ready to follow a reply's header and
// question: the answer records (owned by the name in the index's lower-case
// spelling), the authority and the additional records, uncompressed, as
// miekg/dns packs them when compression is off. Body is shared by every
// query and must not be written: a caller copies it into its reply buffer
// and patches the copy.
type Wire struct {
	Rcode              int
	Answers, Ns, Extra uint16
	Body               []byte
}

// The prepared bytes of a node are a sequence of entries, one per record
// type it holds: type, answer count, additional count, body length (each
// two bytes, big endian), then the body. A node has one to three types, so
// a scan finds one at once, and the whole costs one slice per node.
const wireEntryHeader = 8

// prepare packs the node's answers per type, once, when the node is built:
// queries then copy bytes instead of packing records. A name that is an
// alias (CNAME) gets none: its answers follow the chain, which the full
// path does. Records that do not pack, or an answer too large for a
// two-byte length, are left to the full path too. A name without records
// (an empty non-terminal) gets an empty, not a nil, slice: it answers NODATA
// for every type.
func (n *Node) prepare() {
	n.wire = nil
	// Reverse names are answered on the full path (an endpoint's PTRs are
	// made when asked): preparing theirs would only hold memory.
	if n.CNAME() != nil || strings.HasSuffix(n.Name, ".arpa.") {
		return
	}
	var entries [][]byte
	size := 0
	for i := 0; i < len(n.rrs); {
		t := n.rrs[i].Header().Rrtype
		j := i
		for j < len(n.rrs) && n.rrs[j].Header().Rrtype == t {
			j++
		}
		var extra []dns.RR
		if t == dns.TypeSRV {
			extra = n.Extra
		}
		entry, ok := packEntry(t, n.rrs[i:j], extra)
		if !ok {
			n.wire = nil
			return
		}
		entries = append(entries, entry)
		size += len(entry)
		i = j
	}
	// One allocation of the exact size: tens of thousands of nodes each
	// hold one.
	out := make([]byte, 0, size)
	for _, e := range entries {
		out = append(out, e...)
	}
	n.wire = out
}

// packEntry packs one type's records, and the additional records that go
// with them, as one prepared entry.
func packEntry(t uint16, answer, extra []dns.RR) ([]byte, bool) {
	size := 0
	for _, rr := range answer {
		size += dns.Len(rr)
	}
	for _, rr := range extra {
		size += dns.Len(rr)
	}
	if size > 0xFFFF || len(answer) > 0xFFFF || len(extra) > 0xFFFF {
		return nil, false
	}
	buf := make([]byte, wireEntryHeader+size)
	binary.BigEndian.PutUint16(buf, t)
	binary.BigEndian.PutUint16(buf[2:], uint16(len(answer)))
	binary.BigEndian.PutUint16(buf[4:], uint16(len(extra)))
	off := wireEntryHeader
	for _, rrs := range [2][]dns.RR{answer, extra} {
		for _, rr := range rrs {
			var err error
			if off, err = dns.PackRR(rr, buf, off, nil, false); err != nil {
				return nil, false
			}
		}
	}
	binary.BigEndian.PutUint16(buf[6:], uint16(off-wireEntryHeader))
	return buf[:off:off], true
}

// wireFor returns the node's prepared answer for qtype: found is false when
// the node holds no record of that type (the answer is NODATA), ok false
// when the node has no prepared answers at all.
func (n *Node) wireFor(qtype uint16) (w Wire, found, ok bool) {
	if n.wire == nil {
		return Wire{}, false, false
	}
	b := n.wire
	for len(b) >= wireEntryHeader {
		l := int(binary.BigEndian.Uint16(b[6:]))
		if binary.BigEndian.Uint16(b) == qtype {
			return Wire{
				Answers: binary.BigEndian.Uint16(b[2:]),
				Extra:   binary.BigEndian.Uint16(b[4:]),
				Body:    b[wireEntryHeader : wireEntryHeader+l : wireEntryHeader+l],
			}, true, true
		}
		b = b[wireEntryHeader+l:]
	}
	return Wire{}, false, true
}

// prepareSOAs packs each zone's SOA record for NODATA and NXDOMAIN answers.
func (ix *Index) prepareSOAs() {
	ix.soaWire = make([][]byte, len(ix.options.Zones))
	for i, z := range ix.options.Zones {
		soa := ix.soa[z]
		if soa == nil {
			continue
		}
		buf := make([]byte, dns.Len(soa))
		if off, err := dns.PackRR(soa, buf, 0, nil, false); err == nil {
			ix.soaWire[i] = buf[:off:off]
		}
	}
}

// LookupWire answers a query for a lower-case, fully qualified name (as
// bytes, so that a caller parsing a datagram need not make a string) of a
// type, in zone number zi of the options' zones, from prepared bytes. It
// allocates nothing. ok is false whenever the answer needs more than
// prepared bytes: aliases, reverse names, names made when asked (endpoint
// names of Services with a cluster IP, insecure pod names), ANY queries.
// A missing name answers NXDOMAIN; the caller decides before asking whether
// such a name falls through instead.
func (ix *Index) LookupWire(name []byte, qtype uint16, zi int) (Wire, bool) {
	if qtype == dns.TypeANY || zi < 0 || zi >= len(ix.soaWire) || ix.soaWire[zi] == nil {
		return Wire{}, false
	}
	// Reverse names may gain the PTRs of endpoint addresses when asked.
	if len(name) > 6 && string(name[len(name)-6:]) == ".arpa." {
		return Wire{}, false
	}
	n := ix.shards[uint8(maphash.Bytes(ix.seed, name))][string(name)]
	if n == nil {
		if ix.mayBeEndpointName(name) {
			return Wire{}, false
		}
		return Wire{Rcode: dns.RcodeNameError, Ns: 1, Body: ix.soaWire[zi]}, true
	}
	w, found, ok := n.wireFor(qtype)
	if !ok {
		return Wire{}, false
	}
	if !found {
		return Wire{Ns: 1, Body: ix.soaWire[zi]}, true
	}
	return w, true
}

// mayBeEndpointName reports whether name is HOST.PARENT for a parent whose
// endpoint names are made when asked (see endpointName).
func (ix *Index) mayBeEndpointName(name []byte) bool {
	i := bytes.IndexByte(name, '.')
	if i < 0 {
		return false
	}
	parent := name[i+1:]
	p := ix.shards[uint8(maphash.Bytes(ix.seed, parent))][string(parent)]
	return p != nil && p.hosts != nil
}

// Nodes lists every node the index keeps (not the names made when asked),
// for tests that walk every record row.
func (ix *Index) Nodes() []*Node {
	var out []*Node
	for _, m := range ix.shards {
		for _, n := range m {
			out = append(out, n)
		}
	}
	return out
}
