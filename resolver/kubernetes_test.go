package resolver

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/zone"
	"github.com/clusterdns/clusterdns/zone/dnsindex"
)

func ips(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

// fixture is a small cluster with one of every kind of record.
func fixture() *zone.Cluster {
	b := zone.NewBuilder()
	b.SetNamespace(&zone.Namespace{Name: "dev"})
	b.SetNamespace(&zone.Namespace{Name: "other"})
	b.SetService(&zone.Service{Key: zone.Key{Namespace: "dev", Name: "web"}, Type: zone.TypeClusterIP,
		ClusterIPs: ips("10.0.0.10", "fd00::10"),
		Ports: []zone.ServicePort{
			{Name: "http", Protocol: zone.ProtocolTCP, Port: 80, TargetPort: 8080},
			{Protocol: zone.ProtocolUDP, Port: 53, TargetPort: 53},
		}})
	b.SetSlice(&zone.EndpointSlice{Key: zone.Key{Namespace: "dev", Name: "web-1"}, Service: "web", AddressType: zone.AddressIPv4,
		Ports: []zone.EndpointPort{{Name: "http", Protocol: zone.ProtocolTCP, Port: 8080}},
		Endpoints: []zone.Endpoint{
			{Addresses: ips("10.1.0.1"), Ready: true, PodName: "web-abc"},
			{Addresses: ips("10.1.0.2"), Ready: false},
		}})
	b.SetService(&zone.Service{Key: zone.Key{Namespace: "dev", Name: "db"}, Type: zone.TypeClusterIP, Headless: true,
		Ports: []zone.ServicePort{{Name: "pg", Protocol: zone.ProtocolTCP, Port: 5432, TargetPortName: "postgres"}}})
	pg := []zone.EndpointPort{{Name: "pg", Protocol: zone.ProtocolTCP, Port: 15432}}
	b.SetSlice(&zone.EndpointSlice{Key: zone.Key{Namespace: "dev", Name: "db-a"}, Service: "db", AddressType: zone.AddressIPv4, Ports: pg,
		Endpoints: []zone.Endpoint{
			{Addresses: ips("10.1.1.1"), Ready: true, Hostname: "db-0"},
			{Addresses: ips("10.1.1.3"), Ready: false, Hostname: "db-2"},
		}})
	// A second slice repeats 10.1.1.1, as happens while the controller moves endpoints.
	b.SetSlice(&zone.EndpointSlice{Key: zone.Key{Namespace: "dev", Name: "db-b"}, Service: "db", AddressType: zone.AddressIPv4, Ports: pg,
		Endpoints: []zone.Endpoint{
			{Addresses: ips("10.1.1.1"), Ready: true, Hostname: "db-0"},
			{Addresses: ips("10.1.1.2"), Ready: true, PodName: "db-1"},
		}})
	b.SetSlice(&zone.EndpointSlice{Key: zone.Key{Namespace: "dev", Name: "db-v6"}, Service: "db", AddressType: zone.AddressIPv6, Ports: pg,
		Endpoints: []zone.Endpoint{{Addresses: ips("fd00::1:1"), Ready: true}}})
	b.SetService(&zone.Service{Key: zone.Key{Namespace: "dev", Name: "empty"}, Type: zone.TypeClusterIP, Headless: true})
	b.SetService(&zone.Service{Key: zone.Key{Namespace: "dev", Name: "lonely"}, Type: zone.TypeClusterIP, ClusterIPs: ips("10.0.0.20")})
	b.SetService(&zone.Service{Key: zone.Key{Namespace: "dev", Name: "ext"}, Type: zone.TypeExternalName, ExternalName: "Example.COM"})
	b.SetService(&zone.Service{Key: zone.Key{Namespace: "dev", Name: "alias"}, Type: zone.TypeExternalName, ExternalName: "web.dev.svc.cluster.local"})
	b.SetService(&zone.Service{Key: zone.Key{Namespace: "other", Name: "web"}, Type: zone.TypeClusterIP, ClusterIPs: ips("10.0.0.30")})
	b.SetPod(&zone.Pod{Key: zone.Key{Namespace: "dev", Name: "web-abc"}, IPs: ips("10.1.0.1"), Ready: true})
	return b.Snapshot()
}

var zones = []string{"cluster.local.", "in-addr.arpa.", "ip6.arpa."}

// marker answers whatever reaches the end of the chain, so tests can see
// what fell through.
var marker = HandlerFunc(func(_ context.Context, req *Request) (*dns.Msg, error) {
	m := Reply(req, dns.RcodeSuccess)
	m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: req.QName(), Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: []string{"next"}}}
	return m, nil
})

