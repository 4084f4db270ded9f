package nftables

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	nft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// NetlinkRunner sends the scripts of partial syncs to the kernel as one
// netlink batch, without the nft tool, and hands everything else to Exec.
//
// The reason is time: before it applies even a one-line script, nft 1.0.6
// lists every chain of the table, about 80 ms at 10,000 Services, growing
// with the cluster; the kernel needs none of that. The runner understands
// exactly the statements this package writes into partial syncs (chains,
// rules, map and set elements, deleting affinity sets); a script that
// declares or deletes tables or declares sets (a full sync, cleanup, a new
// affinity timeout) goes to nft.
// A statement it does not know is an error, not a reason to use nft: it
// would be a bug in this package.
type NetlinkRunner struct {
	// Exec applies full syncs and lists tables.
	Exec ExecRunner
	// NetNS is an open file descriptor of the network namespace to program,
	// or zero for the agent's own.
	NetNS int
}

// ListTables implements Runner.
func (r *NetlinkRunner) ListTables(ctx context.Context) ([]byte, error) {
	return r.Exec.ListTables(ctx)
}

// Apply implements Runner.
func (r *NetlinkRunner) Apply(ctx context.Context, script []byte) error {
	if bytes.Contains(script, []byte(" table ")) || bytes.Contains(script, []byte("add set ")) {
		return r.Exec.Apply(ctx, script)
	}
	var opts []nft.ConnOption
	if r.NetNS != 0 {
		opts = append(opts, nft.WithNetNSFd(r.NetNS))
	}
	conn, err := nft.New(opts...)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	for n, line := range strings.Split(strings.TrimSuffix(string(script), "\n"), "\n") {
		if err := queue(conn, line); err != nil {
			return fmt.Errorf("netlink: line %d %q: %w", n+1, line, err)
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("netlink: %d statements: %w", strings.Count(string(script), "\n"), err)
	}
	return nil
}

// queue adds one script line to the batch.
func queue(conn *nft.Conn, line string) error {
	words := strings.SplitN(line, " ", 6)
	if len(words) < 5 {
		return fmt.Errorf("not a statement this runner knows")
	}
	// words: verb object family table name [rest]
	verb, object, fam, name := words[0], words[1], words[2], words[4]
	rest := ""
	if len(words) == 6 {
		rest = words[5]
	}
	var f family
	switch fam {
	case "ip":
		f = familyOf(4)
	case "ip6":
		f = familyOf(6)
	default:
		return fmt.Errorf("family %q", fam)
	}
	table := &nft.Table{Name: words[3], Family: nft.TableFamilyIPv4}
	if f.ip == "ip6" {
		table.Family = nft.TableFamilyIPv6
	}
	chain := &nft.Chain{Name: name, Table: table}
	switch verb + " " + object {
	case "add chain":
		if rest != "" {
			return fmt.Errorf("only regular chains")
		}
		conn.AddChain(chain)
	case "flush chain":
		conn.FlushChain(chain)
	case "delete chain":
		conn.DelChain(chain)
	case "delete set":
		conn.DelSet(&nft.Set{Name: name, Table: table})
	case "add rule":
		exprs, err := compileRule(f, rest)
		if err != nil {
			return err
		}
		conn.AddRule(&nft.Rule{Table: table, Chain: chain, Exprs: exprs})
	case "add element", "delete element":
		set := &nft.Set{Name: name, Table: table, IsMap: name != setHairpin}
		elem, err := parseElement(f, name, rest)
		if err != nil {
			return err
		}
		if verb == "add" {
			return conn.SetAddElements(set, []nft.SetElement{elem})
		}
		return conn.SetDeleteElements(set, []nft.SetElement{elem})
	default:
		return fmt.Errorf("not a statement this runner knows")
	}
	return nil
}

// parseElement parses "{ KEY }" or "{ KEY : goto CHAIN }" for one of the maps or
// the hairpin set.
func parseElement(f family, set, text string) (nft.SetElement, error) {
	var e nft.SetElement
	text, ok := strings.CutPrefix(text, "{ ")
	if !ok {
		return e, fmt.Errorf("element %q", text)
	}
	text, ok = strings.CutSuffix(text, " }")
	if !ok {
		return e, fmt.Errorf("element %q", text)
	}
	keyText, value, isMap := strings.Cut(text, " : ")
	if isMap {
		target, ok := strings.CutPrefix(value, "goto ")
		if !ok {
			return e, fmt.Errorf("map value %q", value)
		}
		e.VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: target}
	}
	var kinds []string
	switch set {
	case mapServiceIPs, mapNoEndpointServices:
		kinds = []string{"addr", "proto", "port"}
	case mapServiceNodePorts, mapNoEndpointNodePort:
		kinds = []string{"proto", "port"}
	case setHairpin:
		kinds = []string{"addr", "addr"}
	default:
		return e, fmt.Errorf("set %q", set)
	}
	fields := strings.Split(keyText, " . ")
	if len(fields) != len(kinds) || (isMap && set == setHairpin) {
		return e, fmt.Errorf("key %q of set %q", keyText, set)
	}
	// A concatenated key is its fields in network order, each padded with
	// zeros to a multiple of four bytes.
	for i, field := range fields {
		var b []byte
		switch kinds[i] {
		case "addr":
			a, err := netip.ParseAddr(field)
			if err != nil || (a.Is4() != (f.Family == 4)) {
				return e, fmt.Errorf("address %q", field)
			}
			b = a.AsSlice()
		case "proto":
			p, err := protocolNumber(field)
			if err != nil {
				return e, err
			}
			b = []byte{p, 0, 0, 0}
		case "port":
			p, err := strconv.ParseUint(field, 10, 16)
			if err != nil {
				return e, fmt.Errorf("port %q", field)
			}
			b = []byte{byte(p >> 8), byte(p), 0, 0}
		}
		e.Key = append(e.Key, b...)
	}
	return e, nil
}

