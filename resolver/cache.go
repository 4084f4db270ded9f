package resolver

import (
	"context"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"
)

// Defaults of the cache directive, as in CoreDNS.
const (
	DefaultCacheCapacity  = 9984
	DefaultSuccessMaxTTL  = 3600 * time.Second
	DefaultDenialMaxTTL   = 1800 * time.Second
	DefaultCacheMinTTL    = 5 * time.Second
	DefaultPrefetchWindow = time.Minute
	DefaultPrefetchPct    = 10
	DefaultServeStale     = time.Hour
)

// CachePolicy governs one kind of answer (success or denial).
type CachePolicy struct {
	Capacity int
	// MaxTTL caps how long an answer is kept; MinTTL raises a shorter TTL of a
	// non-authoritative answer (an upstream's), never of an authoritative one:
	// the cluster zone's records are never served past their TTL.
	MaxTTL, MinTTL time.Duration
	// Disabled lists zones whose answers of this kind are not stored.
	Disabled []string
}

// CacheOptions configure a Cache.
type CacheOptions struct {
	// Zones are the names cached; others pass through.
	Zones           []string
	Success, Denial CachePolicy
	// Prefetch refreshes an entry asked at least Prefetch times, with no gap
	// longer than PrefetchWindow, once PrefetchPercent of its TTL remains.
	// Zero disables prefetching.
	Prefetch        int
	PrefetchWindow  time.Duration
	PrefetchPercent int
	// ServeStale keeps serving an expired non-authoritative entry for this
	// long (with TTL 0) while it is refreshed; StaleVerify asks upstream
	// first and serves the stale entry only if that fails.
	ServeStale  time.Duration
	StaleVerify bool
	Stats       CacheStats
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// CacheStats receives a cache's measurements; nil fields are not measured.
type CacheStats struct {
	Requests, Misses, Prefetches, ServedStale Counter
	SuccessHits, DenialHits                   Counter
	SuccessEntries, DenialEntries             Gauge
}

// cacheKey identifies a cached answer. The name is lower case. The query's
// DNSSEC flags are part of it because an upstream's reply depends on them:
// DO brings signatures, CD skips validation (a CD answer may be bogus and
// must never reach a query without CD), and AD or DO ask for the AD bit
// (RFC 6840 section 5.8), which an upstream otherwise leaves clear.
type cacheKey struct {
	name  string
	qtype uint16
	class uint16
	do    bool
	cd    bool
}

// Cache answers repeated queries from memory: successful answers and, per
// RFC 2308, negative ones (NXDOMAIN and NODATA, kept for the SOA's negative
// TTL). TTLs in its answers count down.
type Cache struct {
	opts    CacheOptions
	next    Handler
	success *lru.Cache[cacheKey, *cacheEntry]
	denial  *lru.Cache[cacheKey, *cacheEntry]
}

// NewCache returns a caching handler in front of next.
func NewCache(opts CacheOptions, next Handler) (*Cache, error) {
	for _, p := range []*CachePolicy{&opts.Success, &opts.Denial} {
		if p.Capacity <= 0 {
			p.Capacity = DefaultCacheCapacity
		}
	}
	if opts.Success.MaxTTL <= 0 {
		opts.Success.MaxTTL = DefaultSuccessMaxTTL
	}
	if opts.Denial.MaxTTL <= 0 {
		opts.Denial.MaxTTL = DefaultDenialMaxTTL
	}
	if opts.PrefetchWindow <= 0 {
		opts.PrefetchWindow = DefaultPrefetchWindow
	}
	if opts.PrefetchPercent <= 0 {
		opts.PrefetchPercent = DefaultPrefetchPct
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if len(opts.Zones) == 0 {
		opts.Zones = []string{"."}
	}
	c := &Cache{opts: opts, next: next}
	var err error
	if c.success, err = lru.New[cacheKey, *cacheEntry](opts.Success.Capacity); err != nil {
		return nil, err
	}
	if c.denial, err = lru.New[cacheKey, *cacheEntry](opts.Denial.Capacity); err != nil {
		return nil, err
	}
	return c, nil
}

// Len returns the number of success and denial entries.
func (c *Cache) Len() (success, denial int) { return c.success.Len(), c.denial.Len() }

// Resolve answers from the cache when it can, else asks next and stores the
// reply.
func (c *Cache) Resolve(ctx context.Context, req *Request) (*dns.Msg, error) {
	if MatchZone(req.Name, c.opts.Zones) == "" {
		return c.next.Resolve(ctx, req)
	}
	inc(c.opts.Stats.Requests)
	key := keyOf(req)
	now := c.opts.Now()
	e, denial := c.lookup(key)
	if e != nil {
		if now.Before(e.expires) {
			e.touch(now, c.opts.PrefetchWindow)
			if denial {
				inc(c.opts.Stats.DenialHits)
			} else {
				inc(c.opts.Stats.SuccessHits)
			}
			if c.shouldPrefetch(e, now) {
				inc(c.opts.Stats.Prefetches)
				c.refresh(req, key, e)
			}
			Answered(ctx, "cache")
			return e.reply(req, now), nil
		}
		if c.opts.ServeStale > 0 && !e.authoritative && now.Before(e.expires.Add(c.opts.ServeStale)) {
			return c.stale(ctx, req, key, e, now)
		}
	}
	inc(c.opts.Stats.Misses)
	m, err := c.fill(ctx, req, key, now)
	return m, err
}

// fill asks next and stores the reply. The query goes out with AD set, so
// that the entry learns whether the upstream validated the data whatever
// the asking client set; the reply to a client that asked with neither AD
// nor DO then has AD cleared (RFC 6840 section 5.7). One entry thus serves
// clients with and without AD, and each gets the AD bit it asked for.
func (c *Cache) fill(ctx context.Context, req *Request, key cacheKey, now time.Time) (*dns.Msg, error) {
	askedAD := req.Msg.AuthenticatedData
	req.Msg.AuthenticatedData = true
	m, err := c.next.Resolve(ctx, req)
	req.Msg.AuthenticatedData = askedAD
	if err != nil || m == nil {
		return m, err
	}
	c.store(key, req.Name, m, now)
	if !wantsAD(req.Msg) {
		m.AuthenticatedData = false
	}
	return m, nil
}

// wantsAD reports whether a reply to q may carry AD: q set AD or DO.
func wantsAD(q *dns.Msg) bool {
	if q.AuthenticatedData {
		return true
	}
	opt := q.IsEdns0()
	return opt != nil && opt.Do()
}

// stale serves an expired entry: at once while refreshing it behind the
// scenes, or, with StaleVerify, only if asking again fails.
func (c *Cache) stale(ctx context.Context, req *Request, key cacheKey, e *cacheEntry, now time.Time) (*dns.Msg, error) {
	if c.opts.StaleVerify {
		inc(c.opts.Stats.Misses)
		m, err := c.fill(ctx, req, key, now)
		// Only an answer replaces the stale one: a SERVFAIL, or a REFUSED
		// from a forward shedding load, is the failure serve_stale covers.
		if err == nil && m != nil && (m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError) {
			return m, nil
		}
	} else {
		c.refresh(req, key, e)
	}
	inc(c.opts.Stats.ServedStale)
	Answered(ctx, "cache")
	return e.reply(req, now), nil
}

func (c *Cache) lookup(key cacheKey) (e *cacheEntry, denial bool) {
	if e, ok := c.success.Get(key); ok {
		return e, false
	}
	if e, ok := c.denial.Get(key); ok {
		return e, true
	}
	return nil, false
}

func (c *Cache) shouldPrefetch(e *cacheEntry, now time.Time) bool {
	if c.opts.Prefetch <= 0 || int(e.hits.Load()) < c.opts.Prefetch {
		return false
	}
	left := e.expires.Sub(now)
	return left <= time.Second || left*100 <= e.ttl*time.Duration(c.opts.PrefetchPercent)
}

// refresh asks next again in the background, once per entry at a time.
func (c *Cache) refresh(req *Request, key cacheKey, e *cacheEntry) {
	if !e.refreshing.CompareAndSwap(false, true) {
		return
	}
	q := req.Msg.Copy()
	q.AuthenticatedData = true // as fill asks
	r := NewRequest(q, req.Client, req.TCP)
	go func() {
		defer e.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), queryBudget)
		defer cancel()
		m, err := c.next.Resolve(ctx, r)
		if err == nil && m != nil {
			c.store(key, r.Name, m, c.opts.Now())
		}
	}()
}

