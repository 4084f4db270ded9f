package nftables

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/clusterdns/clusterdns/proxy"
)

// NetlinkRunner sends partial syncs to the kernel as one netlink batch,
// without the nft tool, and hands full ones (Transaction.Full) to Exec.
//
// The reason is time: before it applies even a one-line script, nft 1.0.6
// lists every chain of the table, about 80 ms at 10,000 Services, growing
// with the cluster; the kernel needs none of that. The runner encodes the
// operations and statements that partial syncs contain (chains, the rules
// of service, endpoint and external chains, map and set elements, affinity
// sets); full syncs declare the tables, base chains and maps, which it
// leaves to nft. A statement it cannot encode in a partial transaction is
// an error, not a reason to use nft: it would be a bug in this package.
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
func (r *NetlinkRunner) Apply(ctx context.Context, tx *Transaction) error {
	if tx.Full {
		return r.Exec.Apply(ctx, tx)
	}
	if len(tx.Ops) == 0 {
		return nil
	}
	var opts []nft.ConnOption
	if r.NetNS != 0 {
		opts = append(opts, nft.WithNetNSFd(r.NetNS))
	}
	conn, err := nft.New(opts...)
	if err != nil {
		return fmt.Errorf("netlink: %w", err)
	}
	for i, o := range tx.Ops {
		if err := queue(conn, o); err != nil {
			var w textWriter
			w.op(o)
			return fmt.Errorf("netlink: operation %d (%s): %w", i+1, strings.TrimSpace(w.String()), err)
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("netlink: %d operations: %w", len(tx.Ops), err)
	}
	return nil
}

func netlinkTable(f proxy.Family) *nft.Table {
	if f == proxy.IPv6 {
		return &nft.Table{Name: TableName, Family: nft.TableFamilyIPv6}
	}
	return &nft.Table{Name: TableName, Family: nft.TableFamilyIPv4}
}

// queue adds one operation to the batch.
func queue(conn *nft.Conn, o Op) error {
	table := netlinkTable(o.Object.family())
	switch obj := o.Object.(type) {
	case *Chain:
		chain := &nft.Chain{Name: obj.Name, Table: table}
		switch o.Verb {
		case Add:
			if obj.Hook != nil {
				return fmt.Errorf("only regular chains")
			}
			conn.AddChain(chain)
		case Flush:
			conn.FlushChain(chain)
		case Delete:
			conn.DelChain(chain)
		}
		return nil
	case *Rule:
		if o.Verb != Add {
			return fmt.Errorf("only adding rules")
		}
		exprs, err := compileRule(familyOf(obj.Family), obj.Stmts)
		if err != nil {
			return err
		}
		conn.AddRule(&nft.Rule{Table: table, Chain: &nft.Chain{Name: obj.Chain, Table: table}, Exprs: exprs})
		return nil
	case *Set:
		set := &nft.Set{Name: obj.Name, Table: table, IsMap: obj.Map}
		switch {
		case o.Verb == Delete:
			conn.DelSet(set)
			return nil
		case o.Verb == Add && obj.Timeout > 0 && !obj.Map && len(obj.Key) == 1 && obj.Key[0] == KeyAddr:
			// An affinity set, declared as nft declares it.
			set.KeyType, set.KeyByteOrder = nft.TypeIPAddr, binaryutil.BigEndian
			if obj.Family == proxy.IPv6 {
				set.KeyType = nft.TypeIP6Addr
			}
			set.HasTimeout, set.Dynamic = true, true
			set.Timeout = time.Duration(obj.Timeout) * time.Second
			set.Size = affinitySetSize
			return conn.AddSet(set, nil)
		}
		return fmt.Errorf("%s of this set", o.Verb)
	case *Element:
		set := &nft.Set{Name: obj.Set, Table: table, IsMap: obj.Goto != "" || obj.To.IsValid()}
		elem, err := encodeElement(obj)
		if err != nil {
			return err
		}
		switch o.Verb {
		case Add:
			return conn.SetAddElements(set, []nft.SetElement{elem})
		case Delete:
			return conn.SetDeleteElements(set, []nft.SetElement{elem})
		}
		return fmt.Errorf("%s of an element", o.Verb)
	}
	return fmt.Errorf("not an operation of partial syncs")
}

// affinitySetSize is the size nft gives a dynamic set declared without one.
const affinitySetSize = 65535

// encodeElement encodes an element's key and verdict. A concatenated key is
// its fields in network order, each padded with zeros to a multiple of four
// bytes.
//
// An element of the endpoints map has the slot as key, in host order as
// numgen writes it, and the target as data: the address, then the port in
// network order padded to four bytes.
func encodeElement(e *Element) (nft.SetElement, error) {
	var out nft.SetElement
	if e.To.IsValid() {
		if e.To.Addr().Is4() != (e.Family == proxy.IPv4) {
			return out, fmt.Errorf("endpoint %s in a table of %s", e.To, e.Family)
		}
		out.Key = binaryutil.NativeEndian.PutUint32(e.Slot)
		out.Val = append(e.To.Addr().AsSlice(), byte(e.To.Port()>>8), byte(e.To.Port()), 0, 0)
		return out, nil
	}
	if e.Goto != "" {
		out.VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: e.Goto}
	}
	for _, v := range e.Key {
		switch {
		case v.Addr.IsValid():
			if v.Addr.Is4() != (e.Family == proxy.IPv4) {
				return out, fmt.Errorf("address %s in a table of %s", v.Addr, e.Family)
			}
			out.Key = append(out.Key, v.Addr.AsSlice()...)
		case v.Proto != "":
			p, err := protocolNumber(v.Proto)
			if err != nil {
				return out, err
			}
			out.Key = append(out.Key, p, 0, 0, 0)
		default:
			out.Key = append(out.Key, byte(v.Port>>8), byte(v.Port), 0, 0)
		}
	}
	return out, nil
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
	if f.Family == proxy.IPv6 {
		offset = 8
	}
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: length}
}

