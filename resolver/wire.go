package resolver

import (
	"github.com/clusterdns/clusterdns/zone/dnsindex"
)

// AnswerWire is Resolve for the common query, on the wire-level fast path:
// a lower-case, fully qualified name (as bytes, straight from a datagram)
// and a type of class IN, answered from the index's prepared bytes without
// allocating. zi is the place in Zones of the zone holding name, as
// MatchZoneBytes finds it (the caller has looked, to see whether its other
// links let it skip them there). ok is false whenever Resolve would do more than return
// prepared records (a name outside the zones, nothing loaded yet, aliases,
// reverse and insecure pod names, names that fall through): the caller then
// takes the full path, which answers exactly as before.
func (k *Kubernetes) AnswerWire(name []byte, qtype uint16, zi int) (dnsindex.Wire, bool) {
	if zi < 0 || zi >= len(k.options.Zones) {
		return dnsindex.Wire{}, false
	}
	ix := k.index.Load()
	if ix == nil {
		return dnsindex.Wire{}, false
	}
	w, ok := ix.LookupWire(name, qtype, zi)
	if !ok {
		return w, false
	}
	if w.Rcode != 0 {
		if k.fallthroughAll || MatchZoneBytes(name, k.fallthroughZones) >= 0 {
			return dnsindex.Wire{}, false
		}
		if k.options.Pods == dnsindex.PodsInsecure && underPods(name, k.options.Zones[zi]) {
			return dnsindex.Wire{}, false
		}
	}
	return w, true
}

// MatchZoneBytes is MatchZone for a name held as bytes (lower case, fully
// qualified): the place in zones of the longest zone containing name, or -1.
func MatchZoneBytes(name []byte, zones []string) int {
	best := -1
	for i, z := range zones {
		if (best < 0 || len(z) > len(zones[best])) && InZoneBytes(name, z) {
			best = i
		}
	}
	return best
}

// InZoneBytes is InZone for a name held as bytes.
func InZoneBytes(name []byte, zone string) bool {
	if zone == "." {
		return true
	}
	if len(name) < len(zone) || string(name[len(name)-len(zone):]) != zone {
		return false
	}
	return len(name) == len(zone) || name[len(name)-len(zone)-1] == '.'
}

// underPods reports whether name is below pod.ZONE, where insecure pod
// names are made when asked.
func underPods(name []byte, zone string) bool {
	const pod = "pod."
	n := len(name) - len(zone)
	return n > len(pod) && string(name[n-len(pod):n]) == pod && name[n-len(pod)-1] == '.'
}
