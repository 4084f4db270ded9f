package resolver

import (
	"encoding/binary"
	"unsafe"

	"github.com/miekg/dns"
)

// CacheWire describes a cache hit answered on the wire-level fast path: the
// header bits the reply takes from the entry, and the records written.
type CacheWire struct {
	Rcode                                                int
	Authoritative, RecursionAvailable, AuthenticatedData bool
	// Answers, Ns and Extra count the records of each section.
	Answers, Ns, Extra uint16
	// Len is the length of the records written into the caller's buffer.
	Len int
}

// AnswerWire is Resolve for a cache hit on the wire-level fast path: name
// is the question's name in lower case, fully qualified (bytes from a
// datagram), qtype of class IN, and do, cd and ad the query's DO, CD and AD
// bits. The entry's records, packed when it was stored, are copied into
// body with every TTL set to the time left, as Resolve's reply would carry
// them; nothing is allocated. ok is false, and nothing counted, whenever
// Resolve would do more than return a fresh entry (a miss, an expired or
// stale entry, prefetching on, records that do not fit body): the caller
// then takes the full path.
func (c *Cache) AnswerWire(name []byte, qtype uint16, do, cd, ad bool, body []byte) (w CacheWire, ok bool) {
	if len(name) == 0 || c.opts.Prefetch > 0 || MatchZoneBytes(name, c.opts.Zones) < 0 {
		return w, false
	}
	// The key's name only looks the entry up and is not kept.
	key := cacheKey{name: unsafe.String(&name[0], len(name)), qtype: qtype, class: dns.ClassINET, do: do, cd: cd}
	e, denial := c.lookup(key)
	if e == nil || e.wire == nil || len(e.wire) > len(body) {
		return w, false
	}
	now := c.opts.Now()
	d := e.expires.Sub(now)
	if d <= 0 {
		return w, false
	}
	left := uint32((d + 1e9 - 1) / 1e9)
	copy(body, e.wire)
	for _, off := range e.ttlAt {
		binary.BigEndian.PutUint32(body[off:], left)
	}
	inc(c.opts.Stats.Requests)
	e.touch(now, c.opts.PrefetchWindow)
	if denial {
		inc(c.opts.Stats.DenialHits)
	} else {
		inc(c.opts.Stats.SuccessHits)
	}
	return CacheWire{
		Rcode:              e.rcode,
		Authoritative:      e.authoritative,
		RecursionAvailable: e.ra,
		AuthenticatedData:  e.ad && (ad || do),
		Answers:            uint16(len(e.answer)),
		Ns:                 uint16(len(e.ns)),
		Extra:              uint16(len(e.extra)),
		Len:                len(e.wire),
	}, true
}

// packWire packs an entry's records, uncompressed, as the full path packs a
// reply that fits its client's buffer, and notes where each TTL is. It
// leaves the entry without wire form (full path only) when a record does
// not pack or the rcode needs an extended one.
func (e *cacheEntry) packWire() {
	if e.rcode > 0xF {
		return
	}
	n := 0
	for _, s := range [][]dns.RR{e.answer, e.ns, e.extra} {
		if len(s) > 0xFFFF {
			return
		}
		for _, rr := range s {
			n += dns.Len(rr)
		}
	}
	if n > dns.MaxMsgSize {
		return
	}
	wire := make([]byte, n)
	ttlAt := make([]uint16, 0, len(e.answer)+len(e.ns)+len(e.extra))
	off := 0
	for _, s := range [][]dns.RR{e.answer, e.ns, e.extra} {
		for _, rr := range s {
			start := off
			var err error
			if off, err = dns.PackRR(rr, wire, off, nil, false); err != nil {
				return
			}
			// An uncompressed owner name: labels up to the root's 0.
			i := start
			for i < off && wire[i] != 0 {
				i += 1 + int(wire[i])
			}
			if i+9 > off {
				return
			}
			ttlAt = append(ttlAt, uint16(i+1+4))
		}
	}
	e.wire, e.ttlAt = wire[:off], ttlAt
}
