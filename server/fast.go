package server

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/resolver"
)

// The wire-level fast path answers the common query, a question of class IN
// for a name the cluster zone holds, straight from the datagram: the
// question is read in place, the answer copied from bytes the index
// prepared when it was built, and only the ID, the flags, the owner names'
// spelling and the OPT record are written per query. Nothing is allocated.
// Anything else (other opcodes and classes, extra records, names with
// escapes, aliases, names made when asked, replies that need truncating, a
// chain with a directive the fast path does not know) takes the full path
// through miekg/dns and the chain, which stays the reference: the two
// answer byte for byte alike (TestFastPathMatchesFullPath).

// fastSafeLink reports whether a block with directive name may still be
// answered on the fast path. What each does there: prometheus records the query as
// it would; errors has nothing to log (the fast path has no errors); cache
// must keep nothing for the cluster zone (PassesThrough) and is counted as
// it would count; loadbalance shuffles the address records the same way;
// health only lends metrics; loop and forward sit below kubernetes and are
// never reached by a query it answers. Any other link (log, autopath) keeps
// the block on the full path.
func fastSafeLink(name string) bool {
	switch name {
	case "prometheus", "errors", "cache", "loadbalance", "health", "kubernetes", "loop", "forward":
		return true
	}
	return false
}

// fastPlan collects, while a block's chain is built, what the fast path
// must do in place of each link.
type fastPlan struct {
	rec      *dnsRecorder
	recZones []string
	shuffle  bool
	caches   []*resolver.Cache
	k        *resolver.Kubernetes
}

// fastCache is a cache on the fast path, by the cluster zones' places.
type fastCache struct {
	c *resolver.Cache
	// counted: the cache counts queries for names in the zone.
	counted []bool
}

// fastChain is a block's fast path, or nil where it has none.
type fastChain struct {
	rec      *dnsRecorder
	recZones []string
	shuffle  bool
	caches   []fastCache
	k        *resolver.Kubernetes
	// zones marks the cluster zones (by their place in k.Zones()) answered
	// on the fast path: those every cache passes through.
	zones []bool
	// hits, when set, answers other names from the block's one cache when
	// they are hits there.
	hits *resolver.Cache
}

// chain returns the fast path for a block built with this plan, or nil when
// one of its links needs the full path.
func (p *fastPlan) chain(b *Block) *fastChain {
	if p == nil {
		return nil
	}
	for name := range b.links {
		if !fastSafeLink(name) {
			return nil
		}
	}
	// Cache hits: one cache (two would each count the query); loadbalance,
	// in front of the cache, is repeated on the hit's packed records.
	var hits *resolver.Cache
	if len(p.caches) == 1 {
		hits = p.caches[0]
	}
	if p.k == nil {
		if hits == nil {
			return nil
		}
		return &fastChain{rec: p.rec, recZones: p.recZones, shuffle: p.shuffle, hits: hits}
	}
	zones := p.k.Zones()
	fc := &fastChain{rec: p.rec, recZones: p.recZones, shuffle: p.shuffle, k: p.k, zones: make([]bool, len(zones))}
	for i := range fc.zones {
		fc.zones[i] = true
	}
	for _, c := range p.caches {
		fcc := fastCache{c: c, counted: make([]bool, len(zones))}
		for i, z := range zones {
			cnt, ok := c.PassesThrough(z)
			fcc.counted[i] = cnt
			fc.zones[i] = fc.zones[i] && ok
		}
		fc.caches = append(fc.caches, fcc)
	}
	fc.hits = hits
	if !slices.Contains(fc.zones, true) && hits == nil {
		return nil
	}
	return fc
}

// fastQuery is a query as the fast path reads it.
type fastQuery struct {
	// name is the question's name in lower case, dotted, fully qualified;
	// nameLen is the length of its wire form at offset 12 of the datagram.
	name    []byte
	nameLen int
	// mixedCase is set when the client spelled the name with upper-case
	// letters: answers then carry its spelling.
	mixedCase bool
	qtype     uint16
	edns      bool
	do        bool
	udpSize   int
}

