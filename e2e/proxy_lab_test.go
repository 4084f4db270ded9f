package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/clusterdns/clusterdns/e2e/internal/kubeapi"
	"github.com/clusterdns/clusterdns/e2e/netns"
	"github.com/clusterdns/clusterdns/proxy/healthcheck"
)

// The two-node lab: every Service feature of issue 12 checked with real TCP
// and UDP packets, against kube-proxy first (the reference) and then
// against `clusterdns proxy`, in iptables and nftables modes. The objects
// live in a real API server; each node runs its own agent with its own
// --hostname-override; the outside client stands for a router or a cloud
// load balancer and sends each load balancer or external IP to one node.
//
// The lab is dual-stack: every address below has an IPv6 twin (six), the
// Services are RequireDualStack with one EndpointSlice per family, and
// every row runs again over IPv6 in the same lab.

const (
	labNamespace = "lab"
	labLAN       = "192.168.50.0/24"
	labClient    = "192.168.50.100" // allowed by the source ranges
	labStranger  = "192.168.50.101" // the client's other address, not allowed
	labCIDR      = "10.244.0.0/16"
	labHTTP      = 80   // every Service's TCP port, also the pods' TCP port
	labDNS       = 53   // every Service's UDP port
	labPodUDP    = 5353 // where the pods answer UDP
	labAttempts  = 60   // bound on every "until all seen" loop
	labExchange  = time.Second
	labDropWait  = 1500 * time.Millisecond // a dropped SYN is given this long
	labPatience  = 90 * time.Second        // bound on an agent's first sync
	labProxiedLB = "203.0.113.13"          // an LB IP with ipMode: Proxy, held by the client
	labLBAnswer  = "load-balancer"         // what the client answers on it

	// The IPv6 ranges; the addresses in them are the IPv4 ones' twins.
	labLAN6  = "fd00:50::/64"
	labCIDR6 = "fd00:10:244::/48"
)

// labSix maps the lab's IPv4 networks to IPv6 ones: an address's twin keeps
// its last octet's digits as its last group, so 10.244.1.10 is
// fd00:10:244:1::10. All are unique local addresses, routed nowhere.
var labSix = []struct{ v4, v6 string }{
	{"192.168.50.", "fd00:50::"},
	{"10.244.1.", "fd00:10:244:1::"},
	{"10.244.2.", "fd00:10:244:2::"},
	{"10.96.10.", "fd00:10:96::"},
	{"203.0.113.", "fd00:203:113::"},
	{"198.51.100.", "fd00:198:51:100::"},
}

// six returns the IPv6 twin of a lab IPv4 address, or of a /32 prefix.
func six(v4 string) string {
	addr, bits, prefix := strings.Cut(v4, "/")
	for _, m := range labSix {
		if host, ok := strings.CutPrefix(addr, m.v4); ok {
			switch {
			case !prefix:
				return m.v6 + host
			case bits == "32":
				return m.v6 + host + "/128"
			}
		}
	}
	panic("no IPv6 twin for " + v4)
}

func sixes(v4s []string) []string {
	out := make([]string, len(v4s))
	for i, a := range v4s {
		out[i] = six(a)
	}
	return out
}

// The nodes and their pods; pods answer with their IP.
var labNodes = []netns.LabNodeSpec{
	{Name: "node-a", Zone: "zone-a", IP: "192.168.50.1", PodCIDR: "10.244.1.0/24", PodIPs: []string{"10.244.1.10", "10.244.1.11"},
		IP6: six("192.168.50.1"), PodCIDR6: "fd00:10:244:1::/64", PodIPs6: sixes([]string{"10.244.1.10", "10.244.1.11"})},
	{Name: "node-b", Zone: "zone-b", IP: "192.168.50.2", PodCIDR: "10.244.2.0/24", PodIPs: []string{"10.244.2.10", "10.244.2.11"},
		IP6: six("192.168.50.2"), PodCIDR6: "fd00:10:244:2::/64", PodIPs6: sixes([]string{"10.244.2.10", "10.244.2.11"})},
}

// Pods by short name: aN on node-a, bN on node-b. A pod's name is its IPv4
// address: it answers with it whichever family it was reached in.
const (
	labA0 = "10.244.1.10"
	labA1 = "10.244.1.11"
	labB0 = "10.244.2.10"
	labB1 = "10.244.2.11"
)

// labEndpoint is one endpoint of a lab Service's slice.
type labEndpoint struct {
	pod                         string
	ready, serving, terminating bool
	zones, nodes                []string // hints
}

func epReady(pod string) labEndpoint { return labEndpoint{pod: pod, ready: true, serving: true} }

func epTerminating(pod string) labEndpoint {
	return labEndpoint{pod: pod, serving: true, terminating: true}
}

func epHinted(pod string, zones, nodes []string) labEndpoint {
	e := epReady(pod)
	e.zones, e.nodes = zones, nodes
	return e
}

