package nodelocal

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// The lease of the node's own queries (see Config.FollowSocket). The TTL
// bounds how long after the cache's death the node's queries still go to
// its closed port; renewing four times per TTL rides out a slow rule tool.
// ipset timeouts count whole seconds, so the TTL is one.
const (
	LeaseTTL   = time.Second
	LeaseRenew = LeaseTTL / 4
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
	//
	// Queries from the node itself (OUTPUT) cannot be told apart this way:
	// in that hook the socket a rule sees is the sender's, and iptables'
	// socket match is not allowed there. Their NOTRACK follows a lease
	// instead: a kernel set with a timeout (an nftables set, or an ipset
	// for iptables) that the running cache renews every LeaseRenew. A dead
	// cache renews nothing, its addresses leave the set within LeaseTTL,
	// and the node's queries are tracked and DNATed like the pods'.
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
