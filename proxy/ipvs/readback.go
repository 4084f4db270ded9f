package ipvs

import (
	"fmt"
	"net/netip"

	"github.com/clusterdns/clusterdns/proxy/inspect"
	"github.com/clusterdns/clusterdns/zone"
)

// ReadKernel reads back the virtual servers and where they send new
// connections, for `clusterdns explain`: real servers at weight 0 are
// draining (they keep their connections, take no new ones) and are left
// out. It returns nil when the table has no virtual server.
func ReadKernel(k IPVS) (*inspect.Kernel, error) {
	table, err := ReadTable(k)
	if err != nil {
		return nil, fmt.Errorf("read the IPVS table: %w", err)
	}
	if len(table) == 0 {
		return nil, nil
	}
	// Node ports are a virtual server on each node address, which the
	// table does not tell from other addresses: they are not compared.
	out := &inspect.Kernel{Mode: "ipvs", Endpoints: map[inspect.Frontend][]netip.AddrPort{}, NoNodePorts: true, ExternalOwnList: true}
	for _, e := range table {
		f := inspect.Frontend{Addr: e.Address.Addr().Unmap(), Protocol: zone.Protocol(e.Protocol), Port: e.Address.Port()}
		out.Add(f, netip.AddrPort{})
		for _, r := range e.Reals {
			if r.Weight > 0 {
				out.Add(f, netip.AddrPortFrom(r.Address.Addr().Unmap(), r.Address.Port()))
			}
		}
	}
	return out, nil
}