// labService is one Service of the lab. Its addresses are IPv4 ones; it
// has their twins (six) as well.
type labService struct {
	name      string
	clusterIP string
	lb        string // the load balancer IP, for type LoadBalancer
	lbNode    int    // where the client routes lb (and external)
	lbProxy   bool   // the LB IP has ipMode: Proxy, and the client holds it
	external  string
	local     bool  // externalTrafficPolicy: Local
	healthNP  int32 // healthCheckNodePort (eTP Local LoadBalancers)
	nodePort  int32 // TCP; UDP is the next port
	itpLocal  bool
	ranges    []string
	ranges4   bool   // ranges has no IPv6 twin: the Service lists IPv4 ranges only
	traffic   string // trafficDistribution
	only4     bool   // the IPv6 slice has no endpoints
	endpoints []labEndpoint
}

var labServices = []labService{
	{name: "lb", clusterIP: "10.96.10.1", lb: "203.0.113.1", lbNode: 0, nodePort: 30101, endpoints: []labEndpoint{epReady(labB0)}},
	{name: "ext", clusterIP: "10.96.10.2", external: "198.51.100.2", lbNode: 1, endpoints: []labEndpoint{epReady(labA0), epReady(labB0)}},
	{name: "local", clusterIP: "10.96.10.3", lb: "203.0.113.3", lbNode: 1, local: true, healthNP: 32003, nodePort: 30301,
		endpoints: []labEndpoint{epReady(labA0), epReady(labA1), epReady(labB0)}},
	{name: "local-a", clusterIP: "10.96.10.4", lb: "203.0.113.4", lbNode: 1, local: true, healthNP: 32004, nodePort: 30401,
		endpoints: []labEndpoint{epReady(labA0)}},
	{name: "term-local", clusterIP: "10.96.10.5", lb: "203.0.113.5", lbNode: 1, local: true, healthNP: 32005, nodePort: 30501,
		endpoints: []labEndpoint{epReady(labA0), epTerminating(labB0)}},
	{name: "term-only", clusterIP: "10.96.10.6", endpoints: []labEndpoint{epTerminating(labA1)}},
	{name: "term-mixed", clusterIP: "10.96.10.7", endpoints: []labEndpoint{epReady(labA0), epTerminating(labA1)}},
	{name: "itp", clusterIP: "10.96.10.8", itpLocal: true, endpoints: []labEndpoint{epReady(labA0)}},
	{name: "ranges", clusterIP: "10.96.10.9", lb: "203.0.113.9", lbNode: 0, nodePort: 30901, ranges: []string{labClient + "/32"},
		endpoints: []labEndpoint{epReady(labA0)}},
	{name: "ranges-v4", clusterIP: "10.96.10.14", lb: "203.0.113.14", lbNode: 0, nodePort: 31401, ranges: []string{labClient + "/32"}, ranges4: true,
		endpoints: []labEndpoint{epReady(labA0)}},
	{name: "half", clusterIP: "10.96.10.15", only4: true, endpoints: []labEndpoint{epReady(labB0)}},
	{name: "proxied", clusterIP: "10.96.10.13", lb: labProxiedLB, lbProxy: true, nodePort: 31301, endpoints: []labEndpoint{epReady(labA0)}},
	{name: "zone", clusterIP: "10.96.10.10", traffic: "PreferSameZone", endpoints: []labEndpoint{
		epHinted(labA0, []string{"zone-a"}, nil), epHinted(labB0, []string{"zone-b"}, nil)}},
	{name: "same-node", clusterIP: "10.96.10.11", traffic: "PreferSameNode", endpoints: []labEndpoint{
		epHinted(labA0, []string{"zone-a"}, []string{"node-a"}), epHinted(labB0, []string{"zone-a"}, []string{"node-b"})}},
	{name: "partial-hints", clusterIP: "10.96.10.12", traffic: "PreferSameZone", endpoints: []labEndpoint{
		epHinted(labA0, []string{"zone-a"}, nil), epReady(labB0)}},
}

// podNode is the node a pod runs on.
func podNode(pod string) string {
	for _, n := range labNodes {
		if slices.Contains(n.PodIPs, pod) {
			return n.Name
		}
	}
	panic("unknown pod " + pod)
}

