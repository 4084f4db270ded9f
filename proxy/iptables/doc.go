// Package iptables is the iptables backend of the node agent: it renders the
// proxy.Model into iptables-restore input and applies it, one atomic
// `iptables-restore --noflush` per family and sync.
//
// The layout follows kube-proxy's, under our own prefix (CDNS-) so that both
// can run on one node: a dispatch chain CDNS-SERVICES hooked from nat
// PREROUTING and OUTPUT matches each cluster IP and port and jumps to the
// service port's chain CDNS-SVC-<hash>, which picks one endpoint chain
// CDNS-SEP-<hash> uniformly (statistic random 1/(n-i)), or the remembered one
// for ClientIP affinity (the recent match); the endpoint chain DNATs. Node ports
// go CDNS-SERVICES -> CDNS-NODEPORTS (destination a local address) ->
// CDNS-EXT-<hash>, which marks the packet for masquerading and continues to the
// service chain; a Service's external IPs (and ports) jump from CDNS-SERVICES
// to the same chain. CDNS-POSTROUTING masquerades marked packets: node port
// traffic, hairpin traffic (a pod reaching itself through its Service) and,
// with a cluster CIDR, traffic from outside the cluster. In the filter table,
// CDNS-SERVICES rejects new connections to service ports without endpoints, on their
// cluster IPs, node ports and external IPs.
//
// The backend keeps in memory what it programmed: a partial sync renders only
// the chains of service ports that changed, and the kernel's tables are read
// only at start, after a failure and on cleanup.
package iptables
