package ipvs

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/clusterdns/clusterdns/proxy"
)

// Chain names. They share the iptables backend's CDNS- prefix (so its
// cleanup removes them too) but are distinct from its chains, so that the
// IPVS backend's cleanup removes only its own.
const (
	chainPrefix      = "CDNS-IPVS-"
	chainServices    = "CDNS-IPVS-SERVICES"
	chainPostrouting = "CDNS-IPVS-POSTROUTING"
	chainMarkMasq    = "CDNS-IPVS-MARK-MASQ"
	chainFilter      = "CDNS-IPVS-FILTER"

	tableNAT    = "nat"
	tableFilter = "filter"
)

// The sets, by role. Each family has its own (ipsets hold one family).
const (
	setClusterIP  = "CLUSTER-IP"  // cluster IP,proto:port of every service port
	setExternalIP = "EXTERNAL-IP" // external IP,proto:port
	setNodePort   = "NODE-PORT"   // node address,proto:node port
	setLoopBack   = "LOOP-BACK"   // endpoint,proto:port,endpoint: hairpin traffic
	setIPVSIPs    = "IPVS-IPS"    // every address on the dummy link
)

var setTypes = []struct{ role, typ string }{
	{setClusterIP, "hash:ip,port"},
	{setExternalIP, "hash:ip,port"},
	{setNodePort, "hash:ip,port"},
	{setLoopBack, "hash:ip,port,ip"},
	{setIPVSIPs, "hash:ip"},
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

// hook is a rule in a built-in chain jumping to ours.
type hook struct {
	table, chain string
	spec         []string
}

func hooks() []hook {
	services := []string{"-m", "comment", "--comment", "clusterdns ipvs service portals", "-j", chainServices}
	return []hook{
		{tableNAT, "PREROUTING", services},
		{tableNAT, "OUTPUT", services},
		{tableNAT, "POSTROUTING", []string{"-m", "comment", "--comment", "clusterdns ipvs postrouting rules", "-j", chainPostrouting}},
		{tableFilter, "INPUT", []string{"-m", "comment", "--comment", "clusterdns ipvs service addresses", "-j", chainFilter}},
	}
}

// renderRules writes the iptables-restore input of one family: the same few
// rules whatever the Services, since what varies lives in the sets.
func renderRules(f proxy.Family, cfg *Config) []byte {
	var b bytes.Buffer
	mark := fmt.Sprintf("%#x", cfg.MasqueradeMark)
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
	fmt.Fprintf(&b, "-A %s -m comment --comment \"external IPs\" -m set --match-set %s dst,dst -j %s\n", chainServices, set(setExternalIP), chainMarkMasq)
	fmt.Fprintf(&b, "-A %s -m comment --comment \"node ports\" -m set --match-set %s dst,dst -j %s\n", chainServices, set(setNodePort), chainMarkMasq)
	b.WriteString("COMMIT\n")
	b.WriteString("*filter\n")
	fmt.Fprintf(&b, ":%s - [0:0]\n", chainFilter)
	fmt.Fprintf(&b, "-A %s -m set --match-set %s dst,dst -j RETURN\n", chainFilter, set(setClusterIP))
	fmt.Fprintf(&b, "-A %s -m set --match-set %s dst,dst -j RETURN\n", chainFilter, set(setExternalIP))
	fmt.Fprintf(&b, "-A %s -m comment --comment \"service addresses answer only on service ports\" -m conntrack --ctstate NEW -m set --match-set %s dst -j REJECT\n", chainFilter, set(setIPVSIPs))
	b.WriteString("COMMIT\n")
	return b.Bytes()
}

// ensureHooks inserts the hook rules that are missing.
func (b *Backend) ensureHooks(ctx context.Context, f proxy.Family) error {
	for _, h := range hooks() {
		check := append([]string{"-t", h.table, "-C", h.chain}, h.spec...)
		if err := b.cfg.Runner.Run(ctx, f, check...); err == nil {
			continue
		}
		insert := append([]string{"-t", h.table, "-I", h.chain, "1"}, h.spec...)
		if err := b.cfg.Runner.Run(ctx, f, insert...); err != nil {
			return fmt.Errorf("ipvs: iptables hook %s %s: %w", h.table, h.chain, err)
		}
	}
	return nil
}

// cleanupRules deletes the hooks and the CDNS-IPVS- chains of a family, as
// found in the kernel.
func (b *Backend) cleanupRules(ctx context.Context, f proxy.Family) error {
	var in bytes.Buffer
	for _, table := range []string{tableFilter, tableNAT} {
		data, err := b.cfg.Runner.Save(ctx, f, table)
		if err != nil {
			return fmt.Errorf("ipvs: cleanup %s rules: %w", f, err)
		}
		var chains, hookRules []string
		for _, line := range strings.Split(string(data), "\n") {
			switch {
			case strings.HasPrefix(line, ":"+chainPrefix):
				name, _, _ := strings.Cut(line[1:], " ")
				chains = append(chains, name)
			case strings.HasPrefix(line, "-A ") && !strings.HasPrefix(line, "-A "+chainPrefix) && strings.Contains(line, "-j "+chainPrefix):
				hookRules = append(hookRules, line)
			}
		}
		if len(chains) == 0 && len(hookRules) == 0 {
			continue
		}
		in.WriteString("*" + table + "\n")
		for _, c := range chains {
			fmt.Fprintf(&in, ":%s - [0:0]\n", c)
		}
		for _, r := range hookRules {
			in.WriteString("-D " + strings.TrimPrefix(r, "-A ") + "\n")
		}
		for _, c := range chains {
			in.WriteString("-X " + c + "\n")
		}
		in.WriteString("COMMIT\n")
	}
	if in.Len() == 0 {
		return nil
	}
	if err := b.cfg.Runner.Restore(ctx, f, in.Bytes()); err != nil {
		return fmt.Errorf("ipvs: cleanup %s rules: %w", f, err)
	}
	return nil
}