// store keeps a reply if its kind is cacheable for name.
func (c *Cache) store(key cacheKey, name string, m *dns.Msg, now time.Time) {
	if m.Truncated {
		return
	}
	var ttl time.Duration
	var policy *CachePolicy
	var target *lru.Cache[cacheKey, *cacheEntry]
	var gauge Gauge
	switch {
	case m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0:
		policy, target, gauge = &c.opts.Success, c.success, c.opts.Stats.SuccessEntries
		ttl = minTTL(m.Answer, m.Ns)
	case m.Rcode == dns.RcodeNameError || m.Rcode == dns.RcodeSuccess:
		policy, target, gauge = &c.opts.Denial, c.denial, c.opts.Stats.DenialEntries
		soa := findSOA(m.Ns)
		if soa == nil {
			return
		}
		// RFC 2308 section 5: the lesser of the SOA's TTL and its MINIMUM.
		ttl = time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
	default:
		return
	}
	if MatchZone(name, policy.Disabled) != "" {
		return
	}
	ttl = min(ttl, policy.MaxTTL)
	if !m.Authoritative && ttl < policy.MinTTL {
		ttl = policy.MinTTL
	}
	if ttl <= 0 {
		return
	}
	e := &cacheEntry{
		rcode:         m.Rcode,
		authoritative: m.Authoritative,
		ad:            m.AuthenticatedData,
		ra:            m.RecursionAvailable,
		answer:        m.Answer[:len(m.Answer):len(m.Answer)],
		ns:            m.Ns[:len(m.Ns):len(m.Ns)],
		extra:         withoutOPT(m.Extra),
		ttl:           ttl,
		expires:       now.Add(ttl),
	}
	e.packWire()
	// A name cached as one kind is no longer the other.
	if target == c.success {
		c.denial.Remove(key)
	} else {
		c.success.Remove(key)
	}
	target.Add(key, e)
	if gauge != nil {
		gauge.Set(float64(target.Len()))
	}
	if c.opts.Stats.SuccessEntries != nil && target != c.success {
		c.opts.Stats.SuccessEntries.Set(float64(c.success.Len()))
	}
	if c.opts.Stats.DenialEntries != nil && target != c.denial {
		c.opts.Stats.DenialEntries.Set(float64(c.denial.Len()))
	}
}

