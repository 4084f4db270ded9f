package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// fastCorefile is the kubeadm Corefile's answer path (cache kept out of the
// cluster zone, metrics, errors, forward) over manifests. %[1]s is the
// manifests folder, %[2]s the upstream, %[3]s "loadbalance" or nothing.
const fastCorefile = `.:53 {
    errors
    prometheus 127.0.0.1:0
    %[3]s
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        manifests %[1]s
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . %[2]s
    cache 30 {
        disable success cluster.local
        disable denial cluster.local
    }
    loop
}
`

// fastExtraManifests add to the example cluster what it lacks: a dual-stack
// Service with two named ports, a headless Service with hand-written slices
// of both families and hostnames (a StatefulSet's), and a long name.
const fastExtraManifests = `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: dual, namespace: prod}
  spec:
    clusterIP: 10.10.0.10
    clusterIPs: [10.10.0.10, "fd00::10"]
    ipFamilies: [IPv4, IPv6]
    ports: [{name: http, port: 80, protocol: TCP}, {name: dns, port: 53, protocol: UDP}]
- apiVersion: v1
  kind: Service
  metadata: {name: db, namespace: prod}
  spec:
    clusterIP: None
    ports: [{name: pg, port: 5432, protocol: TCP}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: db-4, namespace: prod, labels: {kubernetes.io/service-name: db}}
  addressType: IPv4
  ports: [{name: pg, port: 5432, protocol: TCP}]
  endpoints:
  - {addresses: [10.2.0.1], hostname: db-0, conditions: {ready: true}}
  - {addresses: [10.2.0.2], hostname: db-1, conditions: {ready: true}}
  - {addresses: [10.2.0.3], hostname: db-2, conditions: {ready: true}}
  - {addresses: [10.2.0.4], conditions: {ready: true}}
  - {addresses: [10.2.0.5], hostname: db-4, conditions: {ready: false}}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: db-6, namespace: prod, labels: {kubernetes.io/service-name: db}}
  addressType: IPv6
  ports: [{name: pg, port: 5432, protocol: TCP}]
  endpoints:
  - {addresses: ["fd00::2:1"], hostname: db-0, conditions: {ready: true}}
  - {addresses: ["fd00::2:9"], conditions: {ready: true}}
- apiVersion: v1
  kind: Service
  metadata: {name: a-rather-long-service-name-that-goes-on-and-on-for-a-while, namespace: prod}
  spec:
    clusterIP: 10.10.0.11
    ports: [{port: 443, protocol: TCP}]
`

// newFastFixture is the answer fixture over the example cluster and the
// extra manifests, with the kubeadm-like Corefile (loadbalance or not).
func newFastFixture(tb testing.TB, loadbalance bool) (*answerFixture, *answerPath) {
	tb.Helper()
	dir := tb.TempDir()
	for _, f := range []string{"namespace.yaml", "pods.yaml", "services.yaml"} {
		b, err := os.ReadFile(filepath.Join("../deploy/examples", f))
		if err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "extra.yaml"), []byte(fastExtraManifests), 0o644); err != nil {
		tb.Fatal(err)
	}
	up := startFakeUpstream(tb)
	logs := &lockedBuffer{}
	reg := prometheus.NewRegistry()
	fx := &answerFixture{logs: logs}
	fx.shared = Shared{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelError})), Registry: reg, Metrics: NewMetrics(reg)}
	lb := ""
	if loadbalance {
		lb = "loadbalance"
	}
	cfg, err := ParseConfig("Corefile", fmt.Appendf(nil, fastCorefile, dir, up.addr, lb))
	if err != nil {
		tb.Fatal(err)
	}
	fx.cfg = cfg
	fx.cluster = loadManifests(tb, dir)
	path := fx.build(tb, cfg)
	tb.Cleanup(path.close)
	if path.listener.router.Load().routes[0].fast == nil {
		tb.Fatal("the kubeadm-like chain has no fast path")
	}
	return fx, path
}

