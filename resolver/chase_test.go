package resolver

import (
	"context"
	"slices"
	"testing"

	"github.com/clusterdns/clusterdns/zone/dnsindex"
	"github.com/miekg/dns"
)

// A CNAME target outside the cluster zone is looked up through the chain it
// is given, and its records follow the CNAME.
func TestKubernetesChasesExternalTargetsThroughUpstream(t *testing.T) {
	var asked []string
	upstream := HandlerFunc(func(ctx context.Context, req *Request) (*dns.Msg, error) {
		asked = append(asked, req.Name)
		if !Internal(ctx) {
			t.Error("the upstream lookup is not marked internal")
		}
		m := Reply(req, dns.RcodeSuccess)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: req.QName(), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{192, 0, 2, 9}}}
		return m, nil
	})
	k := NewKubernetes(dnsindex.Options{Zones: zones, TTL: 5}, nil, false, marker)
	k.Update(fixture())
	k.SetUpstream(upstream)
	m := ask(t, k, "ext.dev.svc.cluster.local.", dns.TypeA)
	want := []string{"example.com. A 192.0.2.9", "ext.dev.svc.cluster.local. CNAME example.com."}
	if got := rrText(m.Answer); !slices.Equal(got, want) || m.Answer[0].Header().Rrtype != dns.TypeCNAME {
		t.Fatalf("answer %v; want the CNAME, then %q", m.Answer, want)
	}
	if !slices.Equal(asked, []string{"example.com."}) {
		t.Fatalf("upstream asked %q", asked)
	}
	// In-zone targets never leave the index.
	asked = nil
	ask(t, k, "alias.dev.svc.cluster.local.", dns.TypeA)
	if len(asked) != 0 {
		t.Fatalf("in-zone target went upstream: %q", asked)
	}
}

// A name that leads back to itself through the chain stops after a bounded
// number of nested lookups.
func TestLookupDepthIsBounded(t *testing.T) {
	var chain Handler
	calls := 0
	chain = HandlerFunc(func(ctx context.Context, req *Request) (*dns.Msg, error) {
		calls++
		return Lookup(ctx, chain, req, "again.example.", dns.TypeA)
	})
	q := new(dns.Msg)
	q.SetQuestion("start.example.", dns.TypeA)
	_, err := chain.Resolve(context.Background(), NewRequest(q, netipZero, false))
	if err != ErrLookupDepth || calls != maxLookupDepth+1 {
		t.Fatalf("err %v after %d calls; want ErrLookupDepth after %d", err, calls, maxLookupDepth+1)
	}
}
