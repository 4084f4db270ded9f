package dnsindex

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

func TestParseReverse(t *testing.T) {
	for _, tc := range []struct {
		name string
		want string // "" when not a reverse name of a whole address
	}{
		{"4.3.2.10.in-addr.arpa.", "10.2.3.4"},
		{"0.0.0.0.in-addr.arpa.", "0.0.0.0"},
		{"255.255.255.255.in-addr.arpa.", "255.255.255.255"},
		{"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", "fd00::1"},
		{"f.e.d.c.b.a.9.8.7.6.5.4.3.2.1.0.f.e.d.c.b.a.9.8.7.6.5.4.3.2.1.0.ip6.arpa.", "123:4567:89ab:cdef:123:4567:89ab:cdef"},
		{"3.2.10.in-addr.arpa.", ""},
		{"5.4.3.2.10.in-addr.arpa.", ""},
		{"256.3.2.10.in-addr.arpa.", ""},
		{"04.3.2.10.in-addr.arpa.", ""},
		{"x.3.2.10.in-addr.arpa.", ""},
		{"..2.10.in-addr.arpa.", ""},
		{"0.d.f.ip6.arpa.", ""},
		{"g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", ""},
		{"10.0.0.1.example.", ""},
	} {
		got, ok := ParseReverse(tc.name)
		if tc.want == "" {
			if ok {
				t.Errorf("%s: got %s, want no address", tc.name, got)
			}
			continue
		}
		if !ok || got != netip.MustParseAddr(tc.want) {
			t.Errorf("%s: got %s %v, want %s", tc.name, got, ok, tc.want)
		}
		if rev, _ := dns.ReverseAddr(tc.want); rev != tc.name {
			t.Errorf("test case %s is not miekg's spelling %s", tc.name, rev)
		}
	}
}

func TestDashedAddr(t *testing.T) {
	for _, a := range []string{"10.1.2.3", "fd00::1", "2001:db8::a:b"} {
		ip := netip.MustParseAddr(a)
		back, ok := ParseDashedAddr(DashedAddr(ip))
		if !ok || back != ip {
			t.Errorf("%s -> %s -> %v %v", a, DashedAddr(ip), back, ok)
		}
	}
	for _, bad := range []string{"1-2-3", "a-b-c-d", "1-2-3-4-5", "", "300-1-1-1"} {
		if _, ok := ParseDashedAddr(bad); ok {
			t.Errorf("%q parsed as an address", bad)
		}
	}
}