// fullReply is the reply the full path sends for a datagram, or nil.
func fullReply(tb testing.TB, path *answerPath, datagram []byte) []byte {
	tb.Helper()
	m := path.udp.reply(context.Background(), datagram, fuzzClient)
	if m == nil {
		return nil
	}
	b, err := packReply(m, make([]byte, udpBufferSize), path.listener.log, fuzzClient)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// fastReply is the reply the fast path sends, or nil when it leaves the
// datagram to the full path.
func fastReply(path *answerPath, datagram []byte) []byte {
	b := path.listener.fastAnswer(datagram, make([]byte, udpBufferSize), fuzzClient)
	return bytes.Clone(b)
}

// fastQueries are the queries asked about each name: every type the index
// holds and some it does not, in three spellings, with and without EDNS0,
// DO, RD and CD, and with buffer sizes that force truncation.
func fastQueries(name string) [][]byte {
	types := []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypePTR, dns.TypeTXT, dns.TypeSOA, dns.TypeNS,
		dns.TypeCNAME, dns.TypeMX, dns.TypeANY}
	spellings := []string{name, strings.ToUpper(name), mixCase(name)}
	var out [][]byte
	for ti, t := range types {
		for si, s := range spellings {
			for v := range 5 {
				m := new(dns.Msg)
				m.SetQuestion(s, t)
				m.Id = uint16(ti<<8 | si<<4 | v)
				m.RecursionDesired = v%2 == 0
				m.CheckingDisabled = v == 3
				switch v {
				case 1:
					m.SetEdns0(1232, false)
				case 2:
					m.SetEdns0(4096, true)
				case 3:
					m.SetEdns0(100, false) // below 512: treated as 512
				case 4:
					m.SetEdns0(1232, false)
					m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"})
				}
				b, err := m.Pack()
				if err != nil {
					panic(err)
				}
				out = append(out, b)
			}
		}
	}
	return out
}

func mixCase(s string) string {
	b := []byte(s)
	for i := range b {
		if i%2 == 0 && 'a' <= b[i] && b[i] <= 'z' {
			b[i] -= 'a' - 'A'
		}
	}
	return string(b)
}

// fastNames are every name of the built index, plus names made when asked
// and names that do not exist.
func fastNames(path *answerPath) []string {
	var names []string
	for _, n := range path.index.Nodes() {
		names = append(names, n.Name)
	}
	slices.Sort(names)
	return append(names,
		"missing.dev.svc.cluster.local.", "x.missing.dev.svc.cluster.local.", "cluster.local.",
		"172-16-79-83.service-clusterip.dev.svc.cluster.local.", "10-2-0-4.db.prod.svc.cluster.local.",
		"nope.service-clusterip.dev.svc.cluster.local.", "10-1-2-3.dev.pod.cluster.local.",
		"example.com.", "4.0.2.10.in-addr.arpa.", "www.baidu.com.",
	)
}

// TestFastPathMatchesFullPath asks every record row of the built index
// (each name with every type, spelling and flag combination) through both
// paths: whatever the fast path answers must be, byte for byte, what the
// full path sends. And the fast path must answer the common query: every
// name that has records, asked in lower case with EDNS0.
func TestFastPathMatchesFullPath(t *testing.T) {
	_, path := newFastFixture(t, false)
	fast, total := 0, 0
	for _, name := range fastNames(path) {
		for _, q := range fastQueries(name) {
			total++
			got := fastReply(path, q)
			if got == nil {
				continue
			}
			fast++
			want := fullReply(t, path, q)
			if !bytes.Equal(got, want) {
				t.Fatalf("query %s:\nfast path %x\nfull path %x\n%v\nwant\n%v", describeQuery(q), got, want, unpacked(got), unpacked(want))
			}
		}
	}
	for _, n := range path.index.Nodes() {
		if n.CNAME() != nil || strings.HasSuffix(n.Name, ".arpa.") {
			continue
		}
		for _, t0 := range []uint16{dns.TypeA, dns.TypeSRV, dns.TypeTXT} {
			m := new(dns.Msg)
			m.SetQuestion(n.Name, t0)
			m.SetEdns0(1232, false)
			q, _ := m.Pack()
			if fastReply(path, q) == nil {
				t.Errorf("%s %s: not answered on the fast path", n.Name, dns.TypeToString[t0])
			}
		}
	}
	t.Logf("%d of %d queries answered on the fast path", fast, total)
}

