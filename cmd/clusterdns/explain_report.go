package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/inspect"
	"github.com/clusterdns/clusterdns/resolver"
	"github.com/clusterdns/clusterdns/zone"
	"github.com/clusterdns/clusterdns/zone/dnsindex"
)

// explainReport is the output of `clusterdns explain`, in the JSON layout
// the README documents: a field is only ever added, never renamed.
type explainReport struct {
	// Query is the argument as given; Name the DNS name it stands for.
	Query string `json:"query"`
	Name  string `json:"name,omitempty"`
	// DNS lists the records the server would answer with, as dig prints
	// them; Rcode is the answer's status for the name (NOERROR, NXDOMAIN).
	DNS       []string       `json:"dns"`
	Rcode     string         `json:"rcode"`
	Service   *serviceView   `json:"service"`
	Endpoints []endpointView `json:"endpoints"`
	Node      *nodeView      `json:"node"`
	// Problems says, one sentence each, what stands between a client and
	// the Service; empty when nothing does.
	Problems []string `json:"problems"`
	// Nearest are Services (namespace/name) whose names are close to an
	// unknown one.
	Nearest []string `json:"nearest,omitempty"`
}

type serviceView struct {
	Namespace             string            `json:"namespace"`
	Name                  string            `json:"name"`
	Type                  string            `json:"type"`
	ClusterIPs            []string          `json:"clusterIPs"`
	Ports                 []servicePortView `json:"ports"`
	SessionAffinity       string            `json:"sessionAffinity"`
	AffinitySeconds       int32             `json:"affinitySeconds,omitempty"`
	ExternalTrafficPolicy string            `json:"externalTrafficPolicy"`
	ExternalIPs           []string          `json:"externalIPs"`
	// LoadBalancerIPs are the load balancer ingress IPs; ProxyLoadBalancerIPs
	// (ipMode Proxy) are among them, and the node does not take their traffic.
	LoadBalancerIPs       []string `json:"loadBalancerIPs"`
	ProxyLoadBalancerIPs  []string `json:"proxyLoadBalancerIPs,omitempty"`
	InternalTrafficPolicy string   `json:"internalTrafficPolicy"`
	ExternalName          string   `json:"externalName,omitempty"`
}

type servicePortView struct {
	Name string `json:"name,omitempty"`
	// Port is "80/TCP".
	Port       string `json:"port"`
	TargetPort string `json:"targetPort,omitempty"`
	NodePort   int32  `json:"nodePort,omitempty"`
}

type endpointView struct {
	Address     string   `json:"address"`
	Node        string   `json:"node"`
	Zone        string   `json:"zone"`
	Ready       bool     `json:"ready"`
	Serving     bool     `json:"serving"`
	Terminating bool     `json:"terminating"`
	Hints       []string `json:"hints,omitempty"`
	Hostname    string   `json:"hostname,omitempty"`
	Pod         string   `json:"pod,omitempty"`
}

type nodeView struct {
	Name string `json:"name"`
	// Mode is the proxy mode whose rules were found; empty when none were.
	Mode  string         `json:"mode"`
	Ports []nodePortView `json:"ports"`
}

type nodePortView struct {
	// Port is the Service port, "80/TCP"; Address the cluster IP, external
	// IP or load balancer IP it is on, as Kind says, or for a node port
	// (Kind nodePort, NodePort set) 0.0.0.0 or "::": any local address.
	Port     string `json:"port"`
	Name     string `json:"name,omitempty"`
	Address  string `json:"address"`
	Kind     string `json:"kind,omitempty"`
	NodePort uint16 `json:"nodePort,omitempty"`
	// Want is what the model says this node should send to; Kernel what the
	// kernel sends new connections to; both as IP:PORT.
	Want    []string `json:"want"`
	Kernel  []string `json:"kernel"`
	InSync  bool     `json:"inSync"`
	Missing []string `json:"missing,omitempty"`
	Extra   []string `json:"extra,omitempty"`
	// Programmed is whether the kernel has rules for the port at all;
	// Stale marks rules for a port the Service does not have.
	Programmed bool `json:"programmed"`
	Stale      bool `json:"stale,omitempty"`
}

