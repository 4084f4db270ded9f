package ipvs

import (
	"net/netip"
	"runtime"
	"slices"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/clusterdns/clusterdns/internal/testenv"
)

// inNewNetns runs f on a thread of its own in a new network namespace, so
// that what NetlinkIPSets creates there is the test's alone and goes away
// with it.
func inNewNetns(t *testing.T, f func()) {
	t.Helper()
	testenv.Require(t, testenv.Root())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The thread stays locked and is never returned to the runtime:
		// it ends with the goroutine, namespace and all.
		runtime.LockOSThread()
		if _, err := netns.New(); err != nil {
			t.Errorf("new netns: %v", err)
			return
		}
		f()
	}()
	<-done
}

// The kernel takes a hash:ip,port,net member as NetlinkIPSets encodes it,
// lists it back as the same member, and deletes it by the same encoding;
// the other set types the backend uses round-trip too.
func TestNetlinkIPSetsRoundTrip(t *testing.T) {
	cases := []struct {
		spec    SetSpec
		members []string
	}{
		{SetSpec{Name: "t-net", Type: "hash:ip,port,net", Family: 4},
			[]string{"203.0.113.50,tcp:80,198.51.100.0/24", "203.0.113.50,udp:53,192.0.2.128/25", "203.0.113.50,tcp:80,192.0.2.9/32"}},
		{SetSpec{Name: "t-net6", Type: "hash:ip,port,net", Family: 6},
			[]string{"2001:db8::50,tcp:80,2001:db8:1::/64", "2001:db8::50,sctp:9,2001:db8::/32"}},
		{SetSpec{Name: "t-ip", Type: "hash:ip,port,ip", Family: 4}, []string{"172.16.1.1,tcp:80,172.16.1.1"}},
		{SetSpec{Name: "t-port", Type: "hash:ip,port", Family: 4}, []string{"10.0.0.1,udp:53"}},
		{SetSpec{Name: "t-addr", Type: "hash:ip", Family: 6}, []string{"fd00::1"}},
	}
	inNewNetns(t, func() {
		var s NetlinkIPSets
		for _, tc := range cases {
			if err := s.EnsureSet(tc.spec); err != nil {
				t.Errorf("%s: %v", tc.spec.Name, err)
				continue
			}
			var want []string
			for _, m := range tc.members {
				pm, err := ParseMember(m)
				if err != nil {
					t.Error(err)
					return
				}
				if err := s.Add(tc.spec.Name, pm); err != nil {
					t.Errorf("add: %v", err)
				}
				want = append(want, pm.String())
			}
			got := listed(t, s, tc.spec.Name)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("%s lists %q, want %q", tc.spec.Name, got, want)
			}
			first, _ := ParseMember(tc.members[0])
			if err := s.Del(tc.spec.Name, first); err != nil {
				t.Errorf("del: %v", err)
			}
			if got := listed(t, s, tc.spec.Name); slices.Contains(got, first.String()) || len(got) != len(want)-1 {
				t.Errorf("%s after deleting %s: %q", tc.spec.Name, first, got)
			}
			if err := s.Destroy(tc.spec.Name); err != nil {
				t.Error(err)
			}
		}
	})
}

func listed(t *testing.T, s NetlinkIPSets, name string) []string {
	t.Helper()
	ms, err := s.Members(name)
	if err != nil {
		t.Errorf("list %s: %v", name, err)
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.String())
	}
	slices.Sort(out)
	return out
}

// toEntry puts a network in the attributes the kernel's hash:ip,port,net
// reads (the second address, masked, and CIDR2), and fromEntry reads them
// back; a second address alone stays an address.
func TestEntryEncoding(t *testing.T) {
	for _, tc := range []struct {
		member string
		ip2    string
		cidr2  uint8
	}{
		{"203.0.113.50,tcp:80,198.51.100.0/24", "198.51.100.0", 24},
		{"203.0.113.50,tcp:80,192.0.2.9/32", "192.0.2.9", 32},
		{"2001:db8::50,udp:53,2001:db8:1::/64", "2001:db8:1::", 64},
		{"172.16.1.1,tcp:80,172.16.1.1", "172.16.1.1", 0},
		{"10.0.0.1,sctp:9", "", 0},
	} {
		m, err := ParseMember(tc.member)
		if err != nil {
			t.Fatal(err)
		}
		e := toEntry(m)
		var ip2 string
		if e.IP2 != nil {
			ip2 = addrOf(e.IP2).String()
		}
		if ip2 != tc.ip2 || e.CIDR2 != tc.cidr2 {
			t.Errorf("%s: IP2 %q CIDR2 %d, want %q %d", tc.member, ip2, e.CIDR2, tc.ip2, tc.cidr2)
		}
		if e.Protocol == nil || e.Port == nil || *e.Port != m.Port {
			t.Errorf("%s: protocol and port not encoded", tc.member)
		}
		if back := fromEntry(e); back != m {
			t.Errorf("%s reads back as %s", tc.member, back)
		}
	}
	// An unmasked network goes to the kernel masked, as it would store it.
	m := Member{IP: netip.MustParseAddr("203.0.113.50"), Protocol: "tcp", Port: 80, IP2: netip.MustParseAddr("198.51.100.7"), NetBits: 24}
	if e := toEntry(m); addrOf(e.IP2).String() != "198.51.100.0" {
		t.Errorf("unmasked network sent as %s", e.IP2)
	}
}
