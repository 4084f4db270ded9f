// Package e2e holds end-to-end tests that run the real clusterdns binary
// against real peers: a kube-apiserver with etcd, upstream DNS servers on
// loopback, and network namespaces that the tests create and remove.
package e2e
