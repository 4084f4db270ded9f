package ipvs

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"sort"
)

// TableEntry is a virtual server with its real servers, as listed.
type TableEntry struct {
	VirtualServer
	Reals []RealServer
}

// tableHeader is what `ipvsadm -Ln` prints first. The version and size are
// those of every kernel since 2.6; they are printed for the layout's sake.
const tableHeader = "IP Virtual Server version 1.2.1 (size=4096)\n" +
	"Prot LocalAddress:Port Scheduler Flags\n" +
	"  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"

// WriteTable prints entries in the layout of `ipvsadm -Ln`, sorted by
// protocol, address and port, real servers by address.
func WriteTable(w io.Writer, entries []TableEntry) error {
	sort.Slice(entries, func(i, j int) bool { return entries[i].Key().less(entries[j].Key()) })
	bw := bufio.NewWriter(w)
	bw.WriteString(tableHeader)
	for _, e := range entries {
		fmt.Fprintf(bw, "%s  %s %s", e.Protocol, formatAddrPort(e.Address), e.Scheduler)
		if e.Persistence > 0 {
			fmt.Fprintf(bw, " persistent %d", e.Persistence)
		}
		bw.WriteString("\n")
		reals := append([]RealServer(nil), e.Reals...)
		sort.Slice(reals, func(i, j int) bool { return reals[i].Address.Compare(reals[j].Address) < 0 })
		for _, r := range reals {
			fmt.Fprintf(bw, "  -> %-28s %-7s %-6d %-10d %-10d\n", formatAddrPort(r.Address), "Masq", r.Weight, r.ActiveConn, r.InactConn)
		}
	}
	return bw.Flush()
}

// formatAddrPort writes IPv6 addresses in brackets, as ipvsadm does.
func formatAddrPort(ap netip.AddrPort) string {
	if ap.Addr().Is6() {
		return "[" + ap.Addr().String() + "]:" + fmt.Sprint(ap.Port())
	}
	return ap.String()
}

// ReadTable reads the kernel's IPVS table, for listing.
func ReadTable(k IPVS) ([]TableEntry, error) {
	vss, err := k.VirtualServers()
	if err != nil {
		return nil, err
	}
	out := make([]TableEntry, 0, len(vss))
	for _, vs := range vss {
		reals, err := k.RealServers(vs.Key())
		if err != nil {
			return nil, err
		}
		out = append(out, TableEntry{VirtualServer: vs, Reals: reals})
	}
	return out, nil
}
