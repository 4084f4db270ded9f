package zone

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// sliceSummary renders derived slices as "family ports: ip[ready,host] ..." lines.
func sliceSummary(slices_ []*EndpointSlice) []string {
	var out []string
	for _, s := range slices_ {
		var ports []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%s/%s:%d", p.Name, p.Protocol, p.Port))
		}
		line := string(s.AddressType) + " " + strings.Join(ports, ",") + ":"
		for _, e := range s.Endpoints {
			line += fmt.Sprintf(" %s[ready=%t,host=%s,pod=%s]", e.Addresses[0], e.Ready, e.Hostname, e.PodName)
		}
		out = append(out, line)
	}
	return out
}

func TestDeriveSlices(t *testing.T) {
	web := Key{Namespace: "dev", Name: "web"}
	pod := func(name string, ready bool, ips ...string) *Pod {
		return &Pod{Key: Key{Namespace: "dev", Name: name}, IPs: addrs(ips...), Labels: map[string]string{"app": "web"}, Ready: ready,
			Ports: []ContainerPort{{Name: "http", Protocol: ProtocolTCP, Port: 8080}}}
	}
	svc := func(mut func(*Service)) map[Key]*Service {
		s := &Service{Key: web, Selector: map[string]string{"app": "web"},
			Ports: []ServicePort{{Name: "http", Protocol: ProtocolTCP, Port: 80, TargetPort: 80}}}
		if mut != nil {
			mut(s)
		}
		return map[Key]*Service{web: s}
	}
	tests := []struct {
		name     string
		services map[Key]*Service
		owned    map[Key]bool
		pods     []*Pod
		want     []string
	}{
		{name: "ready and not-ready pods",
			services: svc(nil),
			pods:     []*Pod{pod("a", true, "10.0.0.1"), pod("b", false, "10.0.0.2")},
			want:     []string{"IPv4 http/TCP:80: 10.0.0.1[ready=true,host=,pod=a] 10.0.0.2[ready=false,host=,pod=b]"}},
		{name: "terminating pod is not ready",
			services: svc(nil),
			pods:     []*Pod{func() *Pod { p := pod("a", true, "10.0.0.1"); p.Terminating = true; return p }()},
			want:     []string{"IPv4 http/TCP:80: 10.0.0.1[ready=false,host=,pod=a]"}},
		{name: "publishNotReadyAddresses makes every pod ready",
			services: svc(func(s *Service) { s.PublishNotReadyAddresses = true }),
			pods:     []*Pod{pod("b", false, "10.0.0.2")},
			want:     []string{"IPv4 http/TCP:80: 10.0.0.2[ready=true,host=,pod=b]"}},
		{name: "hostname only when subdomain names the service",
			services: svc(nil),
			pods: []*Pod{
				func() *Pod { p := pod("a", true, "10.0.0.1"); p.Hostname, p.Subdomain = "a-0", "web"; return p }(),
				func() *Pod { p := pod("b", true, "10.0.0.2"); p.Hostname, p.Subdomain = "b-0", "other"; return p }(),
				func() *Pod { p := pod("c", true, "10.0.0.3"); p.Subdomain = "web"; return p }(),
			},
			want: []string{"IPv4 http/TCP:80: 10.0.0.1[ready=true,host=a-0,pod=a] 10.0.0.2[ready=true,host=,pod=b] 10.0.0.3[ready=true,host=,pod=c]"}},
		{name: "named target port resolves per pod",
			services: svc(func(s *Service) { s.Ports[0].TargetPort, s.Ports[0].TargetPortName = 0, "http" }),
			pods:     []*Pod{pod("a", true, "10.0.0.1")},
			want:     []string{"IPv4 http/TCP:8080: 10.0.0.1[ready=true,host=,pod=a]"}},
		{name: "pod lacking the named port gets a slice without it",
			services: svc(func(s *Service) { s.Ports[0].TargetPort, s.Ports[0].TargetPortName = 0, "metrics" }),
			pods:     []*Pod{pod("a", true, "10.0.0.1")},
			want:     []string{"IPv4 : 10.0.0.1[ready=true,host=,pod=a]"}},
		{name: "dual-stack pod: one slice per family",
			services: svc(nil),
			pods:     []*Pod{pod("a", true, "10.0.0.1", "fd00::1")},
			want:     []string{"IPv4 http/TCP:80: 10.0.0.1[ready=true,host=,pod=a]", "IPv6 http/TCP:80: fd00::1[ready=true,host=,pod=a]"}},
		{name: "labels must all match",
			services: svc(func(s *Service) { s.Selector = map[string]string{"app": "web", "tier": "front"} }),
			pods:     []*Pod{pod("a", true, "10.0.0.1")},
			want:     nil},
		{name: "pod without IP is skipped",
			services: svc(nil),
			pods:     []*Pod{pod("a", true)},
			want:     nil},
		{name: "service with its own slices is left alone",
			services: svc(nil),
			owned:    map[Key]bool{web: true},
			pods:     []*Pod{pod("a", true, "10.0.0.1")},
			want:     nil},
		{name: "service without selector is left alone",
			services: svc(func(s *Service) { s.Selector = nil }),
			pods:     []*Pod{pod("a", true, "10.0.0.1")},
			want:     nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pods := make(map[Key]*Pod)
			for _, p := range tc.pods {
				pods[p.Key] = p
			}
			got := sliceSummary(DeriveSlices(tc.services, tc.owned, pods))
			if !slices.Equal(got, tc.want) {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}
