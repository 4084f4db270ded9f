package proxy

import "net/netip"

// Routing holds the options every rule backend reads the same way; the
// command line fills them from kube-proxy's flags of the same meaning.
type Routing struct {
	// ClusterCIDRs are the pod ranges, at most one per family is used:
	// traffic to a cluster IP from outside them is masqueraded.
	ClusterCIDRs []netip.Prefix
	// MasqueradeAll masquerades all traffic to cluster IPs.
	MasqueradeAll bool
	// NodePortAddresses limits node ports to local addresses in these
	// ranges; nil means every local address but loopback (IPVS mode also
	// leaves out link-local ones).
	NodePortAddresses []netip.Prefix
	// MasqueradeMark is the packet mark bit asking for masquerade; zero
	// means DefaultMasqueradeMark.
	MasqueradeMark uint32
}

// DefaultMasqueradeMark is bit 13, beside kube-proxy's bit 14, so that both
// can run on one node.
const DefaultMasqueradeMark = 1 << 13

// Mark is the masquerade mark bit in use.
func (r *Routing) Mark() uint32 {
	if r.MasqueradeMark == 0 {
		return DefaultMasqueradeMark
	}
	return r.MasqueradeMark
}
