package resolver

import (
	"context"
	"math/rand/v2"

	"github.com/miekg/dns"
)

// LoadBalance shuffles the address records of every answer, as CoreDNS's
// loadbalance (round_robin) does, so that clients taking the first address
// spread over all of them. Other records keep their places; a CNAME chain
// stays in front of the addresses it leads to.
type LoadBalance struct {
	next Handler
}

// NewLoadBalance returns a shuffling handler in front of next.
func NewLoadBalance(next Handler) *LoadBalance { return &LoadBalance{next: next} }

// Resolve asks next and shuffles a copy of the answer's A and AAAA records.
func (l *LoadBalance) Resolve(ctx context.Context, req *Request) (*dns.Msg, error) {
	m, err := l.next.Resolve(ctx, req)
	if err != nil || m == nil || m.Rcode != dns.RcodeSuccess {
		return m, err
	}
	m.Answer = shuffleAddresses(m.Answer)
	return m, nil
}

// shuffleAddresses returns rrs with its A and AAAA records in a random order
// among the places they held. rrs is shared with caches and indexes and is
// never written: a shuffled answer is a new slice.
func shuffleAddresses(rrs []dns.RR) []dns.RR {
	var pos [64]int
	idx := pos[:0]
	for i, rr := range rrs {
		if t := rr.Header().Rrtype; t == dns.TypeA || t == dns.TypeAAAA {
			idx = append(idx, i)
		}
	}
	if len(idx) < 2 {
		return rrs
	}
	out := make([]dns.RR, len(rrs))
	copy(out, rrs)
	for i := len(idx) - 1; i > 0; i-- {
		j := rand.IntN(i + 1)
		out[idx[i]], out[idx[j]] = out[idx[j]], out[idx[i]]
	}
	return out
}