func protocolNumber(name string) (byte, error) {
	switch name {
	case "tcp":
		return unix.IPPROTO_TCP, nil
	case "udp":
		return unix.IPPROTO_UDP, nil
	case "sctp":
		return unix.IPPROTO_SCTP, nil
	}
	return 0, fmt.Errorf("protocol %q", name)
}

// saddr loads the source address into register 1.
func saddr(f family, length uint32) *expr.Payload {
	offset := uint32(12)
	if f.Family == 6 {
		offset = 8
	}
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length}
}

func addrLen(f family) uint32 {
	if f.Family == 6 {
		return 16
	}
	return 4
}

// compileRule turns one rule of a service, endpoint or external chain, as
// render writes it, into expressions, the ones nft makes of it.
func compileRule(f family, rule string) ([]expr.Any, error) {
	var out []expr.Any
	// numgen random mod K == 0 ...
	if rest, ok := strings.CutPrefix(rule, "numgen random mod "); ok {
		k, after, ok := strings.Cut(rest, " == 0 ")
		mod, err := strconv.ParseUint(k, 10, 32)
		if !ok || err != nil {
			return nil, fmt.Errorf("numgen %q", rule)
		}
		out = append(out,
			&expr.Numgen{Register: 1, Modulus: uint32(mod), Type: unix.NFT_NG_RANDOM},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}})
		rule = after
	}
	switch {
	case strings.HasPrefix(rule, "goto "):
		return append(out, &expr.Verdict{Kind: expr.VerdictGoto, Chain: strings.TrimPrefix(rule, "goto ")}), nil
	case rule == "jump "+chainMarkMasq:
		return append(out, &expr.Verdict{Kind: expr.VerdictJump, Chain: chainMarkMasq}), nil
	case strings.HasPrefix(rule, "meta l4proto "):
		// meta l4proto P dnat to ADDR:PORT
		rest := strings.TrimPrefix(rule, "meta l4proto ")
		proto, target, ok := strings.Cut(rest, " dnat to ")
		if !ok {
			return nil, fmt.Errorf("dnat %q", rule)
		}
		p, err := protocolNumber(proto)
		if err != nil {
			return nil, err
		}
		ap, err := netip.ParseAddrPort(target)
		if err != nil || ap.Addr().Is4() != (f.Family == 4) {
			return nil, fmt.Errorf("dnat target %q", target)
		}
		natFamily := uint32(unix.NFPROTO_IPV4)
		if f.Family == 6 {
			natFamily = unix.NFPROTO_IPV6
		}
		port := binary.BigEndian.AppendUint16(nil, ap.Port())
		return append(out,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
			&expr.Immediate{Register: 1, Data: ap.Addr().AsSlice()},
			&expr.Immediate{Register: 2, Data: port},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFamily, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
		), nil
	case strings.HasPrefix(rule, "update @"):
		// update @SET { ip saddr }
		set, ok := strings.CutSuffix(strings.TrimPrefix(rule, "update @"), " { "+f.ip+" saddr }")
		if !ok {
			return nil, fmt.Errorf("update %q", rule)
		}
		return append(out, saddr(f, addrLen(f)), &expr.Dynset{SrcRegKey: 1, SetName: set, Operation: unix.NFT_DYNSET_OP_UPDATE}), nil
	case strings.HasPrefix(rule, f.ip+" saddr @"):
		// ip saddr @SET goto CHAIN
		set, target, ok := strings.Cut(strings.TrimPrefix(rule, f.ip+" saddr @"), " goto ")
		if !ok {
			return nil, fmt.Errorf("lookup %q", rule)
		}
		return append(out, saddr(f, addrLen(f)), &expr.Lookup{SourceRegister: 1, SetName: set},
			&expr.Verdict{Kind: expr.VerdictGoto, Chain: target}), nil
	case strings.HasPrefix(rule, f.ip+" saddr != "):
		// ip saddr != CIDR jump mark-for-masquerade. As nft does: a prefix
		// cut at a byte compares the bytes it covers; any other compares
		// the whole address under a mask.
		cidr, ok := strings.CutSuffix(strings.TrimPrefix(rule, f.ip+" saddr != "), " jump "+chainMarkMasq)
		prefix, err := netip.ParsePrefix(cidr)
		if !ok || err != nil || prefix.Addr().Is4() != (f.Family == 4) {
			return nil, fmt.Errorf("masquerade %q", rule)
		}
		bits := prefix.Bits()
		addr := prefix.Masked().Addr().AsSlice()
		if bits%8 == 0 {
			addr = addr[:bits/8]
			out = append(out, saddr(f, uint32(len(addr))))
		} else {
			mask := make([]byte, len(addr))
			for i := range mask {
				switch {
				case (i+1)*8 <= bits:
					mask[i] = 0xff
				case i*8 < bits:
					mask[i] = byte(0xff << (8 - bits%8))
				}
			}
			n := uint32(len(addr))
			out = append(out, saddr(f, n), &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)})
		}
		return append(out, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: addr},
			&expr.Verdict{Kind: expr.VerdictJump, Chain: chainMarkMasq}), nil
	}
	return nil, fmt.Errorf("rule %q is not one this runner knows", rule)
}