// writeLabObjects writes the Nodes, Services (with their load balancer
// status) and EndpointSlices.
func writeLabObjects(t *testing.T, c kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	createNamespace(t, ctx, c, labNamespace, nil)
	for _, n := range labNodes {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{corev1.LabelTopologyZone: n.Zone, corev1.LabelHostname: n.Name}},
			Spec:       corev1.NodeSpec{PodCIDR: n.PodCIDR, PodCIDRs: []string{n.PodCIDR, n.PodCIDR6}},
		}
		created, err := c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create node %s: %v", n.Name, err)
		}
		created.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: n.IP}, {Type: corev1.NodeInternalIP, Address: n.IP6}, {Type: corev1.NodeHostName, Address: n.Name}}
		created.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
		if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("node %s status: %v", n.Name, err)
		}
	}
	for _, s := range labServices {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: labNamespace, Name: s.name},
			Spec: corev1.ServiceSpec{
				Type:           corev1.ServiceTypeClusterIP,
				ClusterIP:      s.clusterIP,
				ClusterIPs:     []string{s.clusterIP, six(s.clusterIP)},
				IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicyRequireDualStack),
				IPFamilies:     []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol},
				Ports: []corev1.ServicePort{
					{Name: "http", Protocol: corev1.ProtocolTCP, Port: labHTTP, TargetPort: intstr.FromInt32(labHTTP)},
					{Name: "dns", Protocol: corev1.ProtocolUDP, Port: labDNS, TargetPort: intstr.FromInt32(labPodUDP)},
				},
			},
		}
		if len(s.ranges) > 0 {
			svc.Spec.LoadBalancerSourceRanges = slices.Clone(s.ranges)
			if !s.ranges4 {
				svc.Spec.LoadBalancerSourceRanges = append(svc.Spec.LoadBalancerSourceRanges, sixes(s.ranges)...)
			}
		}
		if s.external != "" {
			svc.Spec.ExternalIPs = []string{s.external, six(s.external)}
		}
		if s.lb != "" {
			svc.Spec.Type = corev1.ServiceTypeLoadBalancer
			svc.Spec.Ports[0].NodePort, svc.Spec.Ports[1].NodePort = s.nodePort, s.nodePort+1
		}
		if s.local {
			svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			svc.Spec.HealthCheckNodePort = s.healthNP
		}
		if s.itpLocal {
			svc.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
		}
		if s.traffic != "" {
			svc.Spec.TrafficDistribution = ptr.To(s.traffic)
		}
		created, err := c.CoreV1().Services(labNamespace).Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create service %s: %v", s.name, err)
		}
		if s.lb != "" {
			mode := corev1.LoadBalancerIPModeVIP
			if s.lbProxy {
				mode = corev1.LoadBalancerIPModeProxy
			}
			created.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: s.lb, IPMode: ptr.To(mode)}, {IP: six(s.lb), IPMode: ptr.To(mode)}}
			if _, err := c.CoreV1().Services(labNamespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
				t.Fatalf("service %s status: %v", s.name, err)
			}
		}
		for _, family := range []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6} {
			if _, err := c.DiscoveryV1().EndpointSlices(labNamespace).Create(ctx, labSlice(s, family), metav1.CreateOptions{}); err != nil {
				t.Fatalf("create %s slice of %s: %v", family, s.name, err)
			}
		}
	}
}

// labSlice is a Service's EndpointSlice of one family.
func labSlice(s labService, family discoveryv1.AddressType) *discoveryv1.EndpointSlice {
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: labNamespace, Name: s.name + "-" + strings.ToLower(string(family)),
			Labels: map[string]string{discoveryv1.LabelServiceName: s.name}},
		AddressType: family,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](labHTTP)},
			{Name: ptr.To("dns"), Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To[int32](labPodUDP)},
		},
	}
	for _, e := range s.endpoints {
		if s.only4 && family == discoveryv1.AddressTypeIPv6 {
			break
		}
		addr := e.pod
		if family == discoveryv1.AddressTypeIPv6 {
			addr = six(e.pod)
		}
		ep := discoveryv1.Endpoint{
			Addresses:  []string{addr},
			NodeName:   ptr.To(podNode(e.pod)),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(e.ready), Serving: ptr.To(e.serving), Terminating: ptr.To(e.terminating)},
		}
		if len(e.zones) > 0 || len(e.nodes) > 0 {
			ep.Hints = &discoveryv1.EndpointHints{}
			for _, z := range e.zones {
				ep.Hints.ForZones = append(ep.Hints.ForZones, discoveryv1.ForZone{Name: z})
			}
			for _, n := range e.nodes {
				ep.Hints.ForNodes = append(ep.Hints.ForNodes, discoveryv1.ForNode{Name: n})
			}
		}
		slice.Endpoints = append(slice.Endpoints, ep)
	}
	return slice
}

// labRun is the lab with one implementation's agents running.
type labRun struct {
	lab    *netns.Lab
	agents []*netns.Process
	mode   string // the agents' --proxy-mode, for rows whose expectation depends on it
	// six makes the rows send in IPv6: the addresses they name (IPv4 ones)
	// are read as their twins.
	six bool
}

func (l *labRun) node(i int) *netns.LabNode { return l.lab.Nodes[i] }

// inIPv6 is the lab seen by a row in IPv6. A lab built without IPv6 skips
// the row.
func (l *labRun) inIPv6(t *testing.T) *labRun {
	t.Helper()
	if !l.lab.Nodes[0].IP6.IsValid() {
		t.Skip("the lab has no IPv6")
	}
	six := *l
	six.six = true
	return &six
}

// ip returns a lab address, read in the row's family.
func (l *labRun) ip(v4 string) string {
	if l.six {
		return six(v4)
	}
	return v4
}

// addr is ip as a netip.Addr, for a source address.
func (l *labRun) addr(v4 string) netip.Addr { return netip.MustParseAddr(l.ip(v4)) }

