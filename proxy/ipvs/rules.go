package ipvs

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/iptables"
)

// Chain names. They start with iptables.IPVSChainPrefix: within the CDNS-
// chains both modes own, these are IPVS mode's alone, so that each mode's
// cleanup removes only its own.
const (
	chainServices    = iptables.IPVSChainPrefix + "SERVICES"
	chainPostrouting = iptables.IPVSChainPrefix + "POSTROUTING"
	chainMarkMasq    = iptables.IPVSChainPrefix + "MARK-MASQ"
	chainFilter      = iptables.IPVSChainPrefix + "FILTER"
	// chainSourceRanges drops what reaches a load balancer IP with
	// loadBalancerSourceRanges from a source outside them.
	chainSourceRanges = iptables.IPVSChainPrefix + "SOURCE-RANGES"
)

// The sets, by role. Each family has its own (ipsets hold one family).
const (
	setClusterIP  = "CLUSTER-IP"  // cluster IP,proto:port of every service port
	setExternalIP = "EXTERNAL-IP" // external IP,proto:port
	setNodePort   = "NODE-PORT"   // node address,proto:node port
	setLoopBack   = "LOOP-BACK"   // endpoint,proto:port,endpoint: hairpin traffic
	setIPVSIPs    = "IPVS-IPS"    // every address on the dummy link
	// External addresses (IP,proto:port) of externalTrafficPolicy Local
	// ports: traffic from outside the node keeps its source.
	setExternalLocal = "EXTERNAL-LOCAL"
	// Addresses whose new connections are refused: cluster IPs of
	// internalTrafficPolicy Local ports without a local endpoint (setDrop,
	// named for what iptables and nftables modes do). Addresses whose
	// traffic is dropped: external addresses of externalTrafficPolicy
	// Local ports without one, for traffic from outside the pods and the
	// node (setExternalDrop).
	setDrop         = "DROP"
	setExternalDrop = "EXTERNAL-DROP"
	// loadBalancerSourceRanges: the load balancer IP,proto:port of each
	// port that has them (setLBFirewall); the sources allowed to reach it,
	// as IP,proto:port,network (setLBSourceCIDR); and the load balancer IP
	// itself as a source (setLBSourceIP), both for a load balancer that
	// forwards with its own address and for the node, whose traffic to a
	// local address leaves from that address. iptables and nftables modes
	// allow the load balancer IP as a source the same way.
	setLBFirewall   = "LB-FW"
	setLBSourceCIDR = "LB-SOURCE-CIDR"
	setLBSourceIP   = "LB-SOURCE-IP"
)

var setTypes = []struct{ role, typ string }{
	{setClusterIP, "hash:ip,port"},
	{setExternalIP, "hash:ip,port"},
	{setNodePort, "hash:ip,port"},
	{setLoopBack, "hash:ip,port,ip"},
	{setIPVSIPs, "hash:ip"},
	{setExternalLocal, "hash:ip,port"},
	{setDrop, "hash:ip,port"},
	{setExternalDrop, "hash:ip,port"},
	{setLBFirewall, "hash:ip,port"},
	{setLBSourceCIDR, "hash:ip,port,net"},
	{setLBSourceIP, "hash:ip,port,ip"},
}

// setName is the kernel name of a role's set in a family.
func setName(f proxy.Family, role string) string {
	if f == proxy.IPv6 {
		return "CDNS6-" + role
	}
	return "CDNS-" + role
}

// allSetNames lists every set either family may have, for cleanup.
func allSetNames() []string {
	var out []string
	for _, f := range []proxy.Family{proxy.IPv4, proxy.IPv6} {
		for _, s := range setTypes {
			out = append(out, setName(f, s.role))
		}
	}
	return out
}

func hooks() []iptables.Hook {
	services := []string{"-m", "comment", "--comment", "clusterdns ipvs service portals", "-j", chainServices}
	return []iptables.Hook{
		{Table: iptables.TableNAT, Chain: "PREROUTING", Spec: services},
		{Table: iptables.TableNAT, Chain: "OUTPUT", Spec: services},
		{Table: iptables.TableNAT, Chain: "POSTROUTING", Spec: []string{"-m", "comment", "--comment", "clusterdns ipvs postrouting rules", "-j", chainPostrouting}},
		{Table: iptables.TableFilter, Chain: "INPUT", Spec: []string{"-m", "comment", "--comment", "clusterdns ipvs service addresses", "-j", chainFilter}},
	}
}

