// Package zone is the cluster model that clusterdns serves from: slim copies of
// the Services, EndpointSlices, Pods and Namespaces that answers and rules need,
// the sources that keep them current (a folder of manifests, the Kubernetes
// API). The DNS records built from a snapshot live in zone/dnsindex, so that
// the node agent links no DNS code.
//
// Data flows one way. A Source publishes immutable *Cluster snapshots; consumers
// (the DNS resolver, the node agent) build their own read-only views from each
// snapshot and swap them in atomically. Nothing in this package reaches back to a
// source, and nothing here answers a query or touches the kernel.
package zone
