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
