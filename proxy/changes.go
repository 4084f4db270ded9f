package proxy

import "sort"

// Programmed is what a backend keeps of a service port it programmed.
type Programmed interface {
	// Programmed is the service port as it was programmed.
	Programmed() *ServicePort
}

// ChangedPorts lists, in key order, the keys of the service ports that
// differ between m and what a backend programmed (have, the ports of the
// model whose ID is programmedID), among the families in: the ports added,
// changed and removed.
//
// When m was built from the programmed model, the model's own list of
// changes answers without a look at the other ports; otherwise (the first
// sync, a sync after a failure, a model built from scratch) every port is
// compared.
func ChangedPorts[V Programmed](m *Model, programmedID uint64, have map[PortKey]V, in func(Family) bool) []PortKey {
	var out []PortKey
	if m.BaseID != 0 && m.BaseID == programmedID {
		for _, k := range m.Changes {
			if in(k.Family) {
				out = append(out, k)
			}
		}
		return out
	}
	seen := 0
	for _, sp := range m.Ports {
		if !in(sp.Key.Family) {
			continue
		}
		old, ok := have[sp.Key]
		if ok {
			seen++
		}
		if !ok || !old.Programmed().Equal(sp) {
			out = append(out, sp.Key)
		}
	}
	if seen < len(have) {
		for k := range have {
			if in(k.Family) && m.Lookup(k) == nil {
				out = append(out, k)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].less(out[j]) })
	}
	return out
}