func ask(t *testing.T, h Handler, name string, qtype uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	m, err := h.Resolve(context.Background(), NewRequest(q, netip.MustParseAddrPort("10.1.0.1:5353"), false))
	if err != nil {
		t.Fatalf("%s %s: %v", name, dns.TypeToString[qtype], err)
	}
	return m
}

// rrText renders records without TTL and class, sorted, for comparison.
func rrText(rrs []dns.RR) []string {
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		f := strings.Fields(rr.String())
		out = append(out, f[0]+" "+strings.Join(f[3:], " "))
	}
	slices.Sort(out)
	return out
}

func TestKubernetesRecords(t *testing.T) {
	const z = "cluster.local."
	soa := []string{"cluster.local. SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"}
	tests := []struct {
		name   string
		qname  string
		qtype  uint16
		rcode  int
		answer []string
		ns     []string
		extra  []string
	}{
		{name: "clusterip A", qname: "web.dev.svc." + z, qtype: dns.TypeA,
			answer: []string{"web.dev.svc.cluster.local. A 10.0.0.10"}},
		{name: "clusterip AAAA dual-stack", qname: "web.dev.svc." + z, qtype: dns.TypeAAAA,
			answer: []string{"web.dev.svc.cluster.local. AAAA fd00::10"}},
		{name: "clusterip without endpoints still answers", qname: "lonely.dev.svc." + z, qtype: dns.TypeA,
			answer: []string{"lonely.dev.svc.cluster.local. A 10.0.0.20"}},
		{name: "headless: ready endpoints, deduplicated across slices", qname: "db.dev.svc." + z, qtype: dns.TypeA,
			answer: []string{"db.dev.svc.cluster.local. A 10.1.1.1", "db.dev.svc.cluster.local. A 10.1.1.2"}},
		{name: "headless AAAA", qname: "db.dev.svc." + z, qtype: dns.TypeAAAA,
			answer: []string{"db.dev.svc.cluster.local. AAAA fd00::1:1"}},
		{name: "headless without ready endpoints", qname: "empty.dev.svc." + z, qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: soa},
		{name: "endpoint hostname", qname: "db-0.db.dev.svc." + z, qtype: dns.TypeA,
			answer: []string{"db-0.db.dev.svc.cluster.local. A 10.1.1.1"}},
		{name: "endpoint without hostname: dashed address", qname: "10-1-1-2.db.dev.svc." + z, qtype: dns.TypeA,
			answer: []string{"10-1-1-2.db.dev.svc.cluster.local. A 10.1.1.2"}},
		{name: "not-ready endpoint has no name", qname: "db-2.db.dev.svc." + z, qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: soa},
		{name: "endpoint of a ClusterIP Service, by address", qname: "10-1-0-1.web.dev.svc." + z, qtype: dns.TypeA,
			answer: []string{"10-1-0-1.web.dev.svc.cluster.local. A 10.1.0.1"}},
		{name: "endpoint of a ClusterIP Service, address spelled otherwise: no such name", qname: "010-1-0-1.web.dev.svc." + z, qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: soa},
		{name: "endpoint of a ClusterIP Service keeps the case asked", qname: "10-1-0-1.WEB.dev.svc." + z, qtype: dns.TypeA,
			answer: []string{"10-1-0-1.WEB.dev.svc.cluster.local. A 10.1.0.1"}},
		{name: "endpoint of a ClusterIP Service, other type: NODATA", qname: "10-1-0-1.web.dev.svc." + z, qtype: dns.TypeAAAA, ns: soa},
		{name: "not-ready endpoint of a ClusterIP Service has no name", qname: "10-1-0-2.web.dev.svc." + z, qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: soa},
		{name: "below an endpoint name: NXDOMAIN", qname: "x.10-1-0-1.web.dev.svc." + z, qtype: dns.TypeA,
			rcode: dns.RcodeNameError, ns: soa},
		{name: "headless SRV: endpoint x port", qname: "_pg._tcp.db.dev.svc." + z, qtype: dns.TypeSRV,
			answer: []string{
				"_pg._tcp.db.dev.svc.cluster.local. SRV 0 33 15432 10-1-1-2.db.dev.svc.cluster.local.",
				"_pg._tcp.db.dev.svc.cluster.local. SRV 0 33 15432 db-0.db.dev.svc.cluster.local.",
				"_pg._tcp.db.dev.svc.cluster.local. SRV 0 33 15432 fd00--1-1.db.dev.svc.cluster.local.",
			},
			extra: []string{
				"10-1-1-2.db.dev.svc.cluster.local. A 10.1.1.2",
				"db-0.db.dev.svc.cluster.local. A 10.1.1.1",
				"fd00--1-1.db.dev.svc.cluster.local. AAAA fd00::1:1",
			}},
		{name: "clusterip SRV targets the service", qname: "_http._tcp.web.dev.svc." + z, qtype: dns.TypeSRV,
			answer: []string{"_http._tcp.web.dev.svc.cluster.local. SRV 0 100 80 web.dev.svc.cluster.local."},
			extra:  []string{"web.dev.svc.cluster.local. A 10.0.0.10", "web.dev.svc.cluster.local. AAAA fd00::10"}},
		{name: "SRV at the service name lists every port", qname: "web.dev.svc." + z, qtype: dns.TypeSRV,
			answer: []string{
				"web.dev.svc.cluster.local. SRV 0 100 53 web.dev.svc.cluster.local.",
				"web.dev.svc.cluster.local. SRV 0 100 80 web.dev.svc.cluster.local.",
			},
			extra: []string{"web.dev.svc.cluster.local. A 10.0.0.10", "web.dev.svc.cluster.local. AAAA fd00::10"}},
		{name: "protocol label is an empty non-terminal", qname: "_tcp.web.dev.svc." + z, qtype: dns.TypeSRV, ns: soa},
		{name: "unknown port name", qname: "_nope._tcp.web.dev.svc." + z, qtype: dns.TypeSRV, rcode: dns.RcodeNameError, ns: soa},
		{name: "externalname CNAME", qname: "ext.dev.svc." + z, qtype: dns.TypeA,
			answer: []string{"ext.dev.svc.cluster.local. CNAME example.com."}},
		{name: "externalname inside the zone is chased", qname: "alias.dev.svc." + z, qtype: dns.TypeA,
			answer: []string{"alias.dev.svc.cluster.local. CNAME web.dev.svc.cluster.local.", "web.dev.svc.cluster.local. A 10.0.0.10"}},
		{name: "PTR of a ClusterIP", qname: "10.0.0.10.in-addr.arpa.", qtype: dns.TypePTR,
			answer: []string{"10.0.0.10.in-addr.arpa. PTR web.dev.svc.cluster.local."}},
		{name: "PTR of an IPv6 ClusterIP", qname: "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", qtype: dns.TypePTR,
			answer: []string{"0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. PTR web.dev.svc.cluster.local."}},
		{name: "PTR of an endpoint", qname: "1.1.1.10.in-addr.arpa.", qtype: dns.TypePTR,
			answer: []string{"1.1.1.10.in-addr.arpa. PTR db-0.db.dev.svc.cluster.local."}},
		{name: "PTR of a ClusterIP Service's endpoint", qname: "1.0.1.10.in-addr.arpa.", qtype: dns.TypePTR,
			answer: []string{"1.0.1.10.in-addr.arpa. PTR 10-1-0-1.web.dev.svc.cluster.local."}},
		{name: "PTR of an IPv6 endpoint", qname: "1.0.0.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", qtype: dns.TypePTR,
			answer: []string{"1.0.0.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. PTR fd00--1-1.db.dev.svc.cluster.local."}},
		{name: "unknown reverse name falls through", qname: "9.9.9.10.in-addr.arpa.", qtype: dns.TypePTR,
			answer: []string{"9.9.9.10.in-addr.arpa. TXT \"next\""}},
		{name: "dns-version", qname: "dns-version." + z, qtype: dns.TypeTXT,
			answer: []string{"dns-version.cluster.local. TXT \"1.1.0\""}},
		{name: "existing name, other type: NODATA", qname: "web.dev.svc." + z, qtype: dns.TypeTXT, ns: soa},
		{name: "missing service: NXDOMAIN", qname: "nope.dev.svc." + z, qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: soa},
		{name: "namespace is NODATA", qname: "dev.svc." + z, qtype: dns.TypeA, ns: soa},
		{name: "svc is NODATA", qname: "svc." + z, qtype: dns.TypeA, ns: soa},
		{name: "pod is NODATA", qname: "pod." + z, qtype: dns.TypeA, ns: soa},
		{name: "unknown namespace: NXDOMAIN", qname: "nons.svc." + z, qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: soa},
		{name: "apex SOA", qname: z, qtype: dns.TypeSOA, answer: soa},
		{name: "apex NS", qname: z, qtype: dns.TypeNS, answer: []string{"cluster.local. NS ns.dns.cluster.local."}},
		{name: "pods disabled", qname: "1-2-3-4.dev.pod." + z, qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: soa},
		{name: "case is kept", qname: "WEB.Dev.svc.Cluster.Local.", qtype: dns.TypeA,
			answer: []string{"WEB.Dev.svc.Cluster.Local. A 10.0.0.10"}},
		{name: "outside the zones goes on", qname: "example.org.", qtype: dns.TypeA,
			answer: []string{"example.org. TXT \"next\""}},
	}
	k := NewKubernetes(dnsindex.Options{Zones: zones, TTL: 5}, []string{"in-addr.arpa.", "ip6.arpa."}, false, marker)
	k.Update(fixture())
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := ask(t, k, tc.qname, tc.qtype)
			if m.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.rcode])
			}
			if got := rrText(m.Answer); !slices.Equal(got, tc.answer) && !(len(got) == 0 && len(tc.answer) == 0) {
				t.Errorf("answer\n got %q\nwant %q", got, tc.answer)
			}
			if got := rrText(m.Ns); !slices.Equal(got, tc.ns) && !(len(got) == 0 && len(tc.ns) == 0) {
				t.Errorf("authority\n got %q\nwant %q", got, tc.ns)
			}
			if got := rrText(m.Extra); !slices.Equal(got, tc.extra) && !(len(got) == 0 && len(tc.extra) == 0) {
				t.Errorf("additional\n got %q\nwant %q", got, tc.extra)
			}
			if len(m.Answer) > 0 && !strings.Contains(tc.answer[0], "\"next\"") && !m.Authoritative {
				t.Error("answer is not authoritative")
			}
		})
	}
}

