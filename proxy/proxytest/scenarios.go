package proxytest

import (
	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/zone"
)

// Scenarios are the contract's cases. Their names are the names of the
// golden files a backend may keep of them.
func Scenarios() []Scenario {
	pods := NginxPods()
	clusterIP, nodePort := ClusterIPService(), NodePortService()
	withoutEndpoints := Service{Namespace: "dev", Name: "empty", Type: zone.TypeNodePort, ClusterIPs: []string{"10.10.0.5"}, Port: 8080, NodePort: 30080}
	dual := Service{Namespace: "dev", Name: "dual", ClusterIPs: []string{"10.10.0.6", "fd00:10::6"}, Port: 53, Protocol: zone.ProtocolUDP, PortName: "dns",
		Ready: []string{"172.16.79.83", "fd00:172::83", "fd00:172::84"}}
	draining := Service{Namespace: "dev", Name: "draining", ClusterIPs: []string{"10.10.0.7"}, Port: 80,
		NotReady: []string{"172.16.1.1"}, Draining: []string{"172.16.1.2", "172.16.1.3"}}
	mixed := Service{Namespace: "dev", Name: "mixed", ClusterIPs: []string{"10.10.0.8"}, Port: 80,
		Ready: []string{"172.16.1.4"}, NotReady: []string{"172.16.1.5"}, Draining: []string{"172.16.1.6"}}
	external := Service{Namespace: "dev", Name: "external", ClusterIPs: []string{"10.10.0.9"}, ExternalIPs: []string{"192.0.2.9"},
		Port: 443, TargetPort: 8443, Ready: []string{"172.16.1.7"}}
	affinity := With(nodePort, func(s *Service) { s.Affinity = 10800 })
	changed := With(clusterIP, func(s *Service) { s.Ready = []string{"172.16.79.83", "172.16.69.207", "172.16.1.9"} })
	gone := With(clusterIP, func(s *Service) { s.Ready = nil })
	moved := With(clusterIP, func(s *Service) { s.Port, s.TargetPort = 8080, 80 })

	lb := Service{Namespace: "dev", Name: "lb", Type: zone.TypeLoadBalancer, ClusterIPs: []string{"10.10.0.20", "fd00:10::20"},
		Port: 80, NodePort: 30020, LoadBalancerIPs: []string{"203.0.113.20", "2001:db8::20"}, ProxyLoadBalancerIPs: []string{"203.0.113.21"},
		Ready: []string{"172.16.1.20", "172.16.2.20", "fd00:172::20"}}
	local := Service{Namespace: "dev", Name: "local", Type: zone.TypeLoadBalancer, ClusterIPs: []string{"10.10.0.30", "fd00:10::30"},
		Port: 80, TargetPort: 8080, NodePort: 30030, ExternalIPs: []string{"192.0.2.30"}, LoadBalancerIPs: []string{"203.0.113.30", "2001:db8::30"},
		ExternalLocal: true, Ready: []string{"172.16.1.30", "172.16.2.30", "fd00:172::30"}, Local: []string{"172.16.1.30", "fd00:172::30"}}
	noLocal := With(local, func(s *Service) { s.Ready = []string{"172.16.2.30"}; s.Local = nil })
	localDraining := With(local, func(s *Service) {
		s.Ready, s.Draining, s.Local = []string{"172.16.2.30"}, []string{"172.16.1.30"}, []string{"172.16.1.30"}
	})
	internal := Service{Namespace: "dev", Name: "internal", ClusterIPs: []string{"10.10.0.40"}, Port: 80, InternalLocal: true,
		Ready: []string{"172.16.1.40", "172.16.2.40"}, Local: []string{"172.16.1.40"}}
	ranged := Service{Namespace: "dev", Name: "ranged", Type: zone.TypeLoadBalancer, ClusterIPs: []string{"10.10.0.50"},
		Port: 80, NodePort: 30050, LoadBalancerIPs: []string{"203.0.113.50"}, SourceRanges: []string{"198.51.100.0/24", "192.0.2.128/25"},
		Ready: []string{"172.16.2.50"}}
	zoned := Service{Namespace: "dev", Name: "zoned", ClusterIPs: []string{"10.10.0.60"}, Port: 80,
		Ready:     []string{"172.16.1.60", "172.16.2.60", "172.16.3.60"},
		ZoneHints: map[string][]string{"172.16.1.60": {NodeZone}, "172.16.2.60": {"zone-b"}, "172.16.3.60": {"zone-b", NodeZone}}}
	sameNode := Service{Namespace: "dev", Name: "same-node", ClusterIPs: []string{"10.10.0.61"}, Port: 80,
		Ready: []string{"172.16.1.61", "172.16.2.61"}, Local: []string{"172.16.1.61"},
		ZoneHints: map[string][]string{"172.16.1.61": {NodeZone}, "172.16.2.61": {NodeZone}},
		NodeHints: map[string][]string{"172.16.1.61": {NodeName}, "172.16.2.61": {OtherNode}}}
	const otherPod = "172.16.9.9" // a pod on another node
	dualCIDR := proxy.Routing{ClusterCIDRs: Prefixes(PodCIDR, PodCIDRv6)}

	toClusterIP := Question{"pod to service", TCP(PodIP, "10.10.97.97", 80), Reach(80, false, pods...)}
	toNodePortSvc := Question{"pod to service", TCP(PodIP, "10.10.97.98", 80), Reach(80, false, pods...)}
	toNodePort := Question{"outside to node port", TCP(OutsideIP, NodeIP, 30002), Reach(80, true, pods...)}
	cidr := proxy.Routing{ClusterCIDRs: Prefixes(PodCIDR)}

	return []Scenario{
		{Name: "clusterip", Feature: FeatureClusterIP, Steps: []Step{{
			Services: []Service{clusterIP},
			Questions: []Question{
				toClusterIP,
				{"node to service", FromNode(TCP(NodeIP, "10.10.97.97", 80)), Reach(80, false, pods...)},
				{"wrong port", TCP(PodIP, "10.10.97.97", 81), NotServed()},
				{"hairpin", TCP("172.16.79.83", "10.10.97.97", 80), Hairpin(80, "172.16.79.83", pods...)},
			},
		}}},
		{Name: "nodeport", Feature: FeatureNodePort, Routing: cidr, Steps: []Step{{
			Services: []Service{nodePort},
			Questions: []Question{
				toNodePort,
				{"node to own node port", FromNode(TCP(NodeIP, NodeIP, 30002)), Reach(80, true, pods...)},
				toNodePortSvc,
				{"off-cluster to service", TCP(OutsideIP, "10.10.97.98", 80), Reach(80, true, pods...)},
				{"loopback node port", FromNode(TCP("127.0.0.1", "127.0.0.1", 30002)), NotServed()},
				{"other port on node", TCP(OutsideIP, NodeIP, 30003), NotServed()},
			},
		}}},
		{Name: "nodeport-addresses", Feature: FeatureNodePortRanges, Routing: proxy.Routing{NodePortAddresses: Prefixes(NodePortAddressRange)}, Steps: []Step{{
			Services: []Service{nodePort, withoutEndpoints},
			Questions: []Question{
				{"listed address", TCP(OutsideIP, NodeIP, 30002), Reach(80, true, pods...)},
				{"unlisted local address", TCP(OutsideIP, OtherLocalIP, 30002), NotServed()},
			},
		}}},
		{Name: "affinity", Feature: FeatureAffinity, Steps: []Step{{
			Services: []Service{affinity},
			Questions: []Question{
				{"pod to service", TCP(PodIP, "10.10.97.98", 80), Reach(80, false, pods...).Sticky(10800)},
				{"outside to node port", TCP(OutsideIP, NodeIP, 30002), Reach(80, true, pods...).Sticky(10800)},
			},
		}}},
		{Name: "no-endpoints", Feature: FeatureNoEndpoints, Steps: []Step{{
			Services: []Service{withoutEndpoints, clusterIP},
			Questions: []Question{
				{"pod to service", TCP(PodIP, "10.10.0.5", 8080), Rejects()},
				{"node to service", FromNode(TCP(NodeIP, "10.10.0.5", 8080)), Rejects()},
				{"outside to node port", TCP(OutsideIP, NodeIP, 30080), Rejects()},
				{"other service still works", TCP(PodIP, "10.10.97.97", 80), Reach(80, false, pods...)},
			},
		}}},
		{Name: "terminating-fallback", Feature: FeatureTerminating, Steps: []Step{{
			Services: []Service{draining, mixed},
			Questions: []Question{
				{"only draining endpoints", TCP("172.16.9.9", "10.10.0.7", 80), Reach(80, false, "172.16.1.2", "172.16.1.3")},
				{"ready wins over draining", TCP("172.16.9.9", "10.10.0.8", 80), Reach(80, false, "172.16.1.4")},
			},
		}}},
		{Name: "dual-stack", Feature: FeatureDualStack, Routing: proxy.Routing{ClusterCIDRs: Prefixes(PodCIDR, PodCIDRv6)}, Steps: []Step{{
			Services: []Service{dual},
			Questions: []Question{
				{"v4", UDP(PodIP, "10.10.0.6", 53), Reach(53, false, "172.16.79.83")},
				{"v6", UDP("fd00:172::99", "fd00:10::6", 53), Reach(53, false, "fd00:172::83", "fd00:172::84")},
				{"v6 off-cluster", UDP("fd00:99::1", "fd00:10::6", 53), Reach(53, true, "fd00:172::83", "fd00:172::84")},
			},
		}}},
		{Name: "masquerade-all", Feature: FeatureMasqueradeAll, Routing: proxy.Routing{MasqueradeAll: true}, Steps: []Step{{
			Services:  []Service{clusterIP},
			Questions: []Question{{"pod to service", TCP(PodIP, "10.10.97.97", 80), Reach(80, true, pods...)}},
		}}},
		{Name: "external-ips", Feature: FeatureExternalIPs, Steps: []Step{
			{Services: []Service{external}, Questions: []Question{
				{"outside to external IP", TCP(OutsideIP, "192.0.2.9", 443), Reach(8443, true, "172.16.1.7")},
				{"pod to cluster IP", TCP(PodIP, "10.10.0.9", 443), Reach(8443, false, "172.16.1.7")},
				{"other port", TCP(OutsideIP, "192.0.2.9", 444), NotServed()},
			}},
			{Services: []Service{With(external, func(s *Service) { s.Ready = nil })}, Questions: []Question{
				{"outside to external IP without endpoints", TCP(OutsideIP, "192.0.2.9", 443), Rejects()},
			}},
		}},
		{Name: "loadbalancer", Feature: FeatureLoadBalancer, Routing: dualCIDR, Steps: []Step{
			{Services: []Service{lb}, Questions: []Question{
				{"outside to LB IP", TCP(OutsideIP, "203.0.113.20", 80), Reach(80, true, "172.16.1.20", "172.16.2.20")},
				{"outside to LB IP over IPv6", TCP("2001:db8:99::1", "2001:db8::20", 80), Reach(80, true, "fd00:172::20")},
				{"pod to LB IP", TCP(PodIP, "203.0.113.20", 80), Reach(80, true, "172.16.1.20", "172.16.2.20")},
				{"node to LB IP", FromNode(TCP(NodeIP, "203.0.113.20", 80)), Reach(80, true, "172.16.1.20", "172.16.2.20")},
				{"outside to its node port", TCP(OutsideIP, NodeIP, 30020), Reach(80, true, "172.16.1.20", "172.16.2.20")},
				{"ipMode Proxy is left to the load balancer", TCP(PodIP, "203.0.113.21", 80), NotServed()},
				{"other port of the LB IP", TCP(OutsideIP, "203.0.113.20", 81), NotServed()},
			}},
			{Services: []Service{With(lb, func(s *Service) { s.Ready = nil })}, Questions: []Question{
				{"outside to LB IP without endpoints", TCP(OutsideIP, "203.0.113.20", 80), Rejects()},
			}},
		}},
		{Name: "external-traffic-local", Feature: FeatureExternalLocal, Routing: dualCIDR, Steps: []Step{
			{Services: []Service{local}, Questions: []Question{
				{"outside to node port keeps its source", TCP(OutsideIP, NodeIP, 30030), Reach(8080, false, "172.16.1.30")},
				{"outside to LB IP keeps its source", TCP(OutsideIP, "203.0.113.30", 80), Reach(8080, false, "172.16.1.30")},
				{"outside to LB IP over IPv6", TCP("2001:db8:99::1", "2001:db8::30", 80), Reach(8080, false, "fd00:172::30")},
				{"outside to external IP keeps its source", TCP(OutsideIP, "192.0.2.30", 80), Reach(8080, false, "172.16.1.30")},
				{"pod to cluster IP goes anywhere", TCP(otherPod, "10.10.0.30", 80), Reach(8080, false, "172.16.1.30", "172.16.2.30")},
			}},
			{Services: []Service{noLocal}, Questions: []Question{
				{"outside to node port without a local endpoint", TCP(OutsideIP, NodeIP, 30030), Drops()},
				{"outside to LB IP without a local endpoint", TCP(OutsideIP, "203.0.113.30", 80), Drops()},
				{"outside to external IP without a local endpoint", TCP(OutsideIP, "192.0.2.30", 80), Drops()},
				{"pod to LB IP still served", TCP(otherPod, "203.0.113.30", 80), Reach(8080, false, "172.16.2.30")},
				{"node to LB IP still served", FromNode(TCP(NodeIP, "203.0.113.30", 80)), Reach(8080, true, "172.16.2.30")},
				{"pod to cluster IP", TCP(otherPod, "10.10.0.30", 80), Reach(8080, false, "172.16.2.30")},
			}},
			{Services: []Service{localDraining}, Questions: []Question{
				{"the local draining endpoint takes outside traffic", TCP(OutsideIP, "203.0.113.30", 80), Reach(8080, false, "172.16.1.30")},
				{"cluster-wide the ready one wins", TCP(otherPod, "10.10.0.30", 80), Reach(8080, false, "172.16.2.30")},
			}},
			{Services: []Service{With(local, func(s *Service) { s.Ready, s.Local = nil, nil })}, Questions: []Question{
				{"no endpoints anywhere", TCP(OutsideIP, "203.0.113.30", 80), Rejects()},
				{"no endpoints anywhere, node port", TCP(OutsideIP, NodeIP, 30030), Rejects()},
			}},
		}},
		// While the node has a local endpoint, pods and the node itself
		// still reach every endpoint through the external addresses, as if
		// they had gone out to a load balancer and come back.
		{Name: "external-traffic-local-short-circuit", Feature: FeatureShortCircuit, Routing: dualCIDR, Steps: []Step{
			{Services: []Service{local}, Questions: []Question{
				{"pod to LB IP goes anywhere", TCP(otherPod, "203.0.113.30", 80), Reach(8080, false, "172.16.1.30", "172.16.2.30")},
				{"node to LB IP goes anywhere, masqueraded", FromNode(TCP(NodeIP, "203.0.113.30", 80)), Reach(8080, true, "172.16.1.30", "172.16.2.30")},
				{"node to own node port goes anywhere", FromNode(TCP(NodeIP, NodeIP, 30030)), Reach(8080, true, "172.16.1.30", "172.16.2.30")},
			}},
		}},
		{Name: "internal-traffic-local", Feature: FeatureInternalLocal, Routing: cidr, Steps: []Step{
			{Services: []Service{internal}, Questions: []Question{
				{"pod to cluster IP stays on the node", TCP(otherPod, "10.10.0.40", 80), Reach(80, false, "172.16.1.40")},
				{"node to cluster IP stays on the node", FromNode(TCP(NodeIP, "10.10.0.40", 80)), Reach(80, true, "172.16.1.40")},
			}},
			{Services: []Service{With(internal, func(s *Service) { s.Local = nil })}, Questions: []Question{
				{"no local endpoint: dropped", TCP(otherPod, "10.10.0.40", 80), Drops()},
			}},
			{Services: []Service{With(internal, func(s *Service) { s.Ready, s.Local = nil, nil })}, Questions: []Question{
				{"no endpoints anywhere: rejected", TCP(otherPod, "10.10.0.40", 80), Rejects()},
			}},
		}},
		{Name: "source-ranges", Feature: FeatureSourceRanges, Routing: cidr, Steps: []Step{
			{Services: []Service{ranged}, Questions: []Question{
				{"listed source", TCP("198.51.100.7", "203.0.113.50", 80), Reach(80, true, "172.16.2.50")},
				{"second listed source", TCP("192.0.2.200", "203.0.113.50", 80), Reach(80, true, "172.16.2.50")},
				{"unlisted source", TCP(OutsideIP, "203.0.113.50", 80), Drops()},
				{"unlisted pod", TCP(otherPod, "203.0.113.50", 80), Drops()},
				{"node port is not limited", TCP(OutsideIP, NodeIP, 30050), Reach(80, true, "172.16.2.50")},
				{"cluster IP is not limited", TCP(otherPod, "10.10.0.50", 80), Reach(80, false, "172.16.2.50")},
			}},
		}},
		{Name: "topology", Feature: FeatureTopology, Routing: cidr, Steps: []Step{
			{Services: []Service{zoned, sameNode}, Questions: []Question{
				{"zone hints", TCP(otherPod, "10.10.0.60", 80), Reach(80, false, "172.16.1.60", "172.16.3.60")},
				{"node hints", TCP(otherPod, "10.10.0.61", 80), Reach(80, false, "172.16.1.61")},
			}},
			{Services: []Service{With(zoned, func(s *Service) { s.Ready = append(s.Ready, "172.16.4.60") }), sameNode}, Questions: []Question{
				{"an endpoint without hints: all", TCP(otherPod, "10.10.0.60", 80), Reach(80, false, "172.16.1.60", "172.16.2.60", "172.16.3.60", "172.16.4.60")},
			}},
		}},
		{Name: "partial-endpoint-change", Feature: FeaturePartialSync, Steps: []Step{
			{Services: []Service{clusterIP, nodePort}, Questions: []Question{toClusterIP}},
			{Services: []Service{changed, nodePort}, Questions: []Question{
				{"new endpoints", TCP(PodIP, "10.10.97.97", 80), Reach(80, false, changed.Ready...)},
				{"other service unchanged", TCP(PodIP, "10.10.97.98", 80), Reach(80, false, pods...)},
			}},
		}},
		{Name: "partial-service-removed", Feature: FeaturePartialSync, Steps: []Step{
			{Services: []Service{clusterIP, nodePort}, Questions: []Question{toNodePortSvc, toNodePort}},
			{Services: []Service{clusterIP}, Questions: []Question{
				{"removed service", TCP(PodIP, "10.10.97.98", 80), NotServed()},
				{"removed node port", TCP(OutsideIP, NodeIP, 30002), NotServed()},
				{"kept service", TCP(PodIP, "10.10.97.97", 80), Reach(80, false, pods...)},
			}},
		}},
		{Name: "partial-service-added", Feature: FeaturePartialSync, Steps: []Step{
			{Services: []Service{clusterIP}, Questions: []Question{{"not there yet", TCP(OutsideIP, NodeIP, 30002), NotServed()}}},
			{Services: []Service{clusterIP, nodePort}, Questions: []Question{toClusterIP, toNodePortSvc, toNodePort}},
		}},
		{Name: "partial-endpoints-gone", Feature: FeaturePartialSync, Steps: []Step{
			{Services: []Service{clusterIP}, Questions: []Question{toClusterIP}},
			{Services: []Service{gone}, Questions: []Question{{"now rejected", TCP(PodIP, "10.10.97.97", 80), Rejects()}}},
		}},
		{Name: "partial-port-changed", Feature: FeaturePartialSync, Steps: []Step{
			{Services: []Service{clusterIP}, Questions: []Question{toClusterIP}},
			{Services: []Service{moved}, Questions: []Question{
				{"old port", TCP(PodIP, "10.10.97.97", 80), NotServed()},
				{"new port", TCP(PodIP, "10.10.97.97", 8080), Reach(80, false, pods...)},
			}},
		}},
		{Name: "partial-affinity-toggled", Feature: FeaturePartialSync, Steps: []Step{
			{Services: []Service{nodePort}, Questions: []Question{toNodePortSvc}},
			{Services: []Service{affinity}, Questions: []Question{
				{"pod to service", TCP(PodIP, "10.10.97.98", 80), Reach(80, false, pods...).Sticky(10800)},
				{"outside to node port", TCP(OutsideIP, NodeIP, 30002), Reach(80, true, pods...).Sticky(10800)},
			}},
			{Services: []Service{nodePort}, Questions: []Question{toNodePortSvc, toNodePort}},
		}},
	}
}
