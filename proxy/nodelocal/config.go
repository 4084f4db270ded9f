package nodelocal

import (
	"errors"
	"fmt"
	"net/netip"
)

// Rules says which rule set keeps the local addresses out of conntrack.
type Rules string

// The rule sets. RulesNone leaves the kernel's rules alone (node-cache's
// -setupiptables=false).
const (
	RulesIPTables Rules = "iptables"
	RulesNFTables Rules = "nftables"
	RulesNone     Rules = "none"
)

// Config is what the node side needs to know.
type Config struct {
	// LocalIPs are the addresses the cache listens on, all of one family.
	LocalIPs []netip.Addr
	// Interface is the link the addresses live on ("nodelocaldns"); empty
	// means the addresses are not managed (-setupinterface=false).
	Interface string
	// DNSPort is the port the cache answers on, 53 in production.
	DNSPort int
	// HealthPort is the TCP port of the health endpoint on the local IPs;
	// 0 adds no rule for it.
	HealthPort int
	// Rules picks the rule backend.
	Rules Rules
	// FollowSocket makes the NOTRACK of queries arriving from other hosts
	// and pods (PREROUTING) conditional on a socket bound to the exact
	// local address and port: while the cache is dead the queries stay
	// tracked, so kube-proxy's DNAT of the kube-dns ClusterIP sends them to
	// the cluster DNS pods; the moment a cache binds again, they are its.
	// Queries from the node itself (OUTPUT) cannot be told apart this way:
	// in that hook the kernel's socket lookup does not find the listener.
	FollowSocket bool
}

// Validate reports the first thing that makes c unusable.
func (c Config) Validate() error {
	if len(c.LocalIPs) == 0 {
		return errors.New("no local IP")
	}
	for _, ip := range c.LocalIPs {
		if !ip.IsValid() || ip.Zone() != "" {
			return fmt.Errorf("local IP %v is not a plain address", ip)
		}
		if ip.Is4() != c.LocalIPs[0].Is4() {
			return fmt.Errorf("local IPs %v and %v are of different families", c.LocalIPs[0], ip)
		}
	}
	if c.DNSPort <= 0 || c.DNSPort > 65535 {
		return fmt.Errorf("DNS port %d out of range", c.DNSPort)
	}
	if c.HealthPort < 0 || c.HealthPort > 65535 {
		return fmt.Errorf("health port %d out of range", c.HealthPort)
	}
	switch c.Rules {
	case RulesIPTables, RulesNFTables, RulesNone:
	default:
		return fmt.Errorf("unknown rule set %q (want iptables, nftables or none)", c.Rules)
	}
	return nil
}

func (c Config) ipv6() bool { return c.LocalIPs[0].Is6() }