func TestKubernetesOptions(t *testing.T) {
	const z = "cluster.local."
	tests := []struct {
		name   string
		opts   dnsindex.Options
		qname  string
		qtype  uint16
		rcode  int
		answer []string
	}{
		{name: "pods insecure answers any dashed address", opts: dnsindex.Options{Pods: dnsindex.PodsInsecure},
			qname: "1-2-3-4.dev.pod." + z, qtype: dns.TypeA, answer: []string{"1-2-3-4.dev.pod.cluster.local. A 1.2.3.4"}},
		{name: "pods insecure IPv6", opts: dnsindex.Options{Pods: dnsindex.PodsInsecure},
			qname: "fd00--1.dev.pod." + z, qtype: dns.TypeAAAA, answer: []string{"fd00--1.dev.pod.cluster.local. AAAA fd00::1"}},
		{name: "pods insecure rejects a malformed name", opts: dnsindex.Options{Pods: dnsindex.PodsInsecure},
			qname: "1-2-3.dev.pod." + z, qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "pods verified: a pod that exists", opts: dnsindex.Options{Pods: dnsindex.PodsVerified},
			qname: "10-1-0-1.dev.pod." + z, qtype: dns.TypeA, answer: []string{"10-1-0-1.dev.pod.cluster.local. A 10.1.0.1"}},
		{name: "pods verified: no such pod", opts: dnsindex.Options{Pods: dnsindex.PodsVerified},
			qname: "10-9-9-9.dev.pod." + z, qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "pods verified: pod in another namespace", opts: dnsindex.Options{Pods: dnsindex.PodsVerified},
			qname: "10-1-0-1.other.pod." + z, qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "namespaces hides others", opts: dnsindex.Options{Namespaces: map[string]bool{"dev": true}},
			qname: "web.other.svc." + z, qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "namespaces keeps listed", opts: dnsindex.Options{Namespaces: map[string]bool{"dev": true}},
			qname: "web.dev.svc." + z, qtype: dns.TypeA, answer: []string{"web.dev.svc.cluster.local. A 10.0.0.10"}},
		{name: "noendpoints: headless is NXDOMAIN", opts: dnsindex.Options{NoEndpoints: true},
			qname: "db.dev.svc." + z, qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "noendpoints: no endpoint names", opts: dnsindex.Options{NoEndpoints: true},
			qname: "db-0.db.dev.svc." + z, qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "noendpoints: ClusterIP still answers", opts: dnsindex.Options{NoEndpoints: true},
			qname: "web.dev.svc." + z, qtype: dns.TypeA, answer: []string{"web.dev.svc.cluster.local. A 10.0.0.10"}},
		{name: "endpoint_pod_names", opts: dnsindex.Options{EndpointPodNames: true},
			qname: "db-1.db.dev.svc." + z, qtype: dns.TypeA, answer: []string{"db-1.db.dev.svc.cluster.local. A 10.1.1.2"}},
		{name: "endpoint_pod_names keeps hostnames first", opts: dnsindex.Options{EndpointPodNames: true},
			qname: "db-0.db.dev.svc." + z, qtype: dns.TypeA, answer: []string{"db-0.db.dev.svc.cluster.local. A 10.1.1.1"}},
		{name: "ignore empty_service hides a service with no ready endpoint", opts: dnsindex.Options{IgnoreEmptyService: true},
			qname: "lonely.dev.svc." + z, qtype: dns.TypeA, rcode: dns.RcodeNameError},
		{name: "ignore empty_service keeps a service with one", opts: dnsindex.Options{IgnoreEmptyService: true},
			qname: "web.dev.svc." + z, qtype: dns.TypeA, answer: []string{"web.dev.svc.cluster.local. A 10.0.0.10"}},
		{name: "ttl", opts: dnsindex.Options{TTL: 30},
			qname: "web.dev.svc." + z, qtype: dns.TypeA, answer: []string{"web.dev.svc.cluster.local. A 10.0.0.10"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Zones = zones
			k := NewKubernetes(tc.opts, nil, false, Refused)
			k.Update(fixture())
			m := ask(t, k, tc.qname, tc.qtype)
			if m.Rcode != tc.rcode {
				t.Fatalf("rcode %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tc.rcode])
			}
			if got := rrText(m.Answer); !slices.Equal(got, tc.answer) && !(len(got) == 0 && len(tc.answer) == 0) {
				t.Errorf("answer\n got %q\nwant %q", got, tc.answer)
			}
			for _, rr := range m.Answer {
				if rr.Header().Ttl != tc.opts.TTL {
					t.Errorf("ttl %d, want %d", rr.Header().Ttl, tc.opts.TTL)
				}
			}
		})
	}
}

func TestKubernetesNotLoadedIsServfail(t *testing.T) {
	k := NewKubernetes(dnsindex.Options{Zones: zones, TTL: 5}, nil, false, Refused)
	if k.Ready() {
		t.Fatal("ready before any snapshot")
	}
	if m := ask(t, k, "web.dev.svc.cluster.local.", dns.TypeA); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode %s before the first snapshot, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
	k.Update(fixture())
	if m := ask(t, k, "web.dev.svc.cluster.local.", dns.TypeA); m.Rcode != dns.RcodeSuccess {
		t.Fatalf("rcode %s after loading, want NOERROR", dns.RcodeToString[m.Rcode])
	}
}

func TestSharedAnswersAreNotChangedByCallers(t *testing.T) {
	k := NewKubernetes(dnsindex.Options{Zones: zones, TTL: 5}, nil, false, Refused)
	k.Update(fixture())
	m := ask(t, k, "db.dev.svc.cluster.local.", dns.TypeA)
	// Appending to an answer must not write into the index's backing array.
	m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "x."}})
	again := ask(t, k, "db.dev.svc.cluster.local.", dns.TypeA)
	if len(again.Answer) != 2 {
		t.Fatalf("index changed by a caller: %d records", len(again.Answer))
	}
}