// at is the lab address ip and port in the row's family.
func (l *labRun) at(v4 string, port int) string { return hostPort(l.ip(v4), port) }

// nodeIP is node i's address in the row's family.
func (l *labRun) nodeIP(i int) string { return l.ip(labNodes[i].IP) }

// podRange is the pods' range in the row's family.
func (l *labRun) podRange() netip.Prefix {
	if l.six {
		return netip.MustParsePrefix(labCIDR6)
	}
	return netip.MustParsePrefix(labCIDR)
}

// pod returns the namespace of a pod by its IP.
func (l *labRun) pod(ip string) *netns.NS {
	for _, n := range l.lab.Nodes {
		for i, a := range n.PodIPs {
			if a.String() == ip {
				return n.Pods[i]
			}
		}
	}
	panic("unknown pod " + ip)
}

// peerRule says what source address the pod must have seen.
type peerRule int

const (
	anyPeer     peerRule = iota
	clientPeer           // the client's own address: not masqueraded
	masqueraded          // a node's address on the LAN
	fromCluster          // the sender's own address (a pod's)
)

// exchange sends one TCP connection or UDP datagram from ns (from src when
// valid) to addr and returns the pod's answer: its name and the source
// address it saw.
func exchange(ns *netns.NS, network string, src netip.Addr, addr string) (who, peer string, err error) {
	var line string
	err = ns.Do(func() error {
		switch network {
		case "tcp":
			d := net.Dialer{Timeout: labExchange}
			if src.IsValid() {
				d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
			}
			conn, err := d.Dial("tcp", addr)
			if err != nil {
				return err
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(labExchange))
			line, err = bufio.NewReader(conn).ReadString('\n')
			return err
		default:
			local := &net.UDPAddr{}
			if src.IsValid() {
				local.IP = src.AsSlice()
			}
			conn, err := net.ListenUDP("udp", local)
			if err != nil {
				return err
			}
			defer conn.Close()
			dst, err := net.ResolveUDPAddr("udp", addr)
			if err != nil {
				return err
			}
			if _, err := conn.WriteTo([]byte("who?"), dst); err != nil {
				return err
			}
			_ = conn.SetReadDeadline(time.Now().Add(labExchange))
			buf := make([]byte, 128)
			n, _, err := conn.ReadFrom(buf)
			line = string(buf[:n])
			return err
		}
	})
	who, peer, _ = strings.Cut(strings.TrimSpace(line), " ")
	return who, peer, err
}

// reach sends from ns until every pod in want has answered, failing on an
// answer from any other, on a failed exchange, on a source address the rule
// forbids, or when the attempts run out.
func (l *labRun) reach(t *testing.T, ns *netns.NS, src netip.Addr, network, addr string, rule peerRule, want ...string) {
	t.Helper()
	seen := map[string]int{}
	for i := 0; i < labAttempts && len(seen) < len(want); i++ {
		who, peer, err := exchange(ns, network, src, addr)
		if err != nil {
			t.Fatalf("%s %s from %s: %v (answers so far %v)", network, addr, ns.Name, err, seen)
		}
		if !slices.Contains(want, who) {
			t.Fatalf("%s %s answered from %q, want only %v", network, addr, who, want)
		}
		sender := src.String()
		if !src.IsValid() {
			sender = l.ip(labClient)
		}
		switch {
		case rule == clientPeer && peer != sender:
			t.Fatalf("%s %s: the pod saw %s, want the client's %s (not masqueraded)", network, addr, peer, sender)
		case rule == masqueraded && !slices.ContainsFunc(labNodes, func(n netns.LabNodeSpec) bool { return l.ip(n.IP) == peer }):
			t.Fatalf("%s %s: the pod saw %s, want it masqueraded to a node's address", network, addr, peer)
		case rule == fromCluster && !l.podRange().Contains(netip.MustParseAddr(peer)):
			t.Fatalf("%s %s: the pod saw %s, want the sending pod's address", network, addr, peer)
		}
		seen[who]++
	}
	if len(seen) < len(want) {
		t.Fatalf("after %d exchanges with %s %s only %v answered, want all of %v", labAttempts, network, addr, seen, want)
	}
}

// dropped checks that a TCP connection from ns to addr gets no answer at
// all: neither a pod nor a refusal (a reject would make clients fail fast
// where kube-proxy makes them wait, and load balancers mark nodes by it).
func (l *labRun) dropped(t *testing.T, ns *netns.NS, src netip.Addr, addr string) {
	t.Helper()
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: labDropWait}
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		conn, err := d.Dial("tcp", addr)
		if err == nil {
			who, _ := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			return fmt.Errorf("connected, answered by %q", strings.TrimSpace(who))
		}
		return err
	})
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		t.Fatalf("tcp %s from %s: refused, want dropped", addr, ns.Name)
	case errors.As(err, &ne) && ne.Timeout():
	default:
		t.Fatalf("tcp %s from %s: %v, want no answer until the timeout", addr, ns.Name, err)
	}
}

