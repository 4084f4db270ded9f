// Package nodelocal is the node side of clusterdns nodecache: it puts the
// cache's local addresses (169.254.20.10 and usually the kube-dns ClusterIP)
// on an interface of their own and keeps rules that take DNS traffic to those
// addresses out of conntrack (NOTRACK) and accept it, in iptables or in an
// nftables table of its own.
//
// Skipping conntrack is the point of a node-local cache: it removes the
// conntrack insert race behind UDP "5 second timeouts", and because the raw
// hook runs before kube-proxy's DNAT, a query to the kube-dns ClusterIP is
// delivered to the local socket instead of being load-balanced away.
//
// The package only touches what it names: its interface, its own chains in
// the raw and filter tables (plus one jump to each from the built-in chain),
// and its own nftables table. Every operation is idempotent, so a periodic
// Sync repairs whatever someone else removed, and Teardown of what is not
// there is not an error. It must not answer DNS or know about the Corefile.
package nodelocal