func keyOf(req *Request) cacheKey {
	k := cacheKey{name: req.Name, qtype: req.Type, class: req.Class, cd: req.Msg.CheckingDisabled}
	if opt := req.Msg.IsEdns0(); opt != nil {
		k.do = opt.Do()
	}
	return k
}

func minTTL(sections ...[]dns.RR) time.Duration {
	ttl := uint32(1<<32 - 1)
	for _, s := range sections {
		for _, rr := range s {
			ttl = min(ttl, rr.Header().Ttl)
		}
	}
	return time.Duration(ttl) * time.Second
}

func findSOA(rrs []dns.RR) *dns.SOA {
	for _, rr := range rrs {
		if soa, ok := rr.(*dns.SOA); ok {
			return soa
		}
	}
	return nil
}

func withoutOPT(rrs []dns.RR) []dns.RR {
	n := 0
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			n++
		}
	}
	if n == len(rrs) {
		return rrs[:n:n]
	}
	out := make([]dns.RR, 0, n)
	for _, rr := range rrs {
		if rr.Header().Rrtype != dns.TypeOPT {
			out = append(out, rr)
		}
	}
	return out
}

func inc(c Counter) {
	if c != nil {
		c.Inc()
	}
}

// cacheEntry is one stored reply. Its record slices are shared with whoever
// produced them and never written; replies get copies whose TTLs count down.
type cacheEntry struct {
	rcode                 int
	authoritative, ad, ra bool
	answer, ns, extra     []dns.RR
	ttl                   time.Duration
	expires               time.Time
	// wire is the records packed for the wire-level fast path, with the
	// offsets of their TTLs; nil when the entry is answered on the full
	// path only.
	wire       []byte
	ttlAt      []uint16
	view       atomic.Pointer[cacheView]
	hits       atomic.Int32
	lastHit    atomic.Int64 // unix nanoseconds
	refreshing atomic.Bool
}

