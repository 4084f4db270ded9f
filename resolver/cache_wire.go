package resolver

import (
	"encoding/binary"
	"math/rand/v2"
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
// them; nothing is allocated. With shuffle (a LoadBalance in front of the
// cache) the answer's address records are put in a random order among
// their places, with the draws LoadBalance makes, so that given the same
// random source the bytes are those of its reply. ok is false, and nothing
// counted, whenever Resolve would do more than return a fresh entry (a
// miss, an expired or stale entry, prefetching on, records that do not fit
// body), or the answer is too long to shuffle in place: the caller then
// takes the full path.
func (c *Cache) AnswerWire(name []byte, qtype uint16, do, cd, ad, shuffle bool, body []byte) (w CacheWire, ok bool) {
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
	shuffle = shuffle && e.rcode == dns.RcodeSuccess && len(e.answer) > 1
	if shuffle && len(e.answer) > maxShuffledAnswer {
		return w, false
	}
	left := uint32((d + 1e9 - 1) / 1e9)
	copy(body, e.wire)
	for _, off := range e.ttlAt {
		binary.BigEndian.PutUint32(body[off:], left)
	}
	if shuffle {
		e.shuffleWire(body, left)
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

// maxShuffledAnswer bounds the answers shuffled on the fast path, so that
// the records' places fit arrays on the stack; longer ones are the full
// path's.
const maxShuffledAnswer = 256

// shuffleWire rewrites the answer section of body, a copy of e.wire with
// every TTL set to ttl, with its A and AAAA records in a random order among
// the places they hold, drawing as shuffleAddresses does: one rand.IntN(i+1)
// for each address place i from the last down to the second, swapping the
// records at places i and j. Records may differ in length (A and AAAA,
// other owners), so they are copied from e.wire in their new order.
func (e *cacheEntry) shuffleWire(body []byte, ttl uint32) {
	n := len(e.answer)
	var start [maxShuffledAnswer + 1]uint16
	var places, from [maxShuffledAnswer]uint8
	addrs := 0
	for r := range n {
		at := int(e.ttlAt[r]) // the TTL follows type and class
		rrtype := binary.BigEndian.Uint16(e.wire[at-4:])
		start[r+1] = uint16(at + 4 + 2 + int(binary.BigEndian.Uint16(e.wire[at+4:])))
		if rrtype == dns.TypeA || rrtype == dns.TypeAAAA {
			places[addrs] = uint8(r)
			from[addrs] = uint8(r)
			addrs++
		}
	}
	if addrs < 2 {
		return
	}
	for i := addrs - 1; i > 0; i-- {
		j := rand.IntN(i + 1)
		from[i], from[j] = from[j], from[i]
	}
	off, k := 0, 0
	for r := range n {
		s := r
		if k < addrs && int(places[k]) == r {
			s = int(from[k])
			k++
		}
		rec := e.wire[start[s]:start[s+1]]
		copy(body[off:], rec)
		binary.BigEndian.PutUint32(body[off+int(e.ttlAt[s]-start[s]):], ttl)
		off += len(rec)
	}
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