// parseFastQuery reads a datagram that has exactly one question of class IN
// and at most an OPT record (version 0, no options but a cookie), with a
// name of letters, digits, '-' and '_' only; name is written into buf. ok
// is false for anything else, which the full path then answers.
func parseFastQuery(b []byte, buf *[256]byte) (q fastQuery, ok bool) {
	if len(b) < 12+1+4 {
		return q, false
	}
	flags := binary.BigEndian.Uint16(b[2:])
	if flags&0xF800 != 0 { // QR set or an opcode other than QUERY
		return q, false
	}
	if binary.BigEndian.Uint16(b[4:]) != 1 || binary.BigEndian.Uint16(b[6:]) != 0 || binary.BigEndian.Uint16(b[8:]) != 0 {
		return q, false
	}
	arcount := binary.BigEndian.Uint16(b[10:])
	if arcount > 1 {
		return q, false
	}
	off := 12
	n := 0
	for {
		if off >= len(b) {
			return q, false
		}
		l := int(b[off])
		off++
		if l == 0 {
			break
		}
		if l > 63 || off+l > len(b) || n+l+1 > 254 {
			return q, false
		}
		for _, c := range b[off : off+l] {
			switch {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
				q.mixedCase = true
			default:
				return q, false
			}
			buf[n] = c
			n++
		}
		buf[n] = '.'
		n++
		off += l
	}
	if n == 0 {
		buf[0] = '.'
		n = 1
	}
	q.name = buf[:n]
	q.nameLen = off - 12
	if off+4 > len(b) || binary.BigEndian.Uint16(b[off+2:]) != dns.ClassINET {
		return q, false
	}
	q.qtype = binary.BigEndian.Uint16(b[off:])
	off += 4
	q.udpSize = dns.MinMsgSize
	if arcount == 1 {
		// OPT: root name, type, UDP size, extended rcode, version, flags,
		// options.
		if off+11 > len(b) || b[off] != 0 || binary.BigEndian.Uint16(b[off+1:]) != dns.TypeOPT {
			return q, false
		}
		size := int(binary.BigEndian.Uint16(b[off+3:]))
		if b[off+5] != 0 || b[off+6] != 0 {
			return q, false // extended rcode, or a version we answer BADVERS
		}
		q.do = b[off+7]&0x80 != 0
		rdlen := int(binary.BigEndian.Uint16(b[off+9:]))
		off += 11
		if off+rdlen != len(b) || !onlyCookies(b[off:off+rdlen]) {
			return q, false
		}
		off += rdlen
		q.edns = true
		q.udpSize = max(size, dns.MinMsgSize)
	}
	return q, off == len(b)
}

// onlyCookies reports whether OPT data holds nothing but well-formed
// options the full path ignores: DNS cookies (RFC 7873), which miekg/dns
// reads without checking.
func onlyCookies(opts []byte) bool {
	for len(opts) > 0 {
		if len(opts) < 4 {
			return false
		}
		code, l := binary.BigEndian.Uint16(opts), int(binary.BigEndian.Uint16(opts[2:]))
		if code != dns.EDNS0COOKIE || l < 8 || l > 40 || 4+l > len(opts) {
			return false
		}
		opts = opts[4+l:]
	}
	return true
}

// route returns the route for a lower-case name held as bytes, or nil.
func (r *router) route(name []byte) *route {
	for i := range r.routes {
		if resolver.InZoneBytes(name, r.routes[i].zone) {
			return &r.routes[i]
		}
	}
	return nil
}

// replyOPTSize is the length of the OPT record replies carry.
const replyOPTSize = 11

// fastAnswer answers datagram in into out on the fast path and returns the
// reply, or nil when the full path must answer it.
func (l *listener) fastAnswer(in, out []byte, client netip.AddrPort) (reply []byte) {
	var buf [256]byte
	q, ok := parseFastQuery(in, &buf)
	if !ok {
		return nil
	}
	rt := l.router.Load()
	if rt == nil {
		return nil
	}
	r := rt.route(q.name)
	if r == nil || r.fast == nil {
		return nil
	}
	defer func() {
		if p := recover(); p != nil {
			l.log.Error("panic on the fast path; answering on the full path", "panic", p)
			l.metrics.panic()
			reply = nil
		}
	}()
	return r.fast.answer(q, in, out, client)
}

func (f *fastChain) answer(q fastQuery, in, out []byte, client netip.AddrPort) []byte {
	var start time.Time
	if f.rec != nil {
		start = time.Now()
	}
	zi := -1
	if f.k != nil {
		zi = resolver.MatchZoneBytes(q.name, f.k.Zones())
	}
	if zi < 0 || !f.zones[zi] {
		// The cluster zone's answers are not the fast path's here; a name
		// the cache holds may be.
		return f.cacheHit(q, in, out, client, start)
	}
	w, ok := f.k.AnswerWire(q.name, q.qtype, zi)
	if !ok {
		return nil
	}
	question := 12 + q.nameLen + 4
	size := question + len(w.Body) // the reply as the chain sees it, before OPT
	total := size
	if q.edns {
		total += replyOPTSize
	}
	if total > q.udpSize || total > len(out) {
		return nil // truncation is the full path's
	}
	b := out[:total]
	copy(b[:2], in[:2])
	flags := uint16(1<<15|1<<10) | binary.BigEndian.Uint16(in[2:])&(1<<8|1<<4) | uint16(w.Rcode)
	binary.BigEndian.PutUint16(b[2:], flags)
	putSectionCounts(b, w.Answers, w.Ns, w.Extra, q.edns)
	copy(b[12:question], in[12:question])
	copy(b[question:], w.Body)
	if q.mixedCase && w.Answers > 0 {
		spellOwners(b[question:size], in[12:12+q.nameLen], int(w.Answers))
	}
	if f.shuffle && w.Rcode == dns.RcodeSuccess && w.Answers > 1 && (q.qtype == dns.TypeA || q.qtype == dns.TypeAAAA) {
		shuffleRecords(b[question:size], q.nameLen, int(w.Answers))
	}
	if q.edns {
		writeReplyOPT(b[size:], q.do)
	}
	for _, c := range f.caches {
		if c.counted[zi] {
			c.c.CountPassThrough()
		}
	}
	if f.rec != nil {
		zone := ""
		if i := resolver.MatchZoneBytes(q.name, f.recZones); i >= 0 {
			zone = f.recZones[i]
		}
		f.rec.observe(zone, client, false, q.qtype, len(in), w.Rcode, "kubernetes", size, time.Since(start))
	}
	return b
}

