package nodelocal

import (
	"bytes"
	"fmt"
	"strings"
)

// Names of everything the rules own. The chains hang off the built-in ones
// by one jump each, so Teardown removes exactly one rule per built-in chain.
const (
	chainRawPre    = "CLUSTERDNS-NODECACHE-PRE"
	chainRawOut    = "CLUSTERDNS-NODECACHE-OUT"
	chainFilterIn  = "CLUSTERDNS-NODECACHE-IN"
	chainFilterOut = "CLUSTERDNS-NODECACHE-OUT"
	nftTable       = "clusterdns-nodecache"
	// leaseSet holds the local IPs while the cache is alive: an nftables
	// set in our table, or an ipset of that name in iptables mode.
	leaseSet = "clusterdns-nodecache-alive"
)

// jump is the rule in a built-in chain that sends packets to ours.
type jump struct {
	table, from, to string
}

// jumps are data, not code per chain: Sync inserts each one first in its
// built-in chain, Teardown deletes it.
var jumps = []jump{
	{"raw", "PREROUTING", chainRawPre},
	{"raw", "OUTPUT", chainRawOut},
	{"filter", "INPUT", chainFilterIn},
	{"filter", "OUTPUT", chainFilterOut},
}

func hostPrefix(c Config) string {
	if c.ipv6() {
		return "/128"
	}
	return "/32"
}