// TestFastPathShufflesLikeLoadbalance checks that with loadbalance the fast
// path answers the same records as the full path, in an order that varies.
func TestFastPathShufflesLikeLoadbalance(t *testing.T) {
	_, path := newFastFixture(t, true)
	for _, name := range fastNames(path) {
		for _, q := range fastQueries(name) {
			got := fastReply(path, q)
			if got == nil {
				continue
			}
			want := fullReply(t, path, q)
			if g, w := sortedAnswer(t, got), sortedAnswer(t, want); g != w {
				t.Fatalf("query %s:\nfast path\n%s\nfull path\n%s", describeQuery(q), g, w)
			}
		}
	}
	m := new(dns.Msg)
	m.SetQuestion("db.prod.svc.cluster.local.", dns.TypeA)
	q, _ := m.Pack()
	orders := map[string]bool{}
	for range 200 {
		got := fastReply(path, q)
		if got == nil {
			t.Fatal("headless name not answered on the fast path")
		}
		orders[fmt.Sprint(unpacked(got).Answer)] = true
	}
	if len(orders) < 2 {
		t.Errorf("four addresses came in %d order over 200 answers", len(orders))
	}
}

// sortedAnswer is a reply in text with its answer records sorted.
func sortedAnswer(t *testing.T, b []byte) string {
	t.Helper()
	m := unpacked(b)
	if m == nil {
		t.Fatalf("reply does not unpack: %x", b)
	}
	slices.SortFunc(m.Answer, func(a, b dns.RR) int { return strings.Compare(a.String(), b.String()) })
	return m.String()
}

func unpacked(b []byte) *dns.Msg {
	m := new(dns.Msg)
	if m.Unpack(b) != nil {
		return nil
	}
	return m
}

func describeQuery(b []byte) string {
	m := unpacked(b)
	if m == nil {
		return fmt.Sprintf("%x", b)
	}
	return describeFlags(m)
}

// FuzzFastPath sends datagrams to both paths: whenever the fast path
// answers, the full path must send the same bytes.
func FuzzFastPath(f *testing.F) {
	_, path := newFastFixture(f, false)
	for _, name := range []string{"service-clusterip.dev.svc.cluster.local.", "db.prod.svc.cluster.local.", "missing.dev.svc.cluster.local."} {
		for i, q := range fastQueries(name) {
			if i%7 == 0 {
				f.Add(q)
			}
		}
	}
	f.Fuzz(func(t *testing.T, datagram []byte) {
		got := fastReply(path, datagram)
		if got == nil {
			return
		}
		if want := fullReply(t, path, datagram); !bytes.Equal(got, want) {
			t.Fatalf("datagram %x:\nfast path %x\nfull path %x", datagram, got, want)
		}
	})
}

// BenchmarkFastPath is a hit on the fast path as a UDP reader makes it:
// parse, route, look up, copy, patch, count the metrics.
func BenchmarkFastPath(b *testing.B) {
	for _, tc := range []struct{ name, qname string }{
		{"ClusterIP", "service-clusterip.dev.svc.cluster.local."},
		{"Headless4", "db.prod.svc.cluster.local."},
		{"NXDOMAIN", "missing.dev.svc.cluster.local."},
	} {
		b.Run(tc.name, func(b *testing.B) {
			_, path := newFastFixture(b, true)
			m := new(dns.Msg)
			m.SetQuestion(tc.qname, dns.TypeA)
			m.SetEdns0(1232, false)
			q, _ := m.Pack()
			out := make([]byte, udpBufferSize)
			if path.listener.fastAnswer(q, out, fuzzClient) == nil {
				b.Fatal("not answered on the fast path")
			}
			b.ReportAllocs()
			for b.Loop() {
				path.listener.fastAnswer(q, out, fuzzClient)
			}
		})
	}
}

// BenchmarkFullPath is the same query on the full path, for comparison.
func BenchmarkFullPath(b *testing.B) {
	_, path := newFastFixture(b, true)
	m := new(dns.Msg)
	m.SetQuestion("service-clusterip.dev.svc.cluster.local.", dns.TypeA)
	m.SetEdns0(1232, false)
	q, _ := m.Pack()
	out := make([]byte, udpBufferSize)
	b.ReportAllocs()
	for b.Loop() {
		r := path.udp.reply(context.Background(), q, fuzzClient)
		if _, err := packReply(r, out, path.listener.log, fuzzClient); err != nil {
			b.Fatal(err)
		}
	}
}
