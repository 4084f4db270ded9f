// Package ipvs is the IPVS backend of the node agent: it renders the
// proxy.Model into IPVS virtual servers, addresses on a dummy link and ipset
// members, and applies them through netlink, as kube-proxy's IPVS mode does.
//
// Every Service port gets a virtual server on its cluster IP (bound on the
// dummy link cdns-ipvs0, which stays down so it never answers ARP), one per
// node address for its node port and one per external IP (bound on the dummy
// link too). Real servers are the port's endpoints, forwarded by masquerading
// (IPVS NAT); ClientIP affinity becomes persistence with the Service's timeout.
//
// A handful of iptables rules, the same whatever the number of Services, do
// what IPVS cannot: they mark node port and external IP traffic (and, with a
// cluster CIDR, traffic from outside the pods) for masquerade, masquerade
// hairpin traffic (a pod reaching itself through its Service), and reject new
// connections to an address on the dummy link on any port that is not a
// service port. The rules match ipsets (CDNS-CLUSTER-IP, CDNS-EXTERNAL-IP,
// CDNS-NODE-PORT, CDNS-LOOP-BACK, CDNS-IPVS-IPS), so Services change set
// members, never rules. The chains are CDNS-IPVS-*, apart from the iptables
// backend's CDNS-* chains, so either mode can clean up after the other.
//
// Sync diffs what is wanted against what is programmed. A full sync reads the
// kernel (virtual servers, real servers, link addresses, set members) and
// repairs any drift; a partial sync trusts the backend's memory and touches
// only the ports the model says changed. A TCP or SCTP real server that goes
// away is first set to weight 0 and deleted once its connections are gone, at
// a later sync; UDP ones go at once (the agent removes their conntrack
// entries).
//
// The package never runs ipvsadm or ipset: IPVS, links, addresses and sets are
// programmed through netlink. Only the few rules above go through
// iptables-restore.
package ipvs