// RenderIPTables returns iptables-restore --noflush input for c. Declaring
// our chains flushes them, so applying it again replaces their rules rather
// than adding to them; the built-in chains are not in it (see jumps).
//
// Queries in (PREROUTING) and out of the node itself (OUTPUT) to the local
// IPs skip conntrack, and so do the cache's answers from them: an answer
// that conntrack saw without its query would start a new entry.
func RenderIPTables(c Config) []byte {
	var b bytes.Buffer
	suffix := hostPrefix(c)
	follow, lease := "", ""
	if c.FollowSocket {
		follow = " -m socket --nowildcard"
		lease = " -m set --match-set " + leaseSet + " dst"
	}
	b.WriteString("*raw\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", chainRawPre, chainRawOut)
	for _, ip := range c.LocalIPs {
		for _, proto := range []string{"udp", "tcp"} {
			fmt.Fprintf(&b, "-A %s -d %s%s -p %s -m %s --dport %d%s -j NOTRACK\n", chainRawPre, ip, suffix, proto, proto, c.DNSPort, follow)
			fmt.Fprintf(&b, "-A %s -d %s%s -p %s -m %s --dport %d%s -j NOTRACK\n", chainRawOut, ip, suffix, proto, proto, c.DNSPort, lease)
			fmt.Fprintf(&b, "-A %s -s %s%s -p %s -m %s --sport %d -j NOTRACK\n", chainRawOut, ip, suffix, proto, proto, c.DNSPort)
		}
	}
	b.WriteString("COMMIT\n*filter\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n:%s - [0:0]\n", chainFilterIn, chainFilterOut)
	for _, ip := range c.LocalIPs {
		for _, proto := range []string{"udp", "tcp"} {
			fmt.Fprintf(&b, "-A %s -d %s%s -p %s -m %s --dport %d -j ACCEPT\n", chainFilterIn, ip, suffix, proto, proto, c.DNSPort)
			fmt.Fprintf(&b, "-A %s -s %s%s -p %s -m %s --sport %d -j ACCEPT\n", chainFilterOut, ip, suffix, proto, proto, c.DNSPort)
		}
		if c.HealthPort > 0 {
			fmt.Fprintf(&b, "-A %s -d %s%s -p tcp -m tcp --dport %d -j ACCEPT\n", chainFilterIn, ip, suffix, c.HealthPort)
			fmt.Fprintf(&b, "-A %s -s %s%s -p tcp -m tcp --sport %d -j ACCEPT\n", chainFilterOut, ip, suffix, c.HealthPort)
		}
	}
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

// RenderNFTables returns an nft -f script that replaces our table with one
// for c in one transaction: "table" first makes the delete valid when the
// table does not exist yet.
//
// The raw-priority chains run before conntrack (priority -200) and so before
// any DNAT of the kube-dns ClusterIP. The accept chains only help against a
// drop policy in this table's hooks; a drop in another table still drops,
// which is how nftables composes tables.
func RenderNFTables(c Config) []byte { return renderNFTables(c, true, false) }

// renderNFTables leaves the prerouting notrack out when !steer: the table
// of a cache that is draining (see Agent.StopSteering). With leased, the
// lease set starts out holding the local IPs, so that a periodic sync does
// not drop a live cache's lease until the next renewal.
func renderNFTables(c Config, steer, leased bool) []byte {
	addr := "ip"
	if c.ipv6() {
		addr = "ip6"
	}
	ips := make([]string, len(c.LocalIPs))
	for i, ip := range c.LocalIPs {
		ips[i] = ip.String()
	}
	set := "{ " + strings.Join(ips, ", ") + " }"
	var b bytes.Buffer
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", nftTable, nftTable)
	fmt.Fprintf(&b, "table inet %s {\n", nftTable)
	if c.FollowSocket {
		typ := "ipv4_addr"
		if c.ipv6() {
			typ = "ipv6_addr"
		}
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s; flags timeout; timeout %dms;\n", leaseSet, typ, LeaseTTL.Milliseconds())
		if leased && steer {
			fmt.Fprintf(&b, "\t\telements = %s\n", set)
		}
		b.WriteString("\t}\n")
	}
	fmt.Fprintf(&b, "\tchain prerouting {\n\t\ttype filter hook prerouting priority raw; policy accept;\n")
	if !steer {
		b.WriteString("\t}\n")
	} else if c.FollowSocket {
		// A SYN needs a listener bound to the very address. Later segments
		// need any socket: nft's wildcard key does not match the request
		// socket that the handshake's last ACK finds (iptables' does), and
		// the 4-tuple lookup finds our connection before any listener.
		fmt.Fprintf(&b, "\t\t%s daddr %s udp dport %d socket wildcard 0 notrack\n", addr, set, c.DNSPort)
		fmt.Fprintf(&b, "\t\t%s daddr %s tcp dport %d tcp flags & (syn | ack) == syn socket wildcard 0 notrack\n", addr, set, c.DNSPort)
		fmt.Fprintf(&b, "\t\t%s daddr %s tcp dport %d tcp flags & (syn | ack) != syn socket transparent 0 notrack\n\t}\n", addr, set, c.DNSPort)
	} else {
		fmt.Fprintf(&b, "\t\t%s daddr %s meta l4proto { tcp, udp } th dport %d notrack\n\t}\n", addr, set, c.DNSPort)
	}
	fmt.Fprintf(&b, "\tchain output {\n\t\ttype filter hook output priority raw; policy accept;\n")
	if c.FollowSocket {
		fmt.Fprintf(&b, "\t\t%s daddr @%s meta l4proto { tcp, udp } th dport %d notrack\n", addr, leaseSet, c.DNSPort)
	} else {
		fmt.Fprintf(&b, "\t\t%s daddr %s meta l4proto { tcp, udp } th dport %d notrack\n", addr, set, c.DNSPort)
	}
	fmt.Fprintf(&b, "\t\t%s saddr %s meta l4proto { tcp, udp } th sport %d notrack\n\t}\n", addr, set, c.DNSPort)
	fmt.Fprintf(&b, "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\t%s daddr %s meta l4proto { tcp, udp } th dport %d accept\n", addr, set, c.DNSPort)
	if c.HealthPort > 0 {
		fmt.Fprintf(&b, "\t\t%s daddr %s tcp dport %d accept\n", addr, set, c.HealthPort)
	}
	fmt.Fprintf(&b, "\t}\n\tchain output-filter {\n\t\ttype filter hook output priority filter; policy accept;\n")
	fmt.Fprintf(&b, "\t\t%s saddr %s meta l4proto { tcp, udp } th sport %d accept\n", addr, set, c.DNSPort)
	if c.HealthPort > 0 {
		fmt.Fprintf(&b, "\t\t%s saddr %s tcp sport %d accept\n", addr, set, c.HealthPort)
	}
	b.WriteString("\t}\n}\n")
	return b.Bytes()
}

// nftTeardown deletes our table whether or not it exists.
func nftTeardown() []byte {
	return []byte(fmt.Sprintf("table inet %s\ndelete table inet %s\n", nftTable, nftTable))
}

// nftRenewLease renews the lease of every local IP: an element that exists
// keeps its old expiry when added again, so it is added (in case it
// expired), deleted and added fresh, in one transaction.
func nftRenewLease(c Config) []byte {
	ips := make([]string, len(c.LocalIPs))
	for i, ip := range c.LocalIPs {
		ips[i] = ip.String()
	}
	elems := "{ " + strings.Join(ips, ", ") + " }"
	var b bytes.Buffer
	for _, op := range []string{"add", "delete", "add"} {
		fmt.Fprintf(&b, "%s element inet %s %s %s\n", op, nftTable, leaseSet, elems)
	}
	return b.Bytes()
}
