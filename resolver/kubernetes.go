package resolver

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/zone"
	"github.com/clusterdns/clusterdns/zone/dnsindex"
)

// maxChase bounds how many CNAMEs inside the cluster zone one answer follows.
const maxChase = 8

// Kubernetes answers for the cluster zones from the latest record index.
// Update swaps the index in; Resolve never blocks on it.
type Kubernetes struct {
	options dnsindex.Options
	// fallthrough lists the zones whose NXDOMAIN answers go to next instead;
	// fallthroughAll covers every zone.
	fallthroughZones []string
	fallthroughAll   bool
	next             Handler
	index            atomic.Pointer[dnsindex.Index]
	// upstream resolves CNAME targets outside the cluster zones (ExternalName
	// Services) by re-entering the block's chain; nil leaves them to the client.
	upstream Handler
}

// SetUpstream sets the chain that resolves CNAME targets outside the cluster
// zones. Call it before the handler serves.
func (k *Kubernetes) SetUpstream(h Handler) { k.upstream = h }

// NewKubernetes returns a handler for the zones in opts. A name in a zone of
// fallthrough (every zone when fallthroughAll) that does not exist goes to next.
func NewKubernetes(opts dnsindex.Options, fallthroughZones []string, fallthroughAll bool, next Handler) *Kubernetes {
	return &Kubernetes{options: opts, fallthroughZones: fallthroughZones, fallthroughAll: fallthroughAll, next: next}
}

// Update builds the index for a new snapshot, reusing unchanged Services'
// records, and makes it the one answers come from.
func (k *Kubernetes) Update(c *zone.Cluster) *dnsindex.Index {
	ix := dnsindex.Build(c, k.options, k.index.Load())
	k.index.Store(ix)
	return ix
}

// Ready reports whether a snapshot has been loaded.
func (k *Kubernetes) Ready() bool { return k.index.Load() != nil }

// Index returns the current index, or nil before the first snapshot.
func (k *Kubernetes) Index() *dnsindex.Index { return k.index.Load() }

// Zones returns the zones this handler is authoritative for.
func (k *Kubernetes) Zones() []string { return k.options.Zones }

// Resolve answers names in the cluster zones and passes others on.
func (k *Kubernetes) Resolve(ctx context.Context, req *Request) (*dns.Msg, error) {
	z := MatchZone(req.Name, k.options.Zones)
	if z == "" || req.Class != dns.ClassINET && req.Class != dns.ClassANY {
		return k.next.Resolve(ctx, req)
	}
	ix := k.index.Load()
	if ix == nil {
		// Not loaded yet: say "try again", never "does not exist".
		Answered(ctx, "kubernetes")
		return Reply(req, dns.RcodeServerFailure), nil
	}
	node := ix.Lookup(req.Name)
	if node == nil && k.options.Pods == dnsindex.PodsInsecure {
		node = insecurePod(req.Name, z, k.options)
	}
	if node == nil {
		if k.fallsThrough(req.Name) {
			return k.next.Resolve(ctx, req)
		}
	}
	// From here on the answer is ours (for the responses metric's plugin label).
	Answered(ctx, "kubernetes")
	if node == nil {
		m := Reply(req, dns.RcodeNameError)
		m.Authoritative = true
		m.Ns = []dns.RR{ix.SOA(z)}
		return m, nil
	}
	m := new(dns.Msg)
	m.SetReply(req.Msg)
	m.Authoritative = true
	qname := req.QName()
	if node.CNAME() != nil && req.Type != dns.TypeCNAME {
		m.Answer = k.chase(ix, node, qname, req.Type)
		m.Answer = k.chaseOut(ctx, req, m.Answer)
		return m, nil
	}
	rrs := node.Records(req.Type)
	if req.Type == dns.TypeANY {
		rrs = node.All()
	}
	if len(rrs) == 0 {
		m.Ns = []dns.RR{ix.SOA(z)}
		return m, nil
	}
	m.Answer = withOwner(rrs, node.Name, qname)
	if req.Type == dns.TypeSRV {
		m.Extra = node.Extra[:len(node.Extra):len(node.Extra)]
	}
	return m, nil
}

// chase answers a CNAME and, while the target stays inside the index, the
// target's records of the asked type. Targets outside the zone are left for a
// lookup through the upstream chain (see chaseOut).
func (k *Kubernetes) chase(ix *dnsindex.Index, node *dnsindex.Node, qname string, qtype uint16) []dns.RR {
	answer := withOwner(node.All(), node.Name, qname)
	for i := 0; i < maxChase; i++ {
		next := ix.Lookup(node.CNAME().Target)
		if next == nil {
			break
		}
		node = next
		if node.CNAME() != nil {
			answer = append(answer, node.All()...)
			continue
		}
		answer = append(answer, node.Records(qtype)...)
		break
	}
	return answer
}

// chaseOut adds the records of a CNAME target outside the cluster zones,
// looked up through the upstream chain, after the CNAMEs that lead there. A
// failed lookup leaves the CNAMEs alone, for the client to follow.
func (k *Kubernetes) chaseOut(ctx context.Context, req *Request, answer []dns.RR) []dns.RR {
	if k.upstream == nil || len(answer) == 0 {
		return answer
	}
	cname, ok := answer[len(answer)-1].(*dns.CNAME)
	if !ok || MatchZone(lower(cname.Target), k.options.Zones) != "" {
		return answer
	}
	m, err := Lookup(ctx, k.upstream, req, cname.Target, req.Type)
	if err != nil || m == nil || m.Rcode != dns.RcodeSuccess {
		return answer
	}
	return append(answer[:len(answer):len(answer)], m.Answer...)
}

func (k *Kubernetes) fallsThrough(name string) bool {
	return k.fallthroughAll || MatchZone(name, k.fallthroughZones) != ""
}

// withOwner returns rrs as the answer to qname. When the client spelled the
// name as the index does (the common case) the shared records are used as
// they are; otherwise they are copied with the client's spelling, so answers
// keep the question's case.
func withOwner(rrs []dns.RR, canonical, qname string) []dns.RR {
	if qname == canonical {
		return rrs[:len(rrs):len(rrs)]
	}
	out := make([]dns.RR, len(rrs))
	for i, rr := range rrs {
		c := dns.Copy(rr)
		c.Header().Name = qname
		out[i] = c
	}
	return out
}

// insecurePod answers a-b-c-d.NS.pod.ZONE with the address the name spells,
// as the "pods insecure" mode does, without checking that such a Pod exists.
func insecurePod(name, z string, o dnsindex.Options) *dnsindex.Node {
	rest, ok := strings.CutSuffix(name, ".pod."+z)
	if !ok {
		return nil
	}
	label, ns, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(ns, ".") || (len(o.Namespaces) > 0 && !o.Namespaces[ns]) {
		return nil
	}
	addr, ok := dnsindex.ParseDashedAddr(label)
	if !ok {
		return nil
	}
	hdr := dns.RR_Header{Name: name, Class: dns.ClassINET, Ttl: o.TTL}
	if addr.Is4() {
		hdr.Rrtype = dns.TypeA
		return dnsindex.NewNode(name, &dns.A{Hdr: hdr, A: addr.AsSlice()})
	}
	hdr.Rrtype = dns.TypeAAAA
	return dnsindex.NewNode(name, &dns.AAAA{Hdr: hdr, AAAA: addr.AsSlice()})
}