// rejected checks that a TCP connection from ns (from src when valid) to
// addr is refused at once, as kube-proxy rejects traffic to a Service
// without endpoints.
func (l *labRun) rejected(t *testing.T, ns *netns.NS, src netip.Addr, addr string) {
	t.Helper()
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: labDropWait}
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		conn, err := d.Dial("tcp", addr)
		if err == nil {
			conn.Close()
			return errors.New("connected")
		}
		return err
	})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("tcp %s from %s: %v, want refused", addr, ns.Name, err)
	}
}

// get fetches http://addr/path from inside ns.
func labGet(t *testing.T, ns *netns.NS, addr, path string) (int, []byte) {
	t.Helper()
	client := &http.Client{
		Timeout: labExchange * 2,
		Transport: &http.Transport{DialContext: func(_ context.Context, network, address string) (net.Conn, error) {
			return ns.Dial(network, address, labExchange)
		}},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET http://%s%s from %s: %v", addr, path, ns.Name, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, data
}

// health asks node i's health check port from the client.
func (l *labRun) health(t *testing.T, i int, port int32) (int, healthcheck.Body) {
	t.Helper()
	addr := l.at(labNodes[i].IP, int(port))
	code, data := labGet(t, l.lab.Client, addr, "/")
	var b healthcheck.Body
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatalf("health check %s: body %q: %v", addr, data, err)
	}
	return code, b
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, fmt.Sprint(port)) }

var noSrc netip.Addr

// labRow is one check of the lab; each bullet of issue 12 has at least one.
type labRow struct {
	name  string
	check func(t *testing.T, l *labRun)
}

// labRows are the checks in IPv4 and then again in IPv6.
var labRows = dualStackRows(labRows4)

