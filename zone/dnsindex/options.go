package dnsindex

import (
	"slices"

	"github.com/miekg/dns"
)

// SchemaVersion is the Kubernetes DNS-Based Service Discovery schema served in
// the dns-version TXT record.
const SchemaVersion = "1.1.0"

// PodMode selects how a.b.c.d.ns.pod.ZONE names are answered.
type PodMode int

// Pod record modes, as CoreDNS's kubernetes plugin names them.
const (
	PodsDisabled PodMode = iota // no pod records
	PodsInsecure                // any well-formed name answers with the address it spells
	PodsVerified                // only addresses of Pods that exist in that namespace
)

// Options are the kubernetes block settings that shape the records.
type Options struct {
	// Zones are the authoritative zones, lower case and fully qualified. Service
	// records live under each zone that is not a reverse zone.
	Zones []string
	TTL   uint32
	Pods  PodMode
	// Namespaces limits the exposed namespaces; empty exposes all.
	Namespaces map[string]bool
	// NoEndpoints stops serving endpoint records: headless names, endpoint
	// hostnames and headless SRV answer NXDOMAIN.
	NoEndpoints bool
	// EndpointPodNames names an endpoint without a hostname after its Pod
	// rather than its dashed address.
	EndpointPodNames bool
	// IgnoreEmptyService hides Services that have no ready endpoint.
	IgnoreEmptyService bool
}

func sameOptions(a, b Options) bool {
	if a.TTL != b.TTL || a.Pods != b.Pods || a.NoEndpoints != b.NoEndpoints ||
		a.EndpointPodNames != b.EndpointPodNames || a.IgnoreEmptyService != b.IgnoreEmptyService ||
		!slices.Equal(a.Zones, b.Zones) || len(a.Namespaces) != len(b.Namespaces) {
		return false
	}
	for k := range a.Namespaces {
		if !b.Namespaces[k] {
			return false
		}
	}
	return true
}

func (o Options) exposes(ns string) bool { return len(o.Namespaces) == 0 || o.Namespaces[ns] }

func (o Options) hdr(name string, t uint16) dns.RR_Header {
	return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: o.TTL}
}
