package iptables

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/inspect"
	"github.com/clusterdns/clusterdns/zone"
)

// ReadKernel reads back, from iptables-save of the nat tables, where
// iptables mode sends new connections to each cluster IP, external IP, load
// balancer IP and node port:
// `clusterdns explain` compares it with the model. It returns nil when no
// family has the mode's dispatch chain (the mode is not programmed here).
//
// The rules are followed, not their comments trusted: from each dispatch
// rule through the chains it jumps to, to the DNAT targets they reach.
func ReadKernel(ctx context.Context, r Runner, families []proxy.Family) (*inspect.Kernel, error) {
	var k *inspect.Kernel
	for _, f := range families {
		data, err := r.Save(ctx, f, TableNAT)
		if err != nil {
			return nil, fmt.Errorf("read %s nat rules: %w", f, err)
		}
		if !strings.Contains(string(data), "\n:"+chainServices+" ") && !strings.HasPrefix(string(data), ":"+chainServices+" ") {
			continue
		}
		if k == nil {
			k = &inspect.Kernel{Mode: "iptables", Endpoints: map[inspect.Frontend][]netip.AddrPort{}}
		}
		parseNAT(data, f, k)
	}
	return k, nil
}

// savedRule is what the read-back needs of one rule.
type savedRule struct {
	dst      string // -d, without the one-host suffix
	protocol string // -p
	dport    string // --dport
	jump     string // -j
	dnat     string // --to-destination
}

// parseNAT adds to k the frontends of nat CDNS-SERVICES and CDNS-NODEPORTS
// (in family f) and the endpoints their chains reach.
func parseNAT(data []byte, f proxy.Family, k *inspect.Kernel) {
	chains := map[string][]savedRule{}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "-A ") {
			continue
		}
		args := splitArgs(line)
		if len(args) < 2 {
			continue
		}
		var r savedRule
		for i := 2; i+1 < len(args); i++ {
			switch args[i] {
			case "-d", "--destination":
				r.dst = args[i+1]
			case "-p", "--protocol":
				r.protocol = args[i+1]
			case "--dport", "--destination-port":
				r.dport = args[i+1]
			case "-j", "--jump":
				r.jump = args[i+1]
			case "--to-destination":
				r.dnat = args[i+1]
			}
		}
		chains[args[1]] = append(chains[args[1]], r)
	}
	for _, r := range chains[chainServices] {
		if r.dst == "" || r.dport == "" || !strings.HasPrefix(r.jump, ChainPrefix) {
			continue
		}
		fr, ok := frontendOf(r)
		if !ok {
			continue
		}
		addReached(k, chains, fr, r.jump)
	}
	for _, r := range chains[chainNodePorts] {
		port, err := strconv.ParseUint(r.dport, 10, 16)
		if r.dst != "" || err != nil || !strings.HasPrefix(r.jump, ChainPrefix) {
			continue
		}
		addReached(k, chains, inspect.NodePortFrontend(f, zone.Protocol(strings.ToUpper(r.protocol)), uint16(port)), r.jump)
	}
}

// addReached adds the frontend and the endpoints its chain reaches.
func addReached(k *inspect.Kernel, chains map[string][]savedRule, f inspect.Frontend, chain string) {
	k.Add(f, netip.AddrPort{})
	for _, ep := range reachedDNAT(chains, chain) {
		k.Add(f, ep)
	}
}

func frontendOf(r savedRule) (inspect.Frontend, bool) {
	dst := r.dst
	if p, err := netip.ParsePrefix(dst); err == nil {
		if p.Bits() != p.Addr().BitLen() {
			return inspect.Frontend{}, false
		}
		dst = p.Addr().String()
	}
	a, err := netip.ParseAddr(dst)
	port, perr := strconv.ParseUint(r.dport, 10, 16)
	if err != nil || perr != nil {
		return inspect.Frontend{}, false
	}
	return inspect.Frontend{Addr: a, Protocol: zone.Protocol(strings.ToUpper(r.protocol)), Port: uint16(port)}, true
}

// reachedDNAT returns the DNAT targets reached from chain, in rule order.
func reachedDNAT(chains map[string][]savedRule, chain string) []netip.AddrPort {
	return inspect.FollowDNAT(chain, func(c string) []inspect.Step {
		var steps []inspect.Step
		for _, r := range chains[c] {
			if ep, err := netip.ParseAddrPort(r.dnat); r.dnat != "" && err == nil {
				steps = append(steps, inspect.Step{DNAT: ep})
			}
			if strings.HasPrefix(r.jump, ChainPrefix) && r.jump != chainMarkMasq {
				steps = append(steps, inspect.Step{Jump: r.jump})
			}
		}
		return steps
	})
}

// splitArgs splits a saved rule into words, keeping quoted comments whole.
func splitArgs(line string) []string {
	var out []string
	var cur strings.Builder
	inQuote, escaped, started := false, false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case escaped:
			cur.WriteByte(c)
			escaped = false
		case c == '\\' && inQuote:
			escaped = true
		case c == '"':
			inQuote = !inQuote
			started = true
		case c == ' ' && !inQuote:
			if started {
				out = append(out, cur.String())
				cur.Reset()
				started = false
			}
		default:
			cur.WriteByte(c)
			started = true
		}
	}
	if started {
		out = append(out, cur.String())
	}
	return out
}
