package nftables

import (
	"bytes"
	"net/netip"
	"strconv"

	"github.com/clusterdns/clusterdns/proxy"
)

// textWriter writes nft syntax.
type textWriter struct{ bytes.Buffer }

func (w *textWriter) str(parts ...string) {
	for _, p := range parts {
		w.WriteString(p)
	}
}

func (w *textWriter) num(n int) {
	w.Buffer.Write(strconv.AppendInt(w.AvailableBuffer(), int64(n), 10))
}

// hex writes a mark as nft reads it ("0x2000") or, with list, as it prints
// it ("0x00002000").
func (w *textWriter) hex(v uint32, list bool) {
	w.WriteString("0x")
	s := strconv.FormatUint(uint64(v), 16)
	if list {
		for i := len(s); i < 8; i++ {
			w.WriteByte('0')
		}
	}
	w.WriteString(s)
}

// addr writes an address without allocating.
func (w *textWriter) addr(a netip.Addr) {
	w.Buffer.Write(a.AppendTo(w.AvailableBuffer()))
}

// prefix writes a prefix as nft prints it: a whole address without "/N".
func (w *textWriter) prefix(p netip.Prefix) {
	w.addr(p.Addr())
	if p.Bits() != p.Addr().BitLen() {
		w.str("/")
		w.num(p.Bits())
	}
}

func (s Numgen) write(w *textWriter, _ string, list bool) {
	w.str("numgen random mod ")
	w.num(s.Mod)
	if list {
		w.str(" 0")
	} else {
		w.str(" == 0")
	}
}

func (CtStateNew) write(w *textWriter, _ string, _ bool) { w.str("ct state new") }
func (s FibLocal) write(w *textWriter, _ string, _ bool) {
	if s.Src {
		w.str("fib saddr type local")
	} else {
		w.str("fib daddr type local")
	}
}

func (s AddrCmp) write(w *textWriter, ip string, _ bool) {
	dir := " daddr "
	if s.Src {
		dir = " saddr "
	}
	w.str(ip, dir)
	if s.Not {
		w.str("!= ")
	}
	w.prefix(s.Prefix)
}

func (s DaddrIn) write(w *textWriter, ip string, list bool) {
	w.str(ip, " daddr ")
	if list && len(s.Prefixes) == 1 {
		w.prefix(s.Prefixes[0])
		return
	}
	w.str("{ ")
	for i, p := range s.Prefixes {
		if i > 0 {
			w.str(", ")
		}
		w.prefix(p)
	}
	w.str(" }")
}

func (s SaddrIn) write(w *textWriter, ip string, _ bool) { w.str(ip, " saddr @", s.Set) }
func (s PairIn) write(w *textWriter, ip string, _ bool) {
	w.str(ip, " saddr . ", ip, " daddr @", s.Set)
}

func (s MarkClear) write(w *textWriter, _ string, list bool) {
	w.str("meta mark & ")
	w.hex(s.Mask, list)
	w.str(" == ")
	if list {
		w.hex(0, true)
	} else {
		w.str("0")
	}
}

func (s VMap) write(w *textWriter, ip string, _ bool) {
	if s.Addr {
		w.str(ip, " daddr . ")
	}
	w.str("meta l4proto . th dport vmap @", s.Map)
}

func (s UpdateSaddr) write(w *textWriter, ip string, _ bool) {
	w.str("update @", s.Set, " { ", ip, " saddr }")
}

func (s MarkSet) write(w *textWriter, _ string, list bool) {
	w.str("meta mark set meta mark ", string(s.Op), " ")
	w.hex(s.Mask, list)
}

func (s DNAT) write(w *textWriter, _ string, _ bool) {
	w.str("meta l4proto ", s.Proto, " dnat to ")
	w.Buffer.Write(s.To.AppendTo(w.AvailableBuffer()))
}

func (s DNATSlot) write(w *textWriter, ip string, _ bool) {
	w.str("meta l4proto ", s.Proto, " dnat ", ip, " to numgen random mod ")
	w.num(s.Mod)
	if s.Offset != 0 {
		w.str(" offset ")
		w.num(int(s.Offset))
	}
	w.str(" map @", s.Map)
}

