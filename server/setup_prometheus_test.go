package server

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterdns/clusterdns/resolver"
)

func TestPrometheusLinkRecordsCoreDNSLabels(t *testing.T) {
	shared := testShared()
	answer := resolver.HandlerFunc(func(ctx context.Context, req *resolver.Request) (*dns.Msg, error) {
		resolver.Answered(ctx, "kubernetes")
		return resolver.Reply(req, dns.RcodeNameError), nil
	})
	h := prometheusLink(newDNSRecorder(shared.Metrics, "dns://:53", []string{"."}), []string{"."}, answer)
	for _, tc := range []struct {
		client string
		tcp    bool
		qtype  uint16
	}{
		{"10.0.0.1:1000", false, dns.TypeA},
		{"10.0.0.1:1000", false, dns.TypeA},
		{"[fd00::1]:1000", true, dns.TypeAAAA},
		{"10.0.0.1:1000", false, dns.TypeHINFO},
	} {
		q := new(dns.Msg)
		q.SetQuestion("x.example.", tc.qtype)
		if _, err := h.Resolve(context.Background(), resolver.NewRequest(q, netip.MustParseAddrPort(tc.client), tc.tcp)); err != nil {
			t.Fatal(err)
		}
	}
	// An internal lookup is not a client request.
	q := new(dns.Msg)
	q.SetQuestion("x.example.", dns.TypeA)
	if _, err := resolver.Lookup(context.Background(), h, resolver.NewRequest(q, netip.AddrPort{}, false), "y.example.", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	got := samples(t, shared.Registry, "coredns_dns_requests_total", "coredns_dns_responses_total")
	want := []string{
		`coredns_dns_requests_total{family="1",proto="udp",server="dns://:53",type="A",view="",zone="."} 2`,
		`coredns_dns_requests_total{family="1",proto="udp",server="dns://:53",type="other",view="",zone="."} 1`,
		`coredns_dns_requests_total{family="2",proto="tcp",server="dns://:53",type="AAAA",view="",zone="."} 1`,
		`coredns_dns_responses_total{plugin="kubernetes",rcode="NXDOMAIN",server="dns://:53",view="",zone="."} 4`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("samples:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// samples renders the counters of the named families, one line per series,
// labels sorted by name as the exposition format sorts them.
func samples(t *testing.T, reg *prometheus.Registry, names ...string) []string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range families {
		if !slices.Contains(names, f.GetName()) {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			out = append(out, fmt.Sprintf("%s{%s} %g", f.GetName(), strings.Join(labels, ","), m.GetCounter().GetValue()))
		}
	}
	slices.Sort(out)
	return out
}

// BenchmarkMetricsAndCacheHit is the hot path of a cached answer as the
// kubeadm Corefile builds it: the prometheus link recording, then a cache hit.
func BenchmarkMetricsAndCacheHit(b *testing.B) {
	shared := testShared()
	upstream := resolver.HandlerFunc(func(_ context.Context, req *resolver.Request) (*dns.Msg, error) {
		m := resolver.Reply(req, dns.RcodeSuccess)
		rr, _ := dns.NewRR(req.QName() + " 300 IN A 192.0.2.1")
		m.Answer = []dns.RR{rr}
		return m, nil
	})
	cache, err := resolver.NewCache(resolver.CacheOptions{Stats: shared.Metrics.cacheStats("dns://:53", ".")}, upstream)
	if err != nil {
		b.Fatal(err)
	}
	h := prometheusLink(newDNSRecorder(shared.Metrics, "dns://:53", []string{"."}), []string{"."}, cache)
	q := new(dns.Msg)
	q.SetQuestion("www.example.", dns.TypeA)
	req := resolver.NewRequest(q, netip.MustParseAddrPort("10.0.0.1:1000"), false)
	ctx := context.Background()
	if _, err := h.Resolve(ctx, req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		m, err := h.Resolve(ctx, req)
		if err != nil || len(m.Answer) != 1 {
			b.Fatal(m, err)
		}
	}
}
