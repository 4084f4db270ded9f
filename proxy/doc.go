// Package proxy is the node agent that turns the cluster's Services and
// EndpointSlices into routing rules in the kernel, as kube-proxy does.
//
// It has three parts that a backend plugs into. The rule model (Model, built by
// BuildModel from a *zone.Cluster snapshot) says, per Service port and address
// family, which virtual addresses lead to which endpoints; it knows nothing of
// iptables, nftables or IPVS. The Agent takes snapshots from a zone.Source,
// rebuilds the model from the Services each snapshot lists as changed, and
// runs the sync loop: changes batched by a minimum period, a sync at least
// every sync period, a full resync every full sync period and after any
// failure (retried with a growing delay while failures repeat), stale UDP
// conntrack entries removed, health (kube-proxy's /healthz rule) and metrics
// kept. A Backend renders the model into kernel state and applies it:
// proxy/iptables, proxy/nftables and proxy/ipvs are the three.
//
// This package never parses manifests or talks to the API server itself (that
// is zone's job) and never touches the kernel except through a Backend and the
// Conntrack interface.
package proxy
