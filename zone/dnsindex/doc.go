// Package dnsindex turns one cluster snapshot (zone.Cluster) into the DNS
// records the Kubernetes DNS-Based Service Discovery specification asks for,
// indexed by owner name so that an answer is one map lookup.
//
// An Index is read-only once built. Build reuses the previous index's records
// for the Services that did not change, so a new snapshot costs in proportion
// to what changed. Files by concern: index.go builds and looks up, records.go
// makes the records of one Service and the zone apexes, node.go holds the
// records of one name, names.go reads and spells reverse and dashed names,
// options.go holds the kubernetes block's settings that shape the records.
//
// Only the DNS side imports this package: the node agent links the cluster
// model (package zone) without any DNS code.
package dnsindex
