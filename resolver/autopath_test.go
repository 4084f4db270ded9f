package resolver

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/clusterdns/clusterdns/zone/dnsindex"
	"github.com/miekg/dns"
)

func TestAutopath(t *testing.T) {
	// Names outside the cluster reach the end of the chain: example.com
	// exists there, everything else does not.
	external := HandlerFunc(func(_ context.Context, req *Request) (*dns.Msg, error) {
		if req.Name != "example.com." {
			return Reply(req, dns.RcodeNameError), nil
		}
		m := Reply(req, dns.RcodeSuccess)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: req.QName(), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: []byte{192, 0, 2, 80}}}
		return m, nil
	})
	k := NewKubernetes(dnsindex.Options{Zones: zones, TTL: 5, Pods: dnsindex.PodsVerified}, nil, true, external)
	k.Update(fixture())
	ap := NewAutopath([]string{"cluster.local."}, k, nil, k)
	pod := netip.MustParseAddrPort("10.1.0.1:5353")      // web-abc in dev
	stranger := netip.MustParseAddrPort("10.9.9.9:5353") // no such Pod
	tests := []struct {
		name   string
		client netip.AddrPort
		qname  string
		rcode  int
		answer []string
	}{
		{"found in the pod's namespace", pod, "web.dev.svc.cluster.local.", dns.RcodeSuccess,
			[]string{"web.dev.svc.cluster.local. A 10.0.0.10"}},
		{"another namespace's service", pod, "web.other.dev.svc.cluster.local.", dns.RcodeSuccess,
			[]string{"web.other.dev.svc.cluster.local. CNAME web.other.svc.cluster.local.", "web.other.svc.cluster.local. A 10.0.0.30"}},
		{"external name", pod, "example.com.dev.svc.cluster.local.", dns.RcodeSuccess,
			[]string{"example.com. A 192.0.2.80", "example.com.dev.svc.cluster.local. CNAME example.com."}},
		{"nothing anywhere", pod, "nope.dev.svc.cluster.local.", dns.RcodeNameError, nil},
		{"unknown client is left alone", stranger, "example.com.dev.svc.cluster.local.", dns.RcodeNameError, nil},
		{"not the first search suffix", pod, "example.com.svc.cluster.local.", dns.RcodeNameError, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := new(dns.Msg)
			q.SetQuestion(tc.qname, dns.TypeA)
			m, err := ap.Resolve(context.Background(), NewRequest(q, tc.client, false))
			if err != nil {
				t.Fatal(err)
			}
			if m.Rcode != tc.rcode || !slices.Equal(rrText(m.Answer), tc.answer) {
				t.Fatalf("%s %q; want %s %q", dns.RcodeToString[m.Rcode], rrText(m.Answer), dns.RcodeToString[tc.rcode], tc.answer)
			}
			if m.Question[0].Name != tc.qname {
				t.Fatalf("question %s; want the asked name", m.Question[0].Name)
			}
		})
	}
}

func TestAutopathNeedsVerifiedPods(t *testing.T) {
	k := NewKubernetes(dnsindex.Options{Zones: zones, TTL: 5, Pods: dnsindex.PodsInsecure}, nil, false, marker)
	k.Update(fixture())
	ap := NewAutopath([]string{"cluster.local."}, k, nil, k)
	m := ask(t, ap, "web.other.dev.svc.cluster.local.", dns.TypeA)
	if m.Rcode != dns.RcodeNameError {
		t.Fatalf("without verified pods autopath acted: %v", m)
	}
}
