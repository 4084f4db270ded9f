// Package bench compares clusterdns with its peers on one machine: CoreDNS
// (with its kubernetes plugin) for answering queries, kube-proxy (iptables
// mode) for programming Service rules, and a bare UDP responder for the
// ceiling any DNS server can reach here.
package bench
