package proxy

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// StaleFlow describes UDP conntrack entries that must go after a sync. UDP has
// no connection to close, so without this a client that keeps its source port
// (a DNS resolver does) keeps being sent to the endpoint its first packet was
// translated to, even after that endpoint left the Service.
type StaleFlow struct {
	// Service is the cluster IP and port clients send to.
	Service netip.AddrPort
	// NodePort, when not zero, also matches flows that came in on the node port.
	NodePort uint16
	// External are the external and load balancer IPs that, with the
	// Service's port, match flows too.
	External []netip.Addr
	// Endpoint is the removed backend: entries translated to it are stale. When
	// it is invalid, the entries that were not translated at all are stale (the
	// Service had no endpoints when they were made and has some now).
	Endpoint netip.AddrPort
}

// Conntrack deletes connection-tracking entries.
type Conntrack interface {
	DeleteUDP(flows []StaleFlow) error
}

// StaleUDPFlows compares the model programmed before with the one programmed
// now and lists the UDP flows that must be forgotten: for every UDP service
// port, the endpoints it lost, and, when it had none and now has some, its
// untranslated flows.
func StaleUDPFlows(before, after *Model) []StaleFlow {
	if before == nil {
		return nil
	}
	olds := before.Ports
	if after.BaseID == before.ID {
		// after lists what changed since before: only those can differ.
		olds = make([]*ServicePort, 0, len(after.Changes))
		for _, k := range after.Changes {
			if old := before.Lookup(k); old != nil {
				olds = append(olds, old)
			}
		}
	}
	var out []StaleFlow
	for _, old := range olds {
		if old.Protocol != "UDP" {
			continue
		}
		cur := after.Lookup(old.Key)
		if cur.Equal(old) {
			continue
		}
		svc := netip.AddrPortFrom(old.ClusterIP, old.Port)
		oldEps := reachable(old)
		var curEps []netip.AddrPort
		if cur != nil {
			curEps = reachable(cur)
		}
		for _, ep := range oldEps {
			if !containsEndpoint(curEps, ep) {
				out = append(out, StaleFlow{Service: svc, NodePort: old.NodePort, External: externalAddrs(old), Endpoint: ep})
			}
		}
		if cur != nil && len(oldEps) == 0 && len(curEps) > 0 {
			out = append(out, StaleFlow{Service: netip.AddrPortFrom(cur.ClusterIP, cur.Port), NodePort: cur.NodePort, External: externalAddrs(cur)})
		}
	}
	return out
}

// reachable lists every endpoint some traffic to the port may reach.
func reachable(p *ServicePort) []netip.AddrPort {
	if len(p.ExternalEndpoints) == 0 && len(p.ClusterEndpoints) == 0 {
		return p.Endpoints
	}
	all := slices.Concat(p.Endpoints, p.ExternalEndpoints, p.ClusterEndpoints)
	slices.SortFunc(all, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return slices.Compact(all)
}

// externalAddrs lists a port's external and load balancer IPs, nil for none.
func externalAddrs(p *ServicePort) []netip.Addr {
	if len(p.ExternalIPs) == 0 && len(p.LoadBalancerIPs) == 0 {
		return nil
	}
	return slices.Concat(p.ExternalIPs, p.LoadBalancerIPs)
}

func containsEndpoint(list []netip.AddrPort, ep netip.AddrPort) bool {
	for _, e := range list {
		if e == ep {
			return true
		}
	}
	return false
}

// NetlinkConntrack deletes entries in the conntrack table of the network
// namespace the process runs in, through netlink (no conntrack binary).
type NetlinkConntrack struct{}

// DeleteUDP removes every UDP entry matching one of the flows, one table dump
// per address family.
func (NetlinkConntrack) DeleteUDP(flows []StaleFlow) error {
	var v4, v6 staleFilter
	for _, f := range flows {
		if FamilyOf(f.Service.Addr()) == IPv6 {
			v6 = append(v6, f)
		} else {
			v4 = append(v4, f)
		}
	}
	for _, job := range []struct {
		family netlink.InetFamily
		filter staleFilter
	}{{unix.AF_INET, v4}, {unix.AF_INET6, v6}} {
		if len(job.filter) == 0 {
			continue
		}
		if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, job.family, job.filter); err != nil {
			return fmt.Errorf("conntrack: delete stale UDP entries: %w", err)
		}
	}
	return nil
}

// staleFilter matches conntrack flows against a list of stale flows.
type staleFilter []StaleFlow

// MatchConntrackFlow implements netlink.CustomConntrackFilter.
func (s staleFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	if flow.Forward.Protocol != unix.IPPROTO_UDP {
		return false
	}
	dst, _ := netip.AddrFromSlice(flow.Forward.DstIP)
	replySrc, _ := netip.AddrFromSlice(flow.Reverse.SrcIP)
	return s.matches(netip.AddrPortFrom(dst.Unmap(), flow.Forward.DstPort), netip.AddrPortFrom(replySrc.Unmap(), flow.Reverse.SrcPort))
}

// matches decides for one flow, given where its first packet was sent and
// where replies come from.
func (s staleFilter) matches(origDst, replySrc netip.AddrPort) bool {
	for _, f := range s {
		toService := origDst == f.Service || (f.NodePort != 0 && origDst.Port() == f.NodePort) ||
			origDst.Port() == f.Service.Port() && slices.Contains(f.External, origDst.Addr())
		if !toService {
			continue
		}
		if f.Endpoint.IsValid() {
			if replySrc == f.Endpoint {
				return true
			}
		} else if replySrc == origDst {
			return true
		}
	}
	return false
}

var _ netlink.CustomConntrackFilter = staleFilter(nil)
