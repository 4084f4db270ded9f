package zone

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestServiceFromAPIRoutingFields(t *testing.T) {
	lb := func(mutate func(*corev1.Service)) *corev1.Service {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
			Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeLoadBalancer, ClusterIP: "10.96.0.10",
				LoadBalancerSourceRanges: []string{"192.0.2.0/24", " 2001:db8::1/64 ", "bogus"},
			},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
				{IP: "203.0.113.7"},
				{IP: "203.0.113.8", IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)},
				{IP: "2001:db8:1::7", IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)},
				{Hostname: "lb.example"},
			}}},
		}
		if mutate != nil {
			mutate(s)
		}
		return s
	}
	tests := []struct {
		name string
		in   *corev1.Service
		want func(*Service) bool
	}{
		{"ingress IPs with ipMode", lb(nil), func(s *Service) bool {
			return reflect.DeepEqual(s.LoadBalancerIngress, []LoadBalancerIngress{
				{IP: netip.MustParseAddr("203.0.113.7")},
				{IP: netip.MustParseAddr("203.0.113.8"), Proxy: true},
				{IP: netip.MustParseAddr("2001:db8:1::7")},
			})
		}},
		{"source ranges masked, bad ones dropped", lb(nil), func(s *Service) bool {
			return reflect.DeepEqual(s.LoadBalancerSourceRanges, []netip.Prefix{
				netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/64"),
			})
		}},
		{"a ClusterIP Service ignores a stale load balancer status", lb(func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP }),
			func(s *Service) bool { return s.LoadBalancerIngress == nil && s.LoadBalancerSourceRanges == nil }},
		{"policies and traffic distribution", lb(func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
			s.Spec.TrafficDistribution = ptr.To(TrafficPreferSameNode)
		}), func(s *Service) bool {
			return s.ExternalTrafficLocal && s.InternalTrafficLocal && s.TrafficDistribution == TrafficPreferSameNode
		}},
		{"defaults are cluster-wide", lb(func(s *corev1.Service) {
			s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyCluster)
		}), func(s *Service) bool {
			return !s.ExternalTrafficLocal && !s.InternalTrafficLocal && s.TrafficDistribution == ""
		}},
	}
	for _, tt := range tests {
		if got := ServiceFromAPI(tt.in); !tt.want(got) {
			t.Errorf("%s: got %+v", tt.name, got)
		}
	}
}

func TestSliceFromAPIZoneAndHints(t *testing.T) {
	in := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "shop", Name: "web-1"},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.1.0.1"}, Zone: ptr.To("z1"), Hints: &discoveryv1.EndpointHints{
				ForZones: []discoveryv1.ForZone{{Name: "z1"}, {Name: "z2"}},
				ForNodes: []discoveryv1.ForNode{{Name: "n1"}},
			}},
			{Addresses: []string{"10.1.0.2"}, Hints: &discoveryv1.EndpointHints{}},
		},
	}
	got := SliceFromAPI(in)
	if e := got.Endpoints[0]; e.Zone != "z1" || e.Hints == nil ||
		!reflect.DeepEqual(e.Hints.ForZones, []string{"z1", "z2"}) || !reflect.DeepEqual(e.Hints.ForNodes, []string{"n1"}) {
		t.Errorf("endpoint 0 = %+v (hints %+v), want zone z1, zones z1 z2, node n1", e, e.Hints)
	}
	if e := got.Endpoints[1]; e.Zone != "" || e.Hints != nil {
		t.Errorf("endpoint 1 = %+v, want no zone and no hints (empty hints are none)", e)
	}
}

func TestNodeFromAPI(t *testing.T) {
	n := NodeFromAPI(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{corev1.LabelTopologyZone: "z1"}}})
	if n.Name != "n1" || n.Zone != "z1" {
		t.Errorf("NodeFromAPI = %+v, want n1 in z1", n)
	}
}