// cacheView is an entry's records with the TTL one moment shows. Views are
// immutable and shared by every reply in the same second, so a hit copies
// records at most once a second per entry.
type cacheView struct {
	left              uint32
	answer, ns, extra []dns.RR
}

// touch counts a hit for prefetching; a gap longer than window restarts it.
func (e *cacheEntry) touch(now time.Time, window time.Duration) {
	n := now.UnixNano()
	if last := e.lastHit.Swap(n); last != 0 && n-last > int64(window) {
		e.hits.Store(1)
		return
	}
	e.hits.Add(1)
}

// reply builds the answer to req from the entry as of now.
func (e *cacheEntry) reply(req *Request, now time.Time) *dns.Msg {
	left := uint32(0)
	if d := e.expires.Sub(now); d > 0 {
		left = uint32((d + time.Second - 1) / time.Second)
	}
	v := e.view.Load()
	if v == nil || v.left != left {
		v = &cacheView{left: left, answer: withTTL(e.answer, left), ns: withTTL(e.ns, left), extra: withTTL(e.extra, left)}
		e.view.Store(v)
	}
	m := &dns.Msg{
		MsgHdr: dns.MsgHdr{
			Id:                 req.Msg.Id,
			Response:           true,
			Opcode:             req.Msg.Opcode,
			Authoritative:      e.authoritative,
			RecursionDesired:   req.Msg.RecursionDesired,
			RecursionAvailable: e.ra,
			AuthenticatedData:  e.ad && wantsAD(req.Msg),
			CheckingDisabled:   req.Msg.CheckingDisabled,
			Rcode:              e.rcode,
		},
		Question: req.Msg.Question[:1:1],
		Answer:   v.answer,
		Ns:       v.ns,
		Extra:    v.extra,
	}
	return m
}

// withTTL copies records with every TTL set to ttl, the entry's time left.
func withTTL(rrs []dns.RR, ttl uint32) []dns.RR {
	if len(rrs) == 0 {
		return nil
	}
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		c := dns.Copy(rr)
		c.Header().Ttl = ttl
		out[i] = c
	}
	return out[:len(out):len(out)]
}

// PassesThrough reports whether the cache keeps nothing for any name in
// zone, so that a query there may skip it: ok is true when it passes every
// such query to next untouched, and counted tells whether it counts each one
// as a request and a miss on the way (the zone is among the cached ones but
// disabled for both kinds of answer, as the kubeadm Corefile does for the
// cluster zone). ok is false when some name of zone may be cached.
func (c *Cache) PassesThrough(zone string) (counted, ok bool) {
	for _, z := range c.opts.Zones {
		if InZone(z, zone) && z != zone {
			// A cached zone inside this one: some names are, some are not.
			return false, false
		}
	}
	if MatchZone(zone, c.opts.Zones) == "" {
		return false, true
	}
	disabled := MatchZone(zone, c.opts.Success.Disabled) != "" && MatchZone(zone, c.opts.Denial.Disabled) != ""
	return true, disabled
}

// CountPassThrough counts a query that PassesThrough let skip the cache, as
// Resolve would have: a request and a miss.
func (c *Cache) CountPassThrough() {
	inc(c.opts.Stats.Requests)
	inc(c.opts.Stats.Misses)
}
