// Package zone is the cluster model that clusterdns serves from: slim copies of
// the Services, EndpointSlices, Pods and Namespaces that answers and rules need,
// the sources that keep them current (a folder of manifests, the Kubernetes
// API), and the DNS record index built from them.
//
// Data flows one way. A Source publishes immutable *Cluster snapshots; consumers
// (the DNS resolver, the node agent) build their own read-only views from each
// snapshot and swap them in atomically. Nothing in this package reaches back to a
// source, and nothing here answers a query or touches the kernel.
package zone
