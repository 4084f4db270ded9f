package dnsindex

import (
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// ParseReverse reads the address a reverse name (d.c.b.a.in-addr.arpa. or
// 32 nibbles then ip6.arpa.) stands for.
func ParseReverse(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa."); ok {
		var b [4]byte
		for i := 3; i >= 0; i-- {
			label, tail, _ := strings.Cut(rest, ".")
			v, ok := decimalOctet(label)
			if !ok || (i == 0) != (tail == "") {
				return netip.Addr{}, false
			}
			b[i], rest = v, tail
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa."); ok {
		if len(rest) != 63 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i := 0; i < 32; i++ {
			c := rest[2*i]
			if i < 31 && rest[2*i+1] != '.' {
				return netip.Addr{}, false
			}
			var v byte
			switch {
			case '0' <= c && c <= '9':
				v = c - '0'
			case 'a' <= c && c <= 'f':
				v = c - 'a' + 10
			default:
				return netip.Addr{}, false
			}
			// The first nibble is the last address nibble.
			j := 31 - i
			if j%2 == 0 {
				b[j/2] |= v << 4
			} else {
				b[j/2] |= v
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// decimalOctet reads 0..255 written without leading zeros.
func decimalOctet(s string) (byte, bool) {
	if s == "" || len(s) > 3 || len(s) > 1 && s[0] == '0' {
		return 0, false
	}
	v := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		v = v*10 + int(s[i]-'0')
	}
	if v > 255 {
		return 0, false
	}
	return byte(v), true
}

// IsReverseZone reports whether a zone is under in-addr.arpa or ip6.arpa.
func IsReverseZone(zone string) bool {
	return dns.IsSubDomain("in-addr.arpa.", zone) || dns.IsSubDomain("ip6.arpa.", zone)
}

// DashedAddr spells an address as one DNS label: 10-1-2-3, or fd00--1.
func DashedAddr(a netip.Addr) string {
	if a.Is4() {
		return strings.ReplaceAll(a.String(), ".", "-")
	}
	return strings.ReplaceAll(a.String(), ":", "-")
}

// ParseDashedAddr is the inverse of DashedAddr.
func ParseDashedAddr(label string) (netip.Addr, bool) {
	if strings.Count(label, "-") == 3 {
		if a, err := netip.ParseAddr(strings.ReplaceAll(label, "-", ".")); err == nil && a.Is4() {
			return a, true
		}
	}
	if a, err := netip.ParseAddr(strings.ReplaceAll(label, "-", ":")); err == nil && a.Is6() {
		return a, true
	}
	return netip.Addr{}, false
}
