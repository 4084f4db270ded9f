package resolver

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

var netipZero netip.AddrPort

func TestLoadBalanceShufflesACopy(t *testing.T) {
	shared := []dns.RR{
		&dns.CNAME{Hdr: dns.RR_Header{Name: "a.example.", Rrtype: dns.TypeCNAME, Class: dns.ClassINET}, Target: "b.example."},
	}
	for i := 1; i <= 8; i++ {
		shared = append(shared, &dns.A{Hdr: dns.RR_Header{Name: "b.example.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: []byte{192, 0, 2, byte(i)}})
	}
	original := slices.Clone(shared)
	next := HandlerFunc(func(_ context.Context, req *Request) (*dns.Msg, error) {
		m := Reply(req, dns.RcodeSuccess)
		m.Answer = shared
		return m, nil
	})
	lb := NewLoadBalance(next)
	firsts := make(map[string]bool)
	for i := 0; i < 200; i++ {
		m := ask(t, lb, "a.example.", dns.TypeA)
		if m.Answer[0].Header().Rrtype != dns.TypeCNAME {
			t.Fatal("the CNAME left the front of the answer")
		}
		if len(m.Answer) != len(shared) {
			t.Fatalf("answer has %d records, want %d", len(m.Answer), len(shared))
		}
		firsts[m.Answer[1].(*dns.A).A.String()] = true
	}
	if !slices.Equal(shared, original) {
		t.Fatal("the shared answer slice was reordered")
	}
	if len(firsts) < 4 {
		t.Fatalf("only %d different first addresses in 200 answers", len(firsts))
	}
}