// explainInput is what explain needs besides the cluster.
type explainInput struct {
	query, zone, node string
	// readKernel reads this node's rules back; nil skips the node part.
	readKernel func() (*inspect.Kernel, error)
}

// explain builds the report for one query from a snapshot. It changes
// nothing; the only side effect is readKernel's read.
func explain(c *zone.Cluster, in explainInput) *explainReport {
	r := &explainReport{Query: in.query, DNS: []string{}, Endpoints: []endpointView{}, Problems: []string{}}
	zoneName := dns.Fqdn(strings.ToLower(strings.Trim(in.zone, ".")))
	host, port, hasPort := splitQueryPort(in.query)
	addr, isAddr := parseQueryAddr(host)

	var svc *zone.Service
	var askedName string // the Service name that was not found, for nearest names
	if isAddr {
		svc = serviceByAddr(c, addr)
		if svc == nil {
			msg := fmt.Sprintf("no Service has %s as a cluster IP, external IP or load balancer IP", addr)
			if owners := endpointOf(c, addr); len(owners) > 0 {
				msg += "; it is an endpoint of " + joinComma(owners)
			}
			r.Problems = append(r.Problems, msg)
		}
	} else {
		key, ok := serviceKeyOf(host, zoneName)
		if !ok {
			r.Problems = append(r.Problems, fmt.Sprintf("%q is not a Service name (NAME.NAMESPACE, or NAME.NAMESPACE.svc.%s)", host, strings.TrimSuffix(zoneName, ".")))
		} else if svc = c.Services[key]; svc == nil {
			askedName = key.Name + "." + key.Namespace
			r.Problems = append(r.Problems, fmt.Sprintf("no Service %s in namespace %s", key.Name, key.Namespace))
		}
		if ok {
			r.Name = key.Name + "." + key.Namespace + ".svc." + zoneName
		}
	}

	if svc != nil {
		r.Name = svc.Name + "." + svc.Namespace + ".svc." + zoneName
	}
	r.DNS, r.Rcode = dnsAnswers(c, zoneName, r.Name, addr, isAddr, svc)
	if svc != nil {
		r.Service = viewService(svc)
		r.Endpoints = viewEndpoints(c.SlicesFor(svc.Key))
		r.Problems = append(r.Problems, serviceProblems(svc, c.SlicesFor(svc.Key), r.Endpoints)...)
		if isAddr && slices.ContainsFunc(svc.LoadBalancerIngress, func(ing zone.LoadBalancerIngress) bool { return ing.Proxy && ing.IP.Unmap() == addr }) {
			r.Problems = append(r.Problems, fmt.Sprintf("%s is a load balancer IP of ipMode Proxy: nodes do not take its traffic, which goes to the load balancer", addr))
		}
		if hasPort && !hasServicePort(svc, port) {
			r.Problems = append(r.Problems, fmt.Sprintf("%s has no port %d; its ports: %s", svc.Key, port, portList(svc)))
		}
	} else if askedName != "" {
		r.Nearest = nearestServices(c, askedName)
	}

	if in.readKernel != nil {
		r.Node = &nodeView{Name: in.node, Ports: []nodePortView{}}
		k, err := in.readKernel()
		switch {
		case err != nil && k == nil:
			r.Problems = append(r.Problems, fmt.Sprintf("could not read this node's rules: %v", err))
		case k == nil:
			if svc == nil || routableService(svc) {
				r.Problems = append(r.Problems, "no clusterdns rules on this node: the agent has not programmed it (or runs in another network namespace)")
			}
		default:
			r.Node.Mode = k.Mode
			r.Node.Ports, r.Problems = nodePorts(c, in.node, svc, addr, isAddr, port, hasPort, k, r.Problems)
		}
	}
	return r
}

// wantedModel is the routing the model gives node, built as the agent on
// that node builds it: its Local traffic policies pick its own endpoints and
// its zone selects topology hints. An empty node is no node in particular.
func wantedModel(c *zone.Cluster, node string) *proxy.Model {
	return proxy.BuildNodeModel(nil, c, node)
}