// renderRules writes the iptables-restore input of one family: the same few
// rules whatever the Services, since what varies lives in the sets.
func renderRules(f proxy.Family, cfg *Config) []byte {
	var b bytes.Buffer
	mark := iptables.MarkHex(cfg.Mark())
	set := func(role string) string { return setName(f, role) }
	b.WriteString("*nat\n")
	for _, c := range []string{chainServices, chainPostrouting, chainMarkMasq} {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c)
	}
	fmt.Fprintf(&b, "-A %s -j MARK --or-mark %s\n", chainMarkMasq, mark)
	fmt.Fprintf(&b, "-A %s -m comment --comment \"hairpin: a pod through its own service\" -m set --match-set %s dst,dst,src -j MASQUERADE\n", chainPostrouting, set(setLoopBack))
	fmt.Fprintf(&b, "-A %s -m mark ! --mark %s/%s -j RETURN\n", chainPostrouting, mark, mark)
	fmt.Fprintf(&b, "-A %s -j MARK --xor-mark %s\n", chainPostrouting, mark)
	fmt.Fprintf(&b, "-A %s -j MASQUERADE\n", chainPostrouting)
	var cidr netip.Prefix
	for _, p := range cfg.ClusterCIDRs {
		if proxy.FamilyOf(p.Addr()) == f {
			cidr = p
		}
	}
	switch {
	case cfg.MasqueradeAll:
		fmt.Fprintf(&b, "-A %s -m comment --comment \"masquerade all\" -m set --match-set %s dst,dst -j %s\n", chainServices, set(setClusterIP), chainMarkMasq)
	case cidr.IsValid():
		fmt.Fprintf(&b, "-A %s -m comment --comment \"from outside the pods\" -m set --match-set %s dst,dst ! -s %s -j %s\n", chainServices, set(setClusterIP), cidr, chainMarkMasq)
	}
	fmt.Fprintf(&b, "-A %s -m comment --comment \"externalTrafficPolicy Local keeps the source\" -m set --match-set %s dst,dst -m addrtype ! --src-type LOCAL -j RETURN\n", chainServices, set(setExternalLocal))
	fmt.Fprintf(&b, "-A %s -m comment --comment \"external IPs\" -m set --match-set %s dst,dst -j %s\n", chainServices, set(setExternalIP), chainMarkMasq)
	fmt.Fprintf(&b, "-A %s -m comment --comment \"node ports\" -m set --match-set %s dst,dst -j %s\n", chainServices, set(setNodePort), chainMarkMasq)
	b.WriteString("COMMIT\n")
	b.WriteString("*filter\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n", chainFilter)
	fmt.Fprintf(&b, ":%s - [0:0]\n", chainSourceRanges)
	// kube-proxy's IPVS mode leaves such a virtual server without real
	// servers, and IPVS answers a packet to it with ICMP port unreachable:
	// the client is refused at once where iptables and nftables modes
	// drop. Rejecting here (before IPVS sees the packet) does the same.
	fmt.Fprintf(&b, "-A %s -m comment --comment \"no local endpoints\" -m set --match-set %s dst,dst -j REJECT\n", chainFilter, set(setDrop))
	// Pods and the node still reach an externalTrafficPolicy Local
	// Service through its external addresses when this node has no
	// endpoint of it; traffic from elsewhere is dropped.
	pods := ""
	if cidr.IsValid() {
		pods = " ! -s " + cidr.String()
	}
	fmt.Fprintf(&b, "-A %s -m comment --comment \"no local endpoints for external traffic\" -m set --match-set %s dst,dst%s -m addrtype ! --src-type LOCAL -j DROP\n", chainFilter, set(setExternalDrop), pods)
	fmt.Fprintf(&b, "-A %s -m comment --comment \"loadbalancer source ranges\" -m set --match-set %s dst,dst -j %s\n", chainFilter, set(setLBFirewall), chainSourceRanges)
	fmt.Fprintf(&b, "-A %s -m set --match-set %s dst,dst,src -j RETURN\n", chainSourceRanges, set(setLBSourceCIDR))
	fmt.Fprintf(&b, "-A %s -m comment --comment \"loadbalancer IP as source\" -m set --match-set %s dst,dst,src -j RETURN\n", chainSourceRanges, set(setLBSourceIP))
	fmt.Fprintf(&b, "-A %s -m comment --comment \"loadbalancer source not allowed\" -j DROP\n", chainSourceRanges)
	fmt.Fprintf(&b, "-A %s -m set --match-set %s dst,dst -j RETURN\n", chainFilter, set(setClusterIP))
	fmt.Fprintf(&b, "-A %s -m set --match-set %s dst,dst -j RETURN\n", chainFilter, set(setExternalIP))
	fmt.Fprintf(&b, "-A %s -m comment --comment \"service addresses answer only on service ports\" -m conntrack --ctstate NEW -m set --match-set %s dst -j REJECT\n", chainFilter, set(setIPVSIPs))
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

// ensureHooks inserts the hook rules that are missing.
func (b *Backend) ensureHooks(ctx context.Context, f proxy.Family) error {
	owned, err := iptables.ReadOwned(ctx, b.cfg.Runner, f, iptables.IPVSChainPrefix, "")
	if err == nil {
		err = iptables.EnsureHooks(ctx, b.cfg.Runner, f, hooks(), owned)
	}
	if err != nil {
		return fmt.Errorf("ipvs: iptables rules: %w", err)
	}
	return nil
}

// cleanupRules deletes the hooks and the CDNS-IPVS- chains of a family, as
// found in the kernel.
func (b *Backend) cleanupRules(ctx context.Context, f proxy.Family) error {
	owned, err := iptables.ReadOwned(ctx, b.cfg.Runner, f, iptables.IPVSChainPrefix, "")
	if err == nil {
		err = iptables.RemoveOwned(ctx, b.cfg.Runner, f, owned)
	}
	if err != nil {
		return fmt.Errorf("ipvs: cleanup: %w", err)
	}
	return nil
}
