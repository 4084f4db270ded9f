package nftables

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"testing"

	nft "github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// BenchmarkKernelLayout asks the kernel what an endpoint change costs in
// two layouts of a table of n services, each reached from a hooked verdict
// map: rewriting a service chain of DNAT rules (the layout before the
// endpoints maps), against replacing one element of a shared data map that
// a single rule per service reads with "dnat to numgen random mod K offset
// B map @endpoints" (the backend's layout; BenchmarkKernelEndpointChange
// measures the backend itself).
// A DNAT rule makes the kernel validate the whole table at commit, every
// chain reachable from the hooks, so the first grows with n; an element of
// a data map (no verdict) does not. Issue 15 measured, loaded machine,
// medians: 1,000 services 12–33 ms against 11–25 ms; 50,000 services 270–710
// ms against 37–49 ms.
func BenchmarkKernelLayout(b *testing.B) {
	for _, n := range benchSizes(b) {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			runner := testNamespace(b)
			var script bytes.Buffer
			script.WriteString("table ip layout {\n map svc { type ipv4_addr . inet_proto . inet_service : verdict; }\n" +
				" map endpoints { typeof numgen random mod 1 : ip daddr . tcp dport; }\n" +
				" chain pre { type nat hook prerouting priority dstnat; ip daddr . meta l4proto . th dport vmap @svc; }\n")
			addr := func(base netip.Addr, i int) netip.Addr {
				a := base.As4()
				a[2], a[3] = byte(i>>8), byte(i)
				a[1] += byte(i >> 16)
				return netip.AddrFrom4(a)
			}
			ep1, ep2, vip := netip.MustParseAddr("10.1.0.0"), netip.MustParseAddr("10.2.0.0"), netip.MustParseAddr("10.96.0.0")
			for i := range n {
				fmt.Fprintf(&script, " chain s%d { meta l4proto tcp numgen random mod 2 == 0 dnat to %s:80; meta l4proto tcp dnat to %s:80; }\n",
					i, addr(ep1, i), addr(ep2, i))
			}
			script.WriteString("}\n")
			for i := range n {
				fmt.Fprintf(&script, "add element ip layout svc { %s . tcp . 80 : goto s%d }\n", addr(vip, i), i)
				fmt.Fprintf(&script, "add element ip layout endpoints { %d : %s . 80, %d : %s . 80 }\n", 2*i, addr(ep1, i), 2*i+1, addr(ep2, i))
			}
			cmd := runner.command(context.Background(), "-f", "-")
			cmd.Stdin = &script
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("load the table: %v: %s", err, out)
			}
			conn, err := nft.New(nft.WithNetNSFd(netlinkRunner(b, runner).NetNS))
			if err != nil {
				b.Fatal(err)
			}
			table := &nft.Table{Name: "layout", Family: nft.TableFamilyIPv4}
			dnat := func(a netip.Addr) []expr.Any {
				ip := a.As4()
				return []expr.Any{
					&expr.Immediate{Register: 1, Data: ip[:]},
					&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(80)},
					&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
				}
			}
			fresh := netip.MustParseAddr("10.9.0.0")
			b.Run("chain-rewrite", func(b *testing.B) {
				for i := range b.N {
					chain := &nft.Chain{Name: fmt.Sprintf("s%d", i%n), Table: table}
					conn.FlushChain(chain)
					conn.AddRule(&nft.Rule{Table: table, Chain: chain, Exprs: dnat(addr(fresh, i))})
					conn.AddRule(&nft.Rule{Table: table, Chain: chain, Exprs: dnat(addr(ep2, i%n))})
					if err := conn.Flush(); err != nil {
						b.Fatal(err)
					}
				}
			})
			endpoints, err := conn.GetSetByName(table, "endpoints")
			if err != nil {
				b.Fatal(err)
			}
			b.Run("map-element", func(b *testing.B) {
				for i := range b.N {
					key := binaryutil.NativeEndian.PutUint32(uint32(2 * (i % n)))
					ip := addr(fresh, i).As4()
					conn.SetDeleteElements(endpoints, []nft.SetElement{{Key: key}})
					// Each part of a concatenation takes whole 4-byte registers.
					conn.SetAddElements(endpoints, []nft.SetElement{{Key: key, Val: append(ip[:], 0, 80, 0, 0)}})
					if err := conn.Flush(); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