// nodePorts compares the kernel with what the model wants for the Service
// (or, with no Service, for the address asked about: rules left behind).
func nodePorts(c *zone.Cluster, node string, svc *zone.Service, addr netip.Addr, isAddr bool, port uint16, hasPort bool, k *inspect.Kernel, problems []string) ([]nodePortView, []string) {
	var want []*proxy.ServicePort
	var addrs []netip.Addr
	if svc != nil {
		want = inspect.ForService(wantedModel(c, node), svc.Key)
		addrs = append(addrs, svc.ClusterIPs...)
		addrs = append(addrs, svc.ExternalIPs...)
		for _, ing := range svc.LoadBalancerIngress {
			addrs = append(addrs, ing.IP)
		}
	}
	if isAddr {
		addrs = append(addrs, addr)
	}
	out := []nodePortView{}
	for _, p := range inspect.Compare(want, addrs, k) {
		servicePort := p.ServicePort
		if p.Stale {
			servicePort = p.Frontend.Port
		}
		if hasPort && servicePort != port {
			continue
		}
		v := nodePortView{Port: strconv.Itoa(int(servicePort)) + "/" + string(p.Frontend.Protocol), Name: p.Name, Address: p.Frontend.Addr.String(), Kind: p.Kind, Want: addrPorts(p.Want),
			Kernel: addrPorts(p.Kernel), InSync: p.InSync(), Missing: addrPorts(p.Missing), Extra: addrPorts(p.Extra), Programmed: p.Programmed, Stale: p.Stale}
		if p.Kind == inspect.KindNodePort {
			v.NodePort = p.Frontend.Port
		}
		if p.Stale {
			v.Want = []string{}
		}
		if len(v.Missing) == 0 {
			v.Missing = nil
		}
		if len(v.Extra) == 0 {
			v.Extra = nil
		}
		out = append(out, v)
		problems = append(problems, p.Differences()...)
	}
	return out, problems
}

func addrPorts(eps []netip.AddrPort) []string {
	out := make([]string, len(eps))
	for i, ep := range eps {
		out[i] = ep.String()
	}
	return out
}

// splitQueryPort splits "NAME:80", "10.0.0.1:80" and "[fd00::1]:80"; a bare
// IPv6 address has no port.
func splitQueryPort(q string) (host string, port uint16, ok bool) {
	if ap, err := netip.ParseAddrPort(q); err == nil {
		return ap.Addr().String(), ap.Port(), true
	}
	if _, err := netip.ParseAddr(q); err == nil {
		return q, 0, false
	}
	i := strings.LastIndexByte(q, ':')
	if i < 0 {
		return q, 0, false
	}
	n, err := strconv.ParseUint(q[i+1:], 10, 16)
	if err != nil {
		return q, 0, false
	}
	return q[:i], uint16(n), true
}

func parseQueryAddr(host string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// serviceKeyOf reads NAME.NAMESPACE, NAME.NAMESPACE.svc and the full name in
// the zone, with or without the final dot.
func serviceKeyOf(name, zoneName string) (zone.Key, bool) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	name = strings.TrimSuffix(name, "."+strings.TrimSuffix(zoneName, "."))
	name = strings.TrimSuffix(name, ".svc")
	labels := strings.Split(name, ".")
	if len(labels) != 2 || labels[0] == "" || labels[1] == "" {
		return zone.Key{}, false
	}
	return zone.Key{Namespace: labels[1], Name: labels[0]}, true
}

// serviceByAddr finds the Service with the address as a cluster IP, an
// external IP or a load balancer IP; cluster IPs win.
func serviceByAddr(c *zone.Cluster, a netip.Addr) *zone.Service {
	var external *zone.Service
	keys := make([]zone.Key, 0, len(c.Services))
	for k := range c.Services {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, zone.CompareKeys)
	for _, k := range keys {
		svc := c.Services[k]
		for _, ip := range svc.ClusterIPs {
			if ip.Unmap() == a {
				return svc
			}
		}
		if external == nil && (slices.ContainsFunc(svc.ExternalIPs, func(ip netip.Addr) bool { return ip.Unmap() == a }) ||
			slices.ContainsFunc(svc.LoadBalancerIngress, func(ing zone.LoadBalancerIngress) bool { return ing.IP.Unmap() == a })) {
			external = svc
		}
	}
	return external
}

