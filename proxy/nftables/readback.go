package nftables

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/inspect"
	"github.com/clusterdns/clusterdns/zone"
)

// TableLister lists one family's clusterdns table as `nft list table`
// prints it; ExecRunner and Fake are both one.
type TableLister interface {
	ListTables(ctx context.Context) ([]byte, error)
	ListTable(ctx context.Context, f proxy.Family) ([]byte, error)
}

// ListTable implements TableLister with `nft list table`.
func (r ExecRunner) ListTable(ctx context.Context, f proxy.Family) ([]byte, error) {
	cmd := r.command(ctx, "list", "table", familyOf(f).ip, TableName)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("nft list table %s: %w: %s", familyOf(f).table, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// ListTable implements TableLister.
func (f *Fake) ListTable(_ context.Context, fam proxy.Family) ([]byte, error) {
	out := f.DumpTable(fam)
	if out == "" {
		return nil, fmt.Errorf("fake nft: no table %s", familyOf(fam).table)
	}
	return []byte(out), nil
}

// ReadKernel reads back where nftables mode sends new connections to each
// cluster IP, external IP, load balancer IP and node port, for `clusterdns
// explain`. It returns nil when
// neither family has the table (the mode is not programmed here).
//
// It follows the listing: each element of service-ips to its chain, and
// through the chains that chain goes to, to the DNAT targets; elements of
// no-endpoint-services are frontends without endpoints; service-nodeports
// and no-endpoint-nodeports are the same for node ports.
func ReadKernel(ctx context.Context, r TableLister, families []proxy.Family) (*inspect.Kernel, error) {
	tables, err := r.ListTables(ctx)
	if err != nil {
		return nil, err
	}
	var k *inspect.Kernel
	for _, f := range families {
		if !bytes.Contains(tables, []byte("table "+familyOf(f).table+"\n")) {
			continue
		}
		listing, err := r.ListTable(ctx, f)
		if err != nil {
			return nil, err
		}
		if k == nil {
			k = &inspect.Kernel{Mode: "nftables", Endpoints: map[inspect.Frontend][]netip.AddrPort{}}
		}
		parseListing(listing, f, k)
	}
	return k, nil
}

// parseListing adds the frontends of one family's table listing to k.
func parseListing(listing []byte, fam proxy.Family, k *inspect.Kernel) {
	chains := map[string][]string{}
	elements := map[string][]string{}
	var block string // "map NAME" or "chain NAME" while inside one
	var inElements bool
	for _, raw := range strings.Split(string(listing), "\n") {
		line := strings.TrimSpace(raw)
		switch {
		case line == "":
		case block == "" && strings.HasSuffix(line, " {") && (strings.HasPrefix(line, "map ") || strings.HasPrefix(line, "chain ") || strings.HasPrefix(line, "set ")):
			block = strings.TrimSuffix(line, " {")
		case line == "}" && !inElements:
			block = ""
		case inElements || strings.HasPrefix(line, "elements = { "):
			line = strings.TrimPrefix(line, "elements = { ")
			inElements = !strings.HasSuffix(line, "}")
			for _, e := range strings.Split(strings.TrimSuffix(line, "}"), ",") {
				if e = strings.TrimSpace(e); e != "" {
					elements[block] = append(elements[block], e)
				}
			}
		case strings.HasPrefix(block, "chain "):
			name := strings.TrimPrefix(block, "chain ")
			chains[name] = append(chains[name], line)
		}
	}
	slots := map[string]map[uint64]netip.AddrPort{} // by map name
	for block, list := range elements {
		name, ok := strings.CutPrefix(block, "map ")
		if !ok || !strings.HasPrefix(name, mapEndpoints) {
			continue
		}
		slots[name] = map[uint64]netip.AddrPort{}
		for _, e := range list {
			if slot, to, ok := parseSlotElement(e); ok {
				slots[name][slot] = to
			}
		}
	}
	for _, m := range []string{mapServiceIPs, mapNoEndpointServices, mapServiceNodePorts, mapNoEndpointNodePort} {
		for _, e := range elements["map "+m] {
			f, chain, ok := parseServiceElement(e, fam)
			if !ok {
				continue
			}
			k.Add(f, netip.AddrPort{})
			if m == mapServiceIPs || m == mapServiceNodePorts {
				for _, ep := range reachedDNAT(chains, slots, chain) {
					k.Add(f, ep)
				}
			}
		}
	}
}

// parseServiceElement reads "10.0.0.1 . tcp . 80 : goto CHAIN", or a node
// port's "tcp . 30080 : goto CHAIN" (in family fam).
func parseServiceElement(e string, fam proxy.Family) (inspect.Frontend, string, bool) {
	key, verdict, ok := strings.Cut(e, " : ")
	parts := strings.Split(key, " . ")
	if !ok || len(parts) < 2 || len(parts) > 3 {
		return inspect.Frontend{}, "", false
	}
	a := inspect.NodePortFrontend(fam, "", 0).Addr
	if len(parts) == 3 {
		var err error
		if a, err = netip.ParseAddr(parts[0]); err != nil {
			return inspect.Frontend{}, "", false
		}
		parts = parts[1:]
	}
	port, err := strconv.ParseUint(parts[1], 10, 16)
	if err != nil {
		return inspect.Frontend{}, "", false
	}
	f := inspect.Frontend{Addr: a, Protocol: zone.Protocol(strings.ToUpper(parts[0])), Port: uint16(port)}
	_, chain, _ := strings.Cut(verdict, " ")
	return f, chain, true
}

// parseSlotElement reads an endpoints map element, "10 : 10.0.0.1 . 80".
func parseSlotElement(e string) (uint64, netip.AddrPort, bool) {
	key, value, ok := strings.Cut(e, " : ")
	addr, port, ok2 := strings.Cut(value, " . ")
	slot, err := strconv.ParseUint(key, 10, 32)
	if !ok || !ok2 || err != nil {
		return 0, netip.AddrPort{}, false
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return 0, netip.AddrPort{}, false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0, netip.AddrPort{}, false
	}
	return slot, netip.AddrPortFrom(a, uint16(p)), true
}

// reachedDNAT returns the DNAT targets reached from chain through goto and
// jump, in rule order; a draw from an endpoints map ("dnat ip to numgen
// random mod N [offset B] map @endpoints-tcp") reaches the targets of its
// slots.
func reachedDNAT(chains map[string][]string, slots map[string]map[uint64]netip.AddrPort, chain string) []netip.AddrPort {
	return inspect.FollowDNAT(chain, func(c string) []inspect.Step {
		var steps []inspect.Step
		for _, rule := range chains[c] {
			words := strings.Fields(rule)
			if i := slices.Index(words, "numgen"); i > 0 && words[i-1] == "to" && strings.HasPrefix(words[len(words)-1], "@"+mapEndpoints) {
				for _, ep := range drawnSlots(words[i:], slots[strings.TrimPrefix(words[len(words)-1], "@")]) {
					steps = append(steps, inspect.Step{DNAT: ep})
				}
				continue
			}
			for i := 0; i+1 < len(words); i++ {
				switch words[i] {
				case "goto", "jump":
					if words[i+1] != chainMarkMasq {
						steps = append(steps, inspect.Step{Jump: words[i+1]})
					}
				case "to":
					if ep, err := netip.ParseAddrPort(words[i+1]); i > 0 && words[i-1] == "dnat" && err == nil {
						steps = append(steps, inspect.Step{DNAT: ep})
					}
				}
			}
		}
		return steps
	})
}

// drawnSlots returns the targets of the slots "numgen random mod N [offset
// B] map @endpoints-tcp" draws from, in slot order.
func drawnSlots(words []string, slots map[uint64]netip.AddrPort) []netip.AddrPort {
	var mod, offset uint64
	for i := 0; i+1 < len(words); i++ {
		switch words[i] {
		case "mod":
			mod, _ = strconv.ParseUint(words[i+1], 10, 32)
		case "offset":
			offset, _ = strconv.ParseUint(words[i+1], 10, 32)
		}
	}
	var out []netip.AddrPort
	for s := offset; s < offset+mod; s++ {
		if ep, ok := slots[s]; ok {
			out = append(out, ep)
		}
	}
	return out
}
