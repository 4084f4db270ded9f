// Package nftables is the native nftables backend of the node agent: it
// renders the proxy.Model into typed objects (objects.go: Table, Chain,
// Rule with its statements, Set, Element) and each sync into one
// Transaction, a list of operations on them that the kernel takes whole or
// not at all. A Runner applies it: ExecRunner writes it as an nft script
// for `nft -f -`, NetlinkRunner encodes partial syncs as netlink messages
// itself, and Fake applies it to an in-memory table that refuses what the
// kernel refuses and lists itself as `nft list table` does (the kernel
// tests hold it to the kernel's listing); the tests trace packets through
// it.
//
// Each family has a table of its own, `ip clusterdns` and `ip6 clusterdns`,
// so the agent never touches anybody else's rules. Packets are dispatched by
// verdict maps rather than by walking a list of rules: the nat hooks jump to
// the chain `services`, which looks up destination address, protocol and port
// in the map `service-ips` and goes to the service port's chain; addresses
// local to the node look up protocol and port in `service-nodeports`, which
// leads to the port's external chain (it marks the packet for masquerading
// and goes on to the service chain). A service chain picks an endpoint with
// one rule, `numgen random mod n offset b map @endpoints-tcp-0`: the
// port's endpoints are the elements b to b+n-1 of a data map shared with
// other Services (per protocol, a few shards), each a DNAT target. With ClientIP
// affinity it instead sends clients found in an endpoint's affinity set to
// that endpoint's chain, and picks among endpoint chains (one numgen rule
// each), which record the client and DNAT. Hairpin traffic (a pod reaching
// itself through its Service) is masqueraded in postrouting, where source
// and destination are one address listed in the set `hairpin`. New
// connections to service ports without endpoints are rejected from the
// filter hooks through the maps `no-endpoint-services` and
// `no-endpoint-nodeports`.
//
// The layout keeps the number of chains and anonymous sets small on
// purpose: nft 1.0.6 lists every chain of the table before it applies any
// transaction, and the kernel names each new anonymous set by walking all
// the table's sets, so both make a sync's cost grow with the cluster. For
// the same reason the agent sends partial syncs through NetlinkRunner, which
// speaks netlink itself and lists nothing; what would still grow is the
// kernel's own check of the table's jumps, below.
//
// Because dispatch is a map lookup and endpoints are map elements, one
// endpoint replaced is two elements of the endpoints map and a hairpin
// element: the transaction's size does not depend on the number of
// Services, and neither does the kernel's work. A rule added or a chain
// written makes the kernel check every jump reachable from the hooks at
// commit, which grows with the cluster; elements of a data map do not. So
// each list of endpoints owns a block of slots (a power of two, at least
// its size, see slots.go) and keeps it while it fits: only a list that
// changes size rewrites its one rule, and only one outgrowing its block
// moves. Lists with affinity keep per-endpoint chains, as the chain is what
// records the client.
//
// The backend keeps in memory what it programmed (chain bodies, map
// elements, affinity sets) to compute that difference; the kernel is read
// only on cleanup. The first sync, and the first after a failure, replaces
// the tables whole in one transaction.
package nftables
