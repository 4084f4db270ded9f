package resolver

import (
	"context"
	"strings"

	"github.com/clusterdns/clusterdns/zone/dnsindex"
	"github.com/miekg/dns"
)

// Autopath answers a Pod's search-path query on the server side. A Pod with
// the usual ndots:5 resolv.conf asks for "example.com.NS.svc.cluster.local."
// first and walks its search list on every NXDOMAIN; Autopath walks that list
// itself at the first query and answers it with a CNAME from the asked name
// to the first candidate that exists, cutting the storm to one round trip.
//
// The client's namespace comes from its Pod, found by source address, so
// Autopath acts only when the kubernetes handler runs with "pods verified"
// (the index then knows every Pod's address).
type Autopath struct {
	zones []string
	k     *Kubernetes
	// hostSearch is the server's own resolv.conf search list, tried after
	// the cluster's suffixes, as a Pod's resolv.conf would list it.
	hostSearch []string
	next       Handler
}

// NewAutopath returns an autopath handler for names in zones, using k to find
// clients' Pods; next is the rest of the chain, k included.
func NewAutopath(zones []string, k *Kubernetes, hostSearch []string, next Handler) *Autopath {
	return &Autopath{zones: zones, k: k, hostSearch: hostSearch, next: next}
}

// Resolve walks the search path for a Pod's first search-path query.
func (a *Autopath) Resolve(ctx context.Context, req *Request) (*dns.Msg, error) {
	search := a.searchPath(req)
	if search == nil {
		return a.next.Resolve(ctx, req)
	}
	base := strings.TrimSuffix(req.Name, "."+search[0])
	first, err := a.next.Resolve(ctx, req)
	if err != nil || first == nil || first.Rcode != dns.RcodeNameError {
		return first, err
	}
	for _, s := range search[1:] {
		name := base + "." + s
		if s == "" {
			name = base + "."
		}
		sub := new(dns.Msg)
		sub.MsgHdr = req.Msg.MsgHdr
		sub.Question = []dns.Question{{Name: name, Qtype: req.Type, Qclass: req.Class}}
		sub.Extra = req.Msg.Extra
		m, err := a.next.Resolve(ctx, NewRequest(sub, req.Client, req.TCP))
		if err != nil {
			return nil, err
		}
		if m == nil || m.Rcode == dns.RcodeNameError {
			continue
		}
		return withSearchCNAME(req, m, name), nil
	}
	return first, nil
}

// searchPath returns the search list of the client's Pod when the query is
// its first search-path candidate (NAME.NS.svc.ZONE), else nil.
func (a *Autopath) searchPath(req *Request) []string {
	if MatchZone(req.Name, a.zones) == "" || !req.Client.IsValid() {
		return nil
	}
	ix := a.k.Index()
	if ix == nil || ix.Options().Pods != dnsindex.PodsVerified {
		return nil
	}
	pod := ix.Cluster().PodByIP(req.Client.Addr())
	if pod == nil {
		return nil
	}
	for _, z := range a.k.Zones() {
		if dnsindex.IsReverseZone(z) {
			continue
		}
		first := pod.Namespace + ".svc." + z
		if !strings.HasSuffix(req.Name, "."+first) {
			continue
		}
		search := []string{first, "svc." + z, z}
		search = append(search, a.hostSearch...)
		return append(search, "")
	}
	return nil
}

// withSearchCNAME turns the answer for target into the answer for the asked
// name: the asked question, and a CNAME from it to target in front.
func withSearchCNAME(req *Request, m *dns.Msg, target string) *dns.Msg {
	ttl := uint32(5)
	if len(m.Answer) > 0 {
		ttl = m.Answer[0].Header().Ttl
	} else if len(m.Ns) > 0 {
		ttl = m.Ns[0].Header().Ttl
	}
	cname := &dns.CNAME{
		Hdr:    dns.RR_Header{Name: req.QName(), Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl},
		Target: target,
	}
	out := *m
	out.Id = req.Msg.Id
	out.Question = req.Msg.Question[:1:1]
	out.Answer = append([]dns.RR{cname}, m.Answer...)
	return &out
}
