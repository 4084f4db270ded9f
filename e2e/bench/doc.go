// Package bench compares clusterdns with its peers on one machine: CoreDNS
// (with its kubernetes plugin) for answering queries, kube-proxy for
// programming Service rules (iptables and nftables modes on the host, IPVS
// mode inside the e2e VM), and a bare UDP responder for the ceiling any DNS server can reach
// here.
package bench