// labRows4 are the checks, written with the lab's IPv4 addresses; each
// reads them through the labRun (l.at, l.ip) so that it runs in IPv6 too.
var labRows4 = []labRow{
	// LoadBalancer: the LB IP reaches the Service from outside (node A
	// forwards to node B's pod), from a pod and from the node.
	{"LoadBalancer: client reaches the LB IP over TCP, masqueraded (eTP Cluster)", func(t *testing.T, l *labRun) {
		l.reach(t, l.lab.Client, noSrc, "tcp", l.at("203.0.113.1", labHTTP), masqueraded, labB0)
	}},
	{"LoadBalancer: client reaches the LB IP over UDP", func(t *testing.T, l *labRun) {
		l.reach(t, l.lab.Client, noSrc, "udp", l.at("203.0.113.1", labDNS), masqueraded, labB0)
	}},
	{"LoadBalancer: a pod reaches the LB IP, masqueraded as external traffic is", func(t *testing.T, l *labRun) {
		// kube-proxy treats a packet to an LB IP as external whoever sends
		// it: with eTP Cluster it is masqueraded, a pod's too.
		l.reach(t, l.pod(labA1), noSrc, "tcp", l.at("203.0.113.1", labHTTP), masqueraded, labB0)
	}},
	{"LoadBalancer: the node reaches the LB IP", func(t *testing.T, l *labRun) {
		l.reach(t, l.node(0).NS, noSrc, "tcp", l.at("203.0.113.1", labHTTP), anyPeer, labB0)
		l.reach(t, l.node(1).NS, noSrc, "udp", l.at("203.0.113.1", labDNS), anyPeer, labB0)
	}},
	// externalIPs.
	{"externalIPs: client reaches every endpoint over TCP and UDP", func(t *testing.T, l *labRun) {
		l.reach(t, l.lab.Client, noSrc, "tcp", l.at("198.51.100.2", labHTTP), anyPeer, labA0, labB0)
		l.reach(t, l.lab.Client, noSrc, "udp", l.at("198.51.100.2", labDNS), anyPeer, labA0, labB0)
	}},
	// externalTrafficPolicy: Local.
	{"eTP Local: the LB IP reaches only the node's endpoints, client address kept", func(t *testing.T, l *labRun) {
		l.reach(t, l.lab.Client, noSrc, "tcp", l.at("203.0.113.3", labHTTP), clientPeer, labB0)
		l.reach(t, l.lab.Client, noSrc, "udp", l.at("203.0.113.3", labDNS), clientPeer, labB0)
	}},
	{"eTP Local: a node port reaches only that node's endpoints, client address kept", func(t *testing.T, l *labRun) {
		l.reach(t, l.lab.Client, noSrc, "tcp", l.at(labNodes[0].IP, 30301), clientPeer, labA0, labA1)
		l.reach(t, l.lab.Client, noSrc, "tcp", l.at(labNodes[1].IP, 30301), clientPeer, labB0)
	}},
	{"eTP Local: pods and the node still reach every endpoint", func(t *testing.T, l *labRun) {
		if l.mode == "ipvs" {
			l.ipvsLocalFromInside(t)
			return
		}
		l.reach(t, l.pod(labB1), noSrc, "tcp", l.at("203.0.113.3", labHTTP), anyPeer, labA0, labA1, labB0)
		l.reach(t, l.node(1).NS, noSrc, "tcp", l.at("203.0.113.4", labHTTP), anyPeer, labA0)
	}},
	{"eTP Local: dropped, not rejected, on a node without local endpoints", func(t *testing.T, l *labRun) {
		l.dropped(t, l.lab.Client, noSrc, l.at("203.0.113.4", labHTTP))
		l.dropped(t, l.lab.Client, noSrc, l.at(labNodes[1].IP, 30401))
	}},
	// healthCheckNodePort.
	{"healthCheckNodePort: 200 with the local endpoint count, 503 without", func(t *testing.T, l *labRun) {
		for _, c := range []struct {
			node  int
			port  int32
			name  string
			code  int
			local int
		}{
			{0, 32004, "local-a", http.StatusOK, 1},
			{1, 32004, "local-a", http.StatusServiceUnavailable, 0},
			{0, 32003, "local", http.StatusOK, 2},
			{1, 32003, "local", http.StatusOK, 1},
		} {
			code, b := l.health(t, c.node, c.port)
			if code != c.code || b.LocalEndpoints != c.local || b.Service.Namespace != labNamespace || b.Service.Name != c.name || !b.ServiceProxyHealthy {
				t.Errorf("%s:%d: %d %+v, want %d with %d local endpoints of %s/%s", l.nodeIP(c.node), c.port, code, b, c.code, c.local, labNamespace, c.name)
			}
		}
	}},
	{"healthz and livez: 200 with lastUpdated on every node", func(t *testing.T, l *labRun) {
		family := "IPv4"
		if l.six {
			family = "IPv6"
		}
		for _, n := range l.lab.Nodes {
			for _, path := range []string{"/healthz", "/livez"} {
				code, data := labGet(t, n.NS, proxyHealthz, path)
				var body struct {
					LastUpdated string `json:"lastUpdated"`
					Status      map[string]struct {
						LastUpdated string `json:"lastUpdated"`
						Healthy     bool   `json:"healthy"`
					} `json:"status"`
				}
				err := json.Unmarshal(data, &body)
				if st := body.Status[family]; err != nil || code != http.StatusOK || body.LastUpdated == "" || st.LastUpdated == "" || !st.Healthy {
					t.Errorf("%s %s: %d %q (%v), want 200 with lastUpdated, and %s healthy and updated", n.Name, path, code, data, err, family)
				}
			}
		}
	}},
	// Terminating endpoints.
	{"terminating: eTP Local falls back to the node's serving-terminating endpoints", func(t *testing.T, l *labRun) {
		l.reach(t, l.lab.Client, noSrc, "tcp", l.at("203.0.113.5", labHTTP), clientPeer, labB0)
		if code, b := l.health(t, 1, 32005); code != http.StatusServiceUnavailable || b.LocalEndpoints != 0 {
			t.Errorf("health check of a node with only terminating endpoints: %d %+v, want 503 with none", code, b)
		}
	}},
	{"terminating: serving-terminating endpoints are used only when none is ready", func(t *testing.T, l *labRun) {
		l.reach(t, l.pod(labB1), noSrc, "tcp", l.at("10.96.10.6", labHTTP), fromCluster, labA1)
		l.reach(t, l.pod(labB1), noSrc, "tcp", l.at("10.96.10.7", labHTTP), fromCluster, labA0)
	}},
	// internalTrafficPolicy: Local.
	{"iTP Local: pods reach only their node's endpoints, dropped without", func(t *testing.T, l *labRun) {
		l.reach(t, l.pod(labA1), noSrc, "tcp", l.at("10.96.10.8", labHTTP), fromCluster, labA0)
		if l.mode == "ipvs" {
			// kube-proxy leaves the virtual server without real servers,
			// and IPVS refuses.
			l.rejected(t, l.pod(labB1), noSrc, l.at("10.96.10.8", labHTTP))
			return
		}
		l.dropped(t, l.pod(labB1), noSrc, l.at("10.96.10.8", labHTTP))
	}},
	// loadBalancerSourceRanges.
	{"source ranges: a listed source reaches the LB IP, another is dropped", func(t *testing.T, l *labRun) {
		l.reach(t, l.lab.Client, l.addr(labClient), "tcp", l.at("203.0.113.9", labHTTP), anyPeer, labA0)
		l.dropped(t, l.lab.Client, l.addr(labStranger), l.at("203.0.113.9", labHTTP))
	}},
	{"source ranges: ranges of one family only leave the other family's LB IP open", func(t *testing.T, l *labRun) {
		// A dual-stack Service whose loadBalancerSourceRanges are all IPv4:
		// kube-proxy filters its IPv4 LB IP and lets every source reach the
		// IPv6 one.
		if l.six {
			l.reach(t, l.lab.Client, l.addr(labStranger), "tcp", l.at("203.0.113.14", labHTTP), anyPeer, labA0)
		} else {
			l.dropped(t, l.lab.Client, l.addr(labStranger), l.at("203.0.113.14", labHTTP))
		}
	}},
	{"LoadBalancer: an LB IP with ipMode Proxy is left to the load balancer", func(t *testing.T, l *labRun) {
		// KEP-1860: traffic from inside the cluster to such an IP goes to
		// the load balancer (the client here) instead of the Service.
		l.reach(t, l.pod(labA1), noSrc, "tcp", l.at(labProxiedLB, labHTTP), anyPeer, labLBAnswer)
		l.reach(t, l.node(1).NS, noSrc, "tcp", l.at(labProxiedLB, labHTTP), anyPeer, labLBAnswer)
	}},
	// Dual stack: each family is routed on its own.
	{"dual stack: a family without endpoints rejects, the other still routes", func(t *testing.T, l *labRun) {
		if l.six {
			l.rejected(t, l.pod(labA1), noSrc, l.at("10.96.10.15", labHTTP))
		} else {
			l.reach(t, l.pod(labA1), noSrc, "tcp", l.at("10.96.10.15", labHTTP), fromCluster, labB0)
		}
	}},
	// Topology.
	{"topology: zone hints keep traffic in the zone", func(t *testing.T, l *labRun) {
		l.reach(t, l.pod(labA1), noSrc, "tcp", l.at("10.96.10.10", labHTTP), fromCluster, labA0)
		l.reach(t, l.pod(labB1), noSrc, "tcp", l.at("10.96.10.10", labHTTP), fromCluster, labB0)
	}},
	{"topology: node hints keep traffic on the node", func(t *testing.T, l *labRun) {
		l.reach(t, l.pod(labA1), noSrc, "tcp", l.at("10.96.10.11", labHTTP), fromCluster, labA0)
		l.reach(t, l.pod(labB1), noSrc, "tcp", l.at("10.96.10.11", labHTTP), fromCluster, labB0)
	}},
	{"topology: an endpoint without hints means every endpoint", func(t *testing.T, l *labRun) {
		l.reach(t, l.pod(labA1), noSrc, "tcp", l.at("10.96.10.12", labHTTP), fromCluster, labA0, labB0)
	}},
}