func addrLen(f family) uint32 {
	if f.Family == proxy.IPv6 {
		return 16
	}
	return 4
}

// compileRule turns the statements of a service, endpoint or external
// chain's rule into expressions, the ones nft makes of them.
func compileRule(f family, stmts []Stmt) ([]expr.Any, error) {
	var out []expr.Any
	for _, st := range stmts {
		switch s := st.(type) {
		case Numgen:
			out = append(out,
				&expr.Numgen{Register: 1, Modulus: uint32(s.Mod), Type: unix.NFT_NG_RANDOM},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}})
		case Goto:
			out = append(out, &expr.Verdict{Kind: expr.VerdictGoto, Chain: s.Chain})
		case Jump:
			out = append(out, &expr.Verdict{Kind: expr.VerdictJump, Chain: s.Chain})
		case DNAT:
			p, err := protocolNumber(s.Proto)
			if err != nil {
				return nil, err
			}
			if s.To.Addr().Is4() != (f.Family == proxy.IPv4) {
				return nil, fmt.Errorf("dnat target %s in a table of %s", s.To, f.Family)
			}
			natFamily := uint32(unix.NFPROTO_IPV4)
			if f.Family == proxy.IPv6 {
				natFamily = unix.NFPROTO_IPV6
			}
			port := binary.BigEndian.AppendUint16(nil, s.To.Port())
			out = append(out,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
				&expr.Immediate{Register: 1, Data: s.To.Addr().AsSlice()},
				&expr.Immediate{Register: 2, Data: port},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFamily, RegAddrMin: 1, RegProtoMin: 2, Specified: true})
		case DNATSlot:
			p, err := protocolNumber(s.Proto)
			if err != nil {
				return nil, err
			}
			// The map's data lands in register 1 and the next: the port
			// follows the address, in the 32-bit register after it (9 after
			// an IPv4 address, the 128-bit register 2 after an IPv6 one), as
			// nft sets it.
			natFamily, portReg := uint32(unix.NFPROTO_IPV4), uint32(9)
			if f.Family == proxy.IPv6 {
				natFamily, portReg = unix.NFPROTO_IPV6, 2
			}
			out = append(out,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
				&expr.Numgen{Register: 1, Modulus: uint32(s.Mod), Type: unix.NFT_NG_RANDOM, Offset: s.Offset},
				&expr.Lookup{SourceRegister: 1, SetName: s.Map, DestRegister: 1, IsDestRegSet: true},
				&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFamily, RegAddrMin: 1, RegAddrMax: 1, RegProtoMin: portReg, RegProtoMax: portReg, Specified: true})
		case UpdateSaddr:
			out = append(out, saddr(f, addrLen(f)), &expr.Dynset{SrcRegKey: 1, SetName: s.Set, Operation: unix.NFT_DYNSET_OP_UPDATE})
		case SaddrIn:
			out = append(out, saddr(f, addrLen(f)), &expr.Lookup{SourceRegister: 1, SetName: s.Set})
		case AddrCmp:
			// As nft does: a prefix cut at a byte compares the bytes it
			// covers; any other compares the whole address under a mask.
			if !s.Src || s.Prefix.Addr().Is4() != (f.Family == proxy.IPv4) {
				return nil, fmt.Errorf("address match %+v", s)
			}
			bits := s.Prefix.Bits()
			addr := s.Prefix.Masked().Addr().AsSlice()
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
			op := expr.CmpOpEq
			if s.Not {
				op = expr.CmpOpNeq
			}
			out = append(out, &expr.Cmp{Op: op, Register: 1, Data: addr})
		case FibLocal:
			out = append(out,
				&expr.Fib{Register: 1, ResultADDRTYPE: true, FlagSADDR: s.Src, FlagDADDR: !s.Src},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)})
		case Drop:
			out = append(out, &expr.Verdict{Kind: expr.VerdictDrop})
		default:
			return nil, fmt.Errorf("statement %T is not one of partial syncs", st)
		}
	}
	return out, nil
}