// endpointOf lists the Services (namespace/name) with an endpoint at a.
func endpointOf(c *zone.Cluster, a netip.Addr) []string {
	var out []string
	for _, s := range c.Slices {
		for _, e := range s.Endpoints {
			name := s.Namespace + "/" + s.Service
			if slices.Contains(e.Addresses, a) && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// dnsAnswers asks the cluster zone, in process and as `serve` would answer,
// for the Service's addresses and named ports, or for the PTR of an address.
func dnsAnswers(c *zone.Cluster, zoneName, name string, addr netip.Addr, isAddr bool, svc *zone.Service) ([]string, string) {
	opts := dnsindex.Options{Zones: []string{zoneName, "in-addr.arpa.", "ip6.arpa."}, TTL: 5, Pods: dnsindex.PodsDisabled}
	k := resolver.NewKubernetes(opts, nil, false, resolver.Refused)
	k.Update(c)
	ask := func(qname string, qtype uint16) *dns.Msg {
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(qname), qtype)
		m, err := k.Resolve(context.Background(), resolver.NewRequest(q, netip.AddrPort{}, false))
		if err != nil || m == nil {
			return nil
		}
		return m
	}
	var out []string
	// add appends a reply's answers and returns its rcode.
	add := func(m *dns.Msg) string {
		if m == nil {
			return ""
		}
		for _, rr := range m.Answer {
			if s := rr.String(); !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
		return dns.RcodeToString[m.Rcode]
	}
	rcode := ""
	if isAddr {
		if rev, err := dns.ReverseAddr(addr.String()); err == nil {
			rcode = add(ask(rev, dns.TypePTR))
		}
	}
	if name == "" {
		return nonNilStrings(out), rcode
	}
	// The status shown is the name's, not the reverse name's.
	rcode = add(ask(name, dns.TypeA))
	add(ask(name, dns.TypeAAAA))
	if svc != nil {
		for _, p := range svc.Ports {
			if p.Name != "" {
				add(ask("_"+p.Name+"._"+strings.ToLower(string(p.Protocol))+"."+name, dns.TypeSRV))
			}
		}
	}
	return nonNilStrings(out), rcode
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func viewService(svc *zone.Service) *serviceView {
	v := &serviceView{Namespace: svc.Namespace, Name: svc.Name, Type: string(svc.Type), ClusterIPs: []string{}, ExternalIPs: []string{},
		LoadBalancerIPs: []string{}, SessionAffinity: "None", ExternalTrafficPolicy: "Cluster", InternalTrafficPolicy: "Cluster",
		ExternalName: svc.ExternalName, Ports: []servicePortView{}}
	if svc.Headless {
		v.ClusterIPs = append(v.ClusterIPs, "None")
	}
	for _, ip := range svc.ClusterIPs {
		v.ClusterIPs = append(v.ClusterIPs, ip.String())
	}
	for _, ip := range svc.ExternalIPs {
		v.ExternalIPs = append(v.ExternalIPs, ip.String())
	}
	if svc.AffinityTimeout > 0 {
		v.SessionAffinity, v.AffinitySeconds = "ClientIP", svc.AffinityTimeout
	}
	for _, ing := range svc.LoadBalancerIngress {
		v.LoadBalancerIPs = append(v.LoadBalancerIPs, ing.IP.String())
		if ing.Proxy {
			v.ProxyLoadBalancerIPs = append(v.ProxyLoadBalancerIPs, ing.IP.String())
		}
	}
	if svc.ExternalTrafficLocal {
		v.ExternalTrafficPolicy = "Local"
	}
	if svc.InternalTrafficLocal {
		v.InternalTrafficPolicy = "Local"
	}
	for _, p := range svc.Ports {
		pv := servicePortView{Name: p.Name, Port: strconv.Itoa(int(p.Port)) + "/" + string(p.Protocol), NodePort: p.NodePort, TargetPort: p.TargetPortName}
		if p.TargetPort != 0 {
			pv.TargetPort = strconv.Itoa(int(p.TargetPort))
		}
		v.Ports = append(v.Ports, pv)
	}
	return v
}

// viewEndpoints lists a Service's endpoints once each, by address.
func viewEndpoints(svcSlices []*zone.EndpointSlice) []endpointView {
	out := []endpointView{}
	seen := map[netip.Addr]bool{}
	for _, s := range svcSlices {
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 || seen[e.Addresses[0]] {
				continue
			}
			seen[e.Addresses[0]] = true
			out = append(out, endpointView{Address: e.Addresses[0].String(), Node: e.NodeName, Zone: endpointZone(e), Ready: e.Ready,
				Serving: e.Serving, Terminating: e.Terminating, Hints: endpointHints(e), Hostname: e.Hostname, Pod: e.PodName})
		}
	}
	slices.SortFunc(out, func(a, b endpointView) int {
		return netip.MustParseAddr(a.Address).Compare(netip.MustParseAddr(b.Address))
	})
	return out
}

// endpointZone is the endpoint's topology zone, empty when unknown.
func endpointZone(e zone.Endpoint) string { return e.Zone }

// endpointHints lists the endpoint's topology hints as "zone:NAME" and
// "node:NAME", zones first; nil when it has none.
func endpointHints(e zone.Endpoint) []string {
	if e.Hints == nil {
		return nil
	}
	var out []string
	for _, z := range e.Hints.ForZones {
		out = append(out, "zone:"+z)
	}
	for _, n := range e.Hints.ForNodes {
		out = append(out, "node:"+n)
	}
	return out
}

// routableService reports whether the agent programs rules for svc.
func routableService(svc *zone.Service) bool {
	return svc.Type != zone.TypeExternalName && !svc.Headless && len(svc.ClusterIPs) > 0
}

// serviceProblems says what in the Service itself keeps traffic from
// arriving.
func serviceProblems(svc *zone.Service, svcSlices []*zone.EndpointSlice, eps []endpointView) []string {
	var out []string
	switch {
	case svc.Type == zone.TypeExternalName:
		return []string{fmt.Sprintf("ExternalName Service: DNS answers with a CNAME to %s; there are no endpoints and no node rules", svc.ExternalName)}
	case svc.Headless:
		out = append(out, "headless Service: DNS answers with the ready endpoints' addresses; no node rules")
	}
	ready, serving := 0, 0
	for _, e := range eps {
		if e.Ready {
			ready++
		} else if e.Serving && e.Terminating {
			serving++
		}
	}
	switch {
	case len(eps) == 0 && len(svcSlices) == 0 && svc.Selector == nil:
		out = append(out, "no endpoints: the Service has no EndpointSlices (and no selector to make them)")
	case len(eps) == 0:
		out = append(out, "no endpoints: no Pod matches the Service's selector; connections to it are refused")
	case ready == 0 && serving > 0:
		out = append(out, fmt.Sprintf("no ready endpoints: traffic goes to the %d terminating endpoint(s) still serving", serving))
	case ready == 0:
		out = append(out, fmt.Sprintf("no ready endpoints (%d not ready): connections to it are refused", len(eps)))
	}
	return out
}

func hasServicePort(svc *zone.Service, port uint16) bool {
	for _, p := range svc.Ports {
		if uint16(p.Port) == port {
			return true
		}
	}
	return false
}

func portList(svc *zone.Service) string {
	var ps []string
	for _, p := range svc.Ports {
		ps = append(ps, strconv.Itoa(int(p.Port))+"/"+string(p.Protocol))
	}
	return joinComma(ps)
}

// nearestServices returns up to three Services whose NAME.NAMESPACE is
// within a few edits of the name asked for, nearest first.
func nearestServices(c *zone.Cluster, asked string) []string {
	type cand struct {
		name string
		d    int
	}
	limit := max(2, len(asked)/3)
	var cands []cand
	for k := range c.Services {
		if d := editDistance(asked, k.Name+"."+k.Namespace); d <= limit {
			cands = append(cands, cand{k.Namespace + "/" + k.Name, d})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if a.d != b.d {
			return a.d - b.d
		}
		return strings.Compare(a.name, b.name)
	})
	var out []string
	for i := 0; i < len(cands) && i < 3; i++ {
		out = append(out, cands[i].name)
	}
	return out
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// writeText prints the report for a person: each part under a heading,
// records as dig prints them.
func (r *explainReport) writeText(w io.Writer) error {
	bw := bufio.NewWriter(w)
	p := func(format string, args ...any) { fmt.Fprintf(bw, format, args...) }
	if r.Name != "" {
		p("Name:      %s\n", r.Name)
	}
	p("DNS:       %s\n", orDash(r.Rcode))
	for _, rr := range r.DNS {
		p("  %s\n", rr)
	}
	if s := r.Service; s != nil {
		p("Service:   %s/%s, %s, cluster IP %s\n", s.Namespace, s.Name, s.Type, orDash(joinComma(s.ClusterIPs)))
		for _, sp := range s.Ports {
			line := "  port " + sp.Port
			if sp.Name != "" {
				line += " (" + sp.Name + ")"
			}
			if sp.TargetPort != "" {
				line += " -> " + sp.TargetPort
			}
			if sp.NodePort != 0 {
				line += ", node port " + strconv.Itoa(int(sp.NodePort))
			}
			p("%s\n", line)
		}
		affinity := s.SessionAffinity
		if s.AffinitySeconds > 0 {
			affinity += " " + strconv.Itoa(int(s.AffinitySeconds)) + "s"
		}
		p("  affinity %s, traffic policy internal %s, external %s", affinity, s.InternalTrafficPolicy, s.ExternalTrafficPolicy)
		if len(s.ExternalIPs) > 0 {
			p(", external IPs %s", joinComma(s.ExternalIPs))
		}
		if len(s.LoadBalancerIPs) > 0 {
			p(", load balancer IPs %s", joinComma(s.LoadBalancerIPs))
			if len(s.ProxyLoadBalancerIPs) > 0 {
				p(" (ipMode Proxy: %s)", joinComma(s.ProxyLoadBalancerIPs))
			}
		}
		if s.ExternalName != "" {
			p(", external name %s", s.ExternalName)
		}
		p("\n")
		p("Endpoints: %d\n", len(r.Endpoints))
		for _, e := range r.Endpoints {
			var state []string
			for _, f := range []struct {
				on   bool
				name string
			}{{e.Ready, "ready"}, {!e.Ready, "not ready"}, {e.Serving, "serving"}, {e.Terminating, "terminating"}} {
				if f.on {
					state = append(state, f.name)
				}
			}
			hints := ""
			if len(e.Hints) > 0 {
				hints = ", hints " + joinComma(e.Hints)
			}
			p("  %-16s node %s, zone %s: %s%s\n", e.Address, orDash(e.Node), orDash(e.Zone), joinComma(state), hints)
		}
	}
	if n := r.Node; n != nil {
		p("Node:      %s, %s\n", orDash(n.Name), orDash(n.Mode))
		for _, np := range n.Ports {
			status := "in sync"
			switch {
			case np.Stale:
				status = "stale: not in the model"
			case !np.InSync:
				status = "DIFFERS from the model, which wants " + orDash(joinComma(np.Want))
			}
			kernel := joinComma(np.Kernel)
			switch {
			case !np.Programmed:
				kernel = "no rules"
			case kernel == "":
				kernel = "nothing (rejected)"
			}
			front := np.Address + " " + np.Port
			if np.Kind == inspect.KindNodePort {
				front = "node port " + strconv.Itoa(int(np.NodePort)) + " (" + np.Port + ")"
			}
			p("  %s -> %s: %s\n", front, kernel, status)
		}
	}
	if len(r.Problems) == 0 {
		p("Problems:  none\n")
	} else {
		p("Problems:\n")
		for _, pr := range r.Problems {
			p("  %s\n", pr)
		}
	}
	if len(r.Nearest) > 0 {
		p("Did you mean: %s\n", joinComma(r.Nearest))
	}
	return bw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
