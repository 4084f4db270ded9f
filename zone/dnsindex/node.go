package dnsindex

import (
	"slices"

	"github.com/miekg/dns"
)

// Node holds the records of one owner name, ready to be copied into an answer.
// Owner names are the canonical lower-case name. Records are kept in one
// slice grouped by type (a Node is mostly one or two records, and there are
// tens of thousands of them); every slice is shared and read-only: callers
// copy before they reorder.
type Node struct {
	Name string
	rrs  []dns.RR
	// Extra is the additional section for SRV answers: the targets' addresses.
	Extra []dns.RR
	// hosts, on the name of a Service with a cluster IP, are its endpoints:
	// their names (HOST.<this name>) are made when asked rather than kept,
	// as they are rarely asked and would be most of the index.
	hosts *[]endpointRecord
	// wire holds the node's answers packed, per type (see prepare).
	wire []byte
}

// NewNode returns a node holding rrs, for answers made outside an index.
func NewNode(name string, rrs ...dns.RR) *Node {
	n := &Node{Name: name, rrs: rrs}
	n.group()
	return n
}

// Records returns the node's records of the given type.
func (n *Node) Records(qtype uint16) []dns.RR {
	for i, rr := range n.rrs {
		if rr.Header().Rrtype != qtype {
			continue
		}
		j := i + 1
		for j < len(n.rrs) && n.rrs[j].Header().Rrtype == qtype {
			j++
		}
		return n.rrs[i:j:j]
	}
	return nil
}

// All returns every record of the node.
func (n *Node) All() []dns.RR { return n.rrs[:len(n.rrs):len(n.rrs)] }

// CNAME returns the node's CNAME record, if it is an alias.
func (n *Node) CNAME() *dns.CNAME {
	if len(n.rrs) == 1 {
		if c, ok := n.rrs[0].(*dns.CNAME); ok {
			return c
		}
	}
	return nil
}

// add appends records while the node is being built.
func (n *Node) add(rrs ...dns.RR) { n.rrs = append(n.rrs, rrs...) }

// has reports whether the node holds a record of the type.
func (n *Node) has(t uint16) bool { return len(n.Records(t)) > 0 }

// group orders the records by type (stable, so each type keeps its order),
// which Records relies on.
func (n *Node) group() {
	slices.SortStableFunc(n.rrs, func(a, b dns.RR) int { return int(a.Header().Rrtype) - int(b.Header().Rrtype) })
}

// merge adds a node to a shard. A name that two Services share (an endpoint
// address behind two Services has two PTRs) gets a fresh node holding both,
// so nodes of cached parts are never changed.
func merge(m map[string]*Node, n *Node) {
	old := m[n.Name]
	if old == nil {
		m[n.Name] = n
		return
	}
	c := &Node{Name: n.Name, hosts: old.hosts}
	if c.hosts == nil {
		c.hosts = n.hosts
	}
	for _, src := range []*Node{old, n} {
		c.add(src.rrs...)
		c.Extra = append(c.Extra, src.Extra...)
	}
	c.group()
	c.prepare()
	m[n.Name] = c
}

func withOwner(rrs []dns.RR, name string) []dns.RR {
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		c := dns.Copy(rr)
		c.Header().Name = name
		out[i] = c
	}
	return out
}

func appendUnique(dst, src []dns.RR) []dns.RR {
	for _, rr := range src {
		dup := false
		for _, have := range dst {
			if dns.IsDuplicate(have, rr) {
				dup = true
				break
			}
		}
		if !dup {
			dst = append(dst, rr)
		}
	}
	return dst
}