// cacheHit answers a query the block's cache holds, as the cache's reply
// fitted to the client's buffer would be packed: the full path packs it
// uncompressed when it fits, so the stored records are the reply's bytes
// once their TTLs are set. A reply that does not fit is the full path's.
func (f *fastChain) cacheHit(q fastQuery, in, out []byte, client netip.AddrPort, start time.Time) []byte {
	if f.hits == nil {
		return nil
	}
	question := 12 + q.nameLen + 4
	limit := min(q.udpSize, len(out))
	if q.edns {
		limit -= replyOPTSize
	}
	if limit < question {
		return nil
	}
	flags := binary.BigEndian.Uint16(in[2:])
	w, ok := f.hits.AnswerWire(q.name, q.qtype, q.do, flags&(1<<4) != 0, flags&(1<<5) != 0, f.shuffle, out[question:limit])
	if !ok {
		return nil
	}
	size := question + w.Len
	total := size
	if q.edns {
		total += replyOPTSize
	}
	b := out[:total]
	copy(b[:2], in[:2])
	reply := uint16(1<<15) | flags&(1<<8|1<<4) | uint16(w.Rcode)
	if w.Authoritative {
		reply |= 1 << 10
	}
	if w.RecursionAvailable {
		reply |= 1 << 7
	}
	if w.AuthenticatedData {
		reply |= 1 << 5
	}
	binary.BigEndian.PutUint16(b[2:], reply)
	putSectionCounts(b, w.Answers, w.Ns, w.Extra, q.edns)
	copy(b[12:question], in[12:question])
	if q.edns {
		writeReplyOPT(b[size:], q.do)
	}
	if f.rec != nil {
		zone := ""
		if i := resolver.MatchZoneBytes(q.name, f.recZones); i >= 0 {
			zone = f.recZones[i]
		}
		f.rec.observe(zone, client, false, q.qtype, len(in), w.Rcode, "cache", size, time.Since(start))
	}
	return b
}

// writeReplyOPT writes the OPT record replies carry.
func writeReplyOPT(o []byte, do bool) {
	o[0] = 0
	binary.BigEndian.PutUint16(o[1:], dns.TypeOPT)
	binary.BigEndian.PutUint16(o[3:], advertisedUDPSize)
	o[5], o[6], o[7], o[8] = 0, 0, 0, 0
	if do {
		o[7] = 0x80
	}
	binary.BigEndian.PutUint16(o[9:], 0)
}

// spellOwners writes the question's spelling of the name over the owner of
// each of the first n records of rrs, all owned by that name.
func spellOwners(rrs, name []byte, n int) {
	off := 0
	for range n {
		copy(rrs[off:], name)
		off += len(name) + 8
		off += 2 + int(binary.BigEndian.Uint16(rrs[off:]))
	}
}

// shuffleRecords puts the first n records of rrs, address records of one
// name and so of one length, in a random order, as the loadbalance link
// does with the same draws.
func shuffleRecords(rrs []byte, nameLen, n int) {
	rdlen := int(binary.BigEndian.Uint16(rrs[nameLen+8:]))
	size := nameLen + 10 + rdlen
	if n*size > len(rrs) {
		return
	}
	for i := n - 1; i > 0; i-- {
		j := rand.IntN(i + 1)
		if i != j {
			a, b := rrs[i*size:(i+1)*size], rrs[j*size:(j+1)*size]
			for k := range a {
				a[k], b[k] = b[k], a[k]
			}
		}
	}
}

// putSectionCounts writes a one-question reply's section counts into its
// header; the OPT record, when the query had one, adds to the additional
// section.
func putSectionCounts(b []byte, answers, ns, extra uint16, edns bool) {
	if edns {
		extra++
	}
	binary.BigEndian.PutUint16(b[4:], 1)
	binary.BigEndian.PutUint16(b[6:], answers)
	binary.BigEndian.PutUint16(b[8:], ns)
	binary.BigEndian.PutUint16(b[10:], extra)
}