func (Masquerade) write(w *textWriter, _ string, _ bool) { w.str("masquerade fully-random") }
func (Reject) write(w *textWriter, _ string, _ bool)     { w.str("reject") }
func (Drop) write(w *textWriter, _ string, _ bool)       { w.str("drop") }
func (s Jump) write(w *textWriter, _ string, _ bool)     { w.str("jump ", s.Chain) }
func (s Goto) write(w *textWriter, _ string, _ bool)     { w.str("goto ", s.Chain) }
func (Return) write(w *textWriter, _ string, _ bool)     { w.str("return") }

// stmts writes a rule's statements separated by spaces.
func (w *textWriter) stmts(r *Rule, list bool) {
	ip := familyOf(r.Family).ip
	for i, s := range r.Stmts {
		if i > 0 {
			w.WriteByte(' ')
		}
		s.write(w, ip, list)
	}
}

// setType writes a set's type, "type ipv4_addr . inet_proto . inet_service"
// or, for an endpoints map, "typeof numgen random mod 1 : ip daddr . tcp
// dport" (its key is what numgen draws, for which nft has no type name).
func (w *textWriter) setType(s *Set) {
	if s.Endpoints != "" {
		w.str("typeof numgen random mod 1 : ", familyOf(s.Family).ip, " daddr . ", s.Endpoints, " dport")
		return
	}
	w.str("type ")
	for i, k := range s.Key {
		if i > 0 {
			w.str(" . ")
		}
		switch k {
		case KeyAddr:
			w.str(familyOf(s.Family).addrType)
		case KeyProto:
			w.str("inet_proto")
		case KeyPort:
			w.str("inet_service")
		}
	}
	if s.Map {
		w.str(" : verdict")
	}
}

// key writes an element's key, "10.0.0.1 . tcp . 80", and with value its
// verdict.
func (w *textWriter) key(e *Element, value bool) {
	if e.To.IsValid() {
		w.num(int(e.Slot))
		if value {
			w.str(" : ")
			w.addr(e.To.Addr())
			w.str(" . ")
			w.num(int(e.To.Port()))
		}
		return
	}
	for i, v := range e.Key {
		if i > 0 {
			w.str(" . ")
		}
		switch {
		case v.Addr.IsValid():
			w.addr(v.Addr)
		case v.Proto != "":
			w.str(v.Proto)
		default:
			w.num(int(v.Port))
		}
	}
	if value && e.Goto != "" {
		w.str(" : goto ", e.Goto)
	}
}

func tableText(f proxy.Family) string { return familyOf(f).table }

// op writes one operation as a line of an nft script.
func (w *textWriter) op(o Op) {
	verb := o.Verb.String()
	switch obj := o.Object.(type) {
	case *Table:
		w.str(verb, " table ", tableText(obj.Family), "\n")
	case *Chain:
		w.str(verb, " chain ", tableText(obj.Family), " ", obj.Name)
		if h := obj.Hook; h != nil && o.Verb == Add {
			w.str(" { type ", h.Type, " hook ", h.Hook, " priority ", h.Priority, "; }")
		}
		w.str("\n")
	case *Rule:
		w.str(verb, " rule ", tableText(obj.Family), " ", obj.Chain, " ")
		w.stmts(obj, false)
		w.str("\n")
	case *Set:
		kind := " set "
		if obj.Map {
			kind = " map "
		}
		w.str(verb, kind, tableText(obj.Family), " ", obj.Name)
		if o.Verb == Add {
			w.str(" { ")
			w.setType(obj)
			w.str(";")
			if obj.Timeout > 0 {
				w.str(" flags dynamic,timeout; timeout ")
				w.num(int(obj.Timeout))
				w.str("s;")
			}
			w.str(" }")
		}
		w.str("\n")
	case *Element:
		w.str(verb, " element ", tableText(obj.Family), " ", obj.Set, " { ")
		w.key(obj, o.Verb != Delete)
		w.str(" }\n")
	}
}

// Script is the transaction as an nft script, one operation a line; nil
// when there is nothing to do. The bytes are the transaction's own, valid
// until the next call.
func (tx *Transaction) Script() []byte {
	if len(tx.Ops) == 0 {
		return nil
	}
	tx.text.Reset()
	tx.writeScript(&tx.text)
	return tx.text.Bytes()
}

func (tx *Transaction) writeScript(w *textWriter) {
	for _, o := range tx.Ops {
		w.op(o)
	}
}