// dualStackRows returns rows followed by each of them again in IPv6.
func dualStackRows(rows []labRow) []labRow {
	out := slices.Clone(rows)
	for _, r := range rows {
		out = append(out, labRow{"IPv6: " + r.name, func(t *testing.T, l *labRun) { r.check(t, l.inIPv6(t)) }})
	}
	return out
}

// labImpl is an agent to run on every node: kube-proxy or ours, in a mode.
type labImpl struct {
	name, mode string
}

// labEnv is where the lab runs: the binaries it starts and how a node
// namespace reaches the API server (on this machine, or from inside the e2e
// VM through its forward).
type labEnv struct {
	kubeProxy, clusterdns, podServer string
	kubeconfig                       func(t testing.TB, ns *netns.NS, dir string) string
	// patience bounds an agent's first sync; zero means labPatience.
	patience time.Duration
}

// TestProxyLab runs the lab's checks against kube-proxy v1.37.2 (the
// reference) and against `clusterdns proxy`, each in iptables and nftables
// mode, on two nodes fed by one API server, in IPv4 and IPv6.
func TestProxyLab(t *testing.T) {
	netns.Require(t, "iptables-"+proxyIPTablesVariant+"-restore", "ip6tables-"+proxyIPTablesVariant+"-restore", "nft", "etcd")
	kubeProxy, err := kubeapi.Binary("kube-proxy")
	if err != nil {
		t.Fatal(err)
	}
	// The API server's ranges are dual-stack (kubeapi.ServiceClusterIPRange).
	api := kubeapi.Start(t)
	writeLabObjects(t, mustAdmin(t, api))
	env := labEnv{kubeProxy: kubeProxy, clusterdns: clusterdnsBinary(t), podServer: podServerBinary(t), kubeconfig: api.RelayKubeconfig}
	for _, impl := range []labImpl{
		{name: "kube-proxy", mode: "iptables"},
		{name: "kube-proxy", mode: "nftables"},
		{name: "clusterdns", mode: "iptables"},
		{name: "clusterdns", mode: "nftables"},
	} {
		t.Run(impl.name+"/"+impl.mode, func(t *testing.T) {
			l := startLab(t, env, impl)
			for _, row := range labRows {
				t.Run(row.name, func(t *testing.T) { row.check(t, l) })
			}
		})
	}
}

