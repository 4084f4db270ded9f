package inspect

import "net/netip"

// Step is what one rule of a chain contributes to FollowDNAT: a DNAT
// target, or a jump (or goto) to another chain.
type Step struct {
	DNAT netip.AddrPort // valid when the rule translates
	Jump string         // the chain jumped to, empty for none
}

// maxChainDepth bounds FollowDNAT's walk: the backends nest three or four
// chains deep, and a table read back from a kernel is not trusted to be
// free of cycles.
const maxChainDepth = 8

// FollowDNAT walks the rules of chain, and of every chain they jump to
// (each chain once, at most maxChainDepth deep), and returns the DNAT
// targets on the way in rule order. steps lists one chain's rules as Steps;
// the iptables and nftables read-backs each describe their own syntax with
// it.
func FollowDNAT(chain string, steps func(chain string) []Step) []netip.AddrPort {
	var out []netip.AddrPort
	seen := map[string]bool{}
	var walk func(c string, depth int)
	walk = func(c string, depth int) {
		if seen[c] || depth > maxChainDepth {
			return
		}
		seen[c] = true
		for _, s := range steps(c) {
			if s.DNAT.IsValid() {
				out = append(out, s.DNAT)
			}
			if s.Jump != "" {
				walk(s.Jump, depth+1)
			}
		}
	}
	walk(chain, 0)
	return out
}