// startLab builds the lab and starts impl's agent on every node, and waits
// until each has programmed the cluster.
func startLab(t *testing.T, env labEnv, impl labImpl) *labRun {
	t.Helper()
	spec := netns.LabSpec{LAN: netip.MustParsePrefix(labLAN), ClientIPs: []string{labClient, labStranger}, Nodes: labNodes,
		LAN6: netip.MustParsePrefix(labLAN6), ClientIPs6: sixes([]string{labClient, labStranger})}
	l := &labRun{lab: netns.NewLab(t, spec), mode: impl.mode}
	podServer := env.podServer
	cidrs, nodePortAddrs := labCIDR+","+labCIDR6, labLAN+","+labLAN6
	for _, n := range l.lab.Nodes {
		for i, pod := range n.Pods {
			ip := n.PodIPs[i].String()
			pod.Start(podServer, "-name", ip, "-peer", "-tcp", fmt.Sprintf(":%d", labHTTP), "-udp", fmt.Sprintf(":%d", labPodUDP), "-lifetime", "10m")
		}
	}
	// The client is the proxying load balancer of labProxiedLB: it holds
	// the address and its twin and answers on them itself.
	twins := func(ip string) []string { return []string{ip, six(ip)} }
	for _, ip := range twins(labProxiedLB) {
		l.lab.Client.MustRun("ip", "addr", "add", ip, "dev", "lo")
		l.lab.Client.Start(podServer, "-name", labLBAnswer, "-peer", "-tcp", hostPort(ip, labHTTP), "-udp", "", "-lifetime", "10m")
	}
	for _, s := range labServices {
		for _, ip := range []string{s.lb, s.external} {
			if ip != "" && !s.lbProxy {
				for _, twin := range twins(ip) {
					l.lab.Route(netip.MustParseAddr(twin), l.lab.Nodes[s.lbNode])
				}
			}
		}
	}
	dir := t.TempDir()
	for _, n := range l.lab.Nodes {
		kubeconfig := env.kubeconfig(t, n.NS, dir)
		var args []string
		switch impl.name {
		case "kube-proxy":
			args = []string{env.kubeProxy, "--kubeconfig", kubeconfig, "--hostname-override", n.Name, "--proxy-mode", impl.mode,
				"--cluster-cidr", cidrs, "--nodeport-addresses", nodePortAddrs,
				"--healthz-bind-address", proxyHealthz, "--metrics-bind-address", proxyMetrics,
				// Leave the conntrack table's size and timeouts alone: some
				// are not per namespace.
				"--conntrack-max-per-core", "0", "--conntrack-tcp-timeout-established", "0", "--conntrack-tcp-timeout-close-wait", "0",
				"--v", "2"}
		default:
			args = []string{env.clusterdns, "proxy", "--kubeconfig", kubeconfig, "--hostname-override", n.Name, "--proxy-mode", impl.mode,
				"--cluster-cidr", cidrs, "--nodeport-addresses", nodePortAddrs,
				"--healthz-bind-address", proxyHealthz, "--metrics-bind-address", proxyMetrics,
				"--iptables-variant", proxyIPTablesVariant, "-v", "4"}
		}
		agent := n.NS.Start(args...)
		l.agents = append(l.agents, agent)
		t.Cleanup(func() {
			if t.Failed() {
				out := agent.Output()
				if len(out) > 6000 {
					out = "…" + out[len(out)-6000:]
				}
				t.Logf("%s on %s:\n%s", impl.name, n.Name, out)
			}
		})
	}
	// Each node has synced once the cluster IP of the last Service answers
	// from it in each family: the agents read every object before their
	// first sync, and kube-proxy syncs each family on its own.
	patience := env.patience
	if patience == 0 {
		patience = labPatience
	}
	families := []string{"10.96.10.12", six("10.96.10.12")}
	started := time.Now()
	for i, n := range l.lab.Nodes {
		deadline := time.Now().Add(patience)
		for _, ip := range families {
			for {
				if _, _, err := exchange(n.NS, "tcp", noSrc, hostPort(ip, labHTTP)); err == nil {
					break
				}
				if exited, err := l.agents[i].Exited(); exited {
					t.Fatalf("%s on %s exited: %v\n%s", impl.name, n.Name, err, l.agents[i].Output())
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s on %s: %s not programmed after %s\n%s", impl.name, n.Name, ip, patience, l.agents[i].Output())
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	t.Logf("%s programmed both nodes within %s", impl.name, time.Since(started).Round(time.Millisecond))
	l.settleZones(t)
	return l
}

// settleZones waits, at most labPatience, until a pod on each node reaches
// the zone-hinted Service only in its own zone. An agent may sync before it
// has read its Node's zone label, and then routes to every endpoint until a
// later sync: kube-proxy did so once in CI, its first sync 1.2 s after start
// and the topology row run at once. Waiting here does not weaken that row:
// an agent that never applies hints still fails it after the wait.
func (l *labRun) settleZones(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(labPatience)
	for _, c := range []struct{ pod, want, ip string }{
		{labA1, labA0, "10.96.10.10"}, {labB1, labB0, "10.96.10.10"}, {labA1, labA0, six("10.96.10.10")}, {labB1, labB0, six("10.96.10.10")},
	} {
		for inZone := 0; inZone < labAttempts && time.Now().Before(deadline); {
			who, _, err := exchange(l.pod(c.pod), "tcp", noSrc, hostPort(c.ip, labHTTP))
			if err == nil && who == c.want {
				inZone++
				continue
			}
			inZone = 0
			time.Sleep(200 * time.Millisecond)
		}
	}
}
