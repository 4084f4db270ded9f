package proxytest

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/zone"
)

// The contract every rule backend keeps: the Scenarios below, each a
// sequence of cluster states with, per state, questions about where a
// packet goes. A backend's test runs them all through a Target, a small
// adapter that syncs the backend against its fake and answers the
// questions from the fake's state; the scenarios know nothing of iptables,
// nftables or IPVS.

// The node the scenarios run on: its addresses, and the addresses around it.
const (
	NodeIP   = "192.168.77.1" // the node's address, in NodePortAddressRange
	NodeIPv6 = "fd00:77::1"
	// OtherLocalIP is a second address of the node, outside
	// NodePortAddressRange.
	OtherLocalIP = "10.99.0.1"
	// PodIP is a pod (in PodCIDR) that is no endpoint; OutsideIP is a host
	// beside the node, outside the pod range.
	PodIP     = "172.16.1.1"
	OutsideIP = "192.168.77.2"
	PodCIDR   = "172.16.0.0/16"
	PodCIDRv6 = "fd00:172::/64"
	// NodePortAddressRange holds NodeIP but not OtherLocalIP.
	NodePortAddressRange = "192.168.77.0/24"
)

// LocalAddrs are every address of the node, loopback included.
func LocalAddrs() []string {
	return []string{NodeIP, OtherLocalIP, "127.0.0.1", NodeIPv6, "::1"}
}

// Packet is the first packet of a connection to a service address.
type Packet struct {
	Src, Dst netip.Addr
	Protocol zone.Protocol
	Port     uint16
	// FromNode is set for a packet a process of the node sends; otherwise
	// the packet arrives from outside the node (from a pod or a host).
	FromNode bool
}

// TCP is a packet from a pod or host (not the node itself).
func TCP(src, dst string, port uint16) Packet {
	return Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Protocol: zone.ProtocolTCP, Port: port}
}

// UDP is TCP's twin.
func UDP(src, dst string, port uint16) Packet {
	p := TCP(src, dst, port)
	p.Protocol = zone.ProtocolUDP
	return p
}

// FromNode is p sent by a process of the node.
func FromNode(p Packet) Packet {
	p.FromNode = true
	return p
}

// Family is the packet's address family.
func (p Packet) Family() proxy.Family { return proxy.FamilyOf(p.Dst) }

// Outcomes of a packet, beside "address:port" (delivered to that endpoint,
// its source unchanged) and "address:port masq" (delivered, its source
// rewritten to the node's).
const (
	// Rejected: the node refuses the packet (no endpoints).
	Rejected = "REJECT"
	// Dropped: the node drops the packet silently (endpoints exist, but
	// none this traffic may reach from this node; a source not allowed).
	Dropped = "DROP"
	// Untranslated: no service rule touches the packet.
	Untranslated = "untranslated"
)

// Route is a backend's answer about a packet.
type Route struct {
	// Outcomes are every way the packet can end, sorted and distinct.
	Outcomes []string
	// Affinity is the ClientIP affinity timeout, in seconds, the packet's
	// service port applies; zero for none.
	Affinity int
}

// Want is what a question expects.
type Want struct {
	// Outcomes, as Route has them.
	Outcomes []string
	// NotServed accepts either Rejected or Untranslated: the address and
	// port is no service's, and whether the node refuses the packet or
	// leaves it to routing is the mode's choice (IPVS mode owns the address
	// and refuses; iptables mode lets it pass untouched).
	NotServed bool
	Affinity  int
}

// Reach wants the packet delivered to the endpoints (addresses) on port,
// masqueraded or not.
func Reach(port uint16, masq bool, addrs ...string) Want {
	return Want{Outcomes: endpoints(port, masq, addrs)}
}

// Sticky is w with ClientIP affinity of that many seconds.
func (w Want) Sticky(seconds int) Want {
	w.Affinity = seconds
	return w
}

// Rejects wants the packet refused.
func Rejects() Want { return Want{Outcomes: []string{Rejected}} }

// Drops wants the packet dropped.
func Drops() Want { return Want{Outcomes: []string{Dropped}} }

// NotServed wants the packet not delivered to any endpoint.
func NotServed() Want { return Want{NotServed: true} }

// Hairpin wants a packet from an endpoint to its own service: delivered to
// any endpoint, and masqueraded when it goes back to itself (else the reply
// would not pass the node).
func Hairpin(port uint16, self string, addrs ...string) Want {
	var out []string
	for _, a := range addrs {
		out = append(out, endpoints(port, a == self, []string{a})...)
	}
	sort.Strings(out)
	return Want{Outcomes: out}
}

func endpoints(port uint16, masq bool, addrs []string) []string {
	var out []string
	for _, a := range addrs {
		s := netip.AddrPortFrom(netip.MustParseAddr(a), port).String()
		if masq {
			s += " masq"
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func (w Want) matches(r Route) bool {
	if w.Affinity != r.Affinity {
		return false
	}
	if w.NotServed {
		return slices.Equal(r.Outcomes, []string{Rejected}) || slices.Equal(r.Outcomes, []string{Untranslated})
	}
	return slices.Equal(w.Outcomes, r.Outcomes)
}

func (w Want) String() string {
	s := "not served (" + Rejected + " or " + Untranslated + ")"
	if !w.NotServed {
		s = strings.Join(w.Outcomes, ", ")
	}
	if w.Affinity > 0 {
		s += " with affinity " + strconv.Itoa(w.Affinity) + "s"
	}
	return s
}

// Question asks where a packet goes.
type Question struct {
	Name   string
	Packet Packet
	Want   Want
}

// Step is one state of the cluster and the questions asked once the
// backend synced it.
type Step struct {
	Services  []Service
	Questions []Question
}

// Scenario is a sequence of cluster states on a node configured by
// Routing. The first step is synced in full, the others partially, each
// model built from the previous as the agent builds it.
type Scenario struct {
	Name string
	// Feature names what the scenario tests, for a backend that lacks it.
	Feature string
	Routing proxy.Routing
	Steps   []Step
}

// Models builds the scenario's models, each from the previous.
func (s Scenario) Models() []*proxy.Model {
	var out []*proxy.Model
	var prev *proxy.Model
	for _, st := range s.Steps {
		prev = Model(prev, st.Services...)
		out = append(out, prev)
	}
	return out
}

// Features the scenarios test, for Gaps.
const (
	FeatureClusterIP      = "cluster IPs"
	FeatureNodePort       = "node ports"
	FeatureAffinity       = "ClientIP affinity"
	FeatureNoEndpoints    = "rejecting without endpoints"
	FeatureTerminating    = "terminating endpoints as a fallback"
	FeatureDualStack      = "dual stack"
	FeatureMasqueradeAll  = "masquerade all"
	FeatureExternalIPs    = "external IPs"
	FeaturePartialSync    = "partial syncs"
	FeatureNodePortRanges = "node port addresses"
	FeatureLoadBalancer   = "load balancer IPs"
	FeatureExternalLocal  = "externalTrafficPolicy Local"
	FeatureShortCircuit   = "pods and the node reaching every endpoint of an externalTrafficPolicy Local Service"
	FeatureInternalLocal  = "internalTrafficPolicy Local"
	FeatureSourceRanges   = "loadBalancerSourceRanges"
	FeatureTopology       = "topology hints"
)

// Target is one backend under the contract: a fresh backend over a fresh
// fake node with LocalAddrs, configured by the scenario's Routing, serving
// both address families.
type Target interface {
	// Sync programs m into the fake, failing the test on error (and on
	// anything the backend's own invariants forbid).
	Sync(t *testing.T, m *proxy.Model, full bool) proxy.SyncResult
	// Route answers where p goes in the fake's present state. ok is false
	// when the target cannot trace packets yet.
	Route(t *testing.T, p Packet) (r Route, ok bool)
	// State is the fake's whole state as text: the same for the same
	// programming, whatever syncs led to it. Empty when the target cannot
	// tell.
	State(t *testing.T) string
}

// Gaps are the features a backend lacks, each with why. A scenario of a
// missing feature must fail: when it passes, the gap is closed and must
// leave the list.
type Gaps map[string]string

// Deviations are questions a backend answers otherwise on purpose, keyed
// "scenario/question", with the answer it must give instead: where the
// reference behaves differently in that mode (kube-proxy's IPVS mode refuses
// what its iptables mode drops).
type Deviations map[string]Want

// Run runs every scenario against fresh targets.
func Run(t *testing.T, newTarget func(t *testing.T, r proxy.Routing) Target, gaps Gaps) {
	RunDeviating(t, newTarget, gaps, nil)
}

// RunDeviating is Run with deviations. A deviation no question matches
// fails the run, so that none outlives its question.
func RunDeviating(t *testing.T, newTarget func(t *testing.T, r proxy.Routing) Target, gaps Gaps, deviations Deviations) {
	used := map[string]bool{}
	defer func() {
		for key := range deviations {
			if !used[key] {
				t.Errorf("deviation %q matches no question", key)
			}
		}
	}()
	unanswered := 0
	for _, sc := range Scenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			target := newTarget(t, sc.Routing)
			var failures []string
			asked := unanswered
			for i, m := range sc.Models() {
				target.Sync(t, m, i == 0)
				for _, q := range sc.Steps[i].Questions {
					if w, ok := deviations[sc.Name+"/"+q.Name]; ok {
						q.Want, used[sc.Name+"/"+q.Name] = w, true
					}
					got, ok := target.Route(t, q.Packet)
					if !ok {
						unanswered++
						continue
					}
					if !q.Want.matches(got) {
						failures = append(failures, formatFailure(i, q, got))
					}
				}
			}
			why, lacking := gaps[sc.Feature]
			switch {
			case lacking && len(failures) == 0 && unanswered == asked:
				t.Errorf("the backend passes %q although its gaps say it lacks %s (%s): remove the gap", sc.Name, sc.Feature, why)
			case lacking:
				t.Logf("LACKS %s (%s): %d questions answered otherwise", sc.Feature, why, len(failures))
			default:
				for _, f := range failures {
					t.Error(f)
				}
			}
		})
	}
	if unanswered > 0 {
		t.Logf("%d routing questions unanswered: the target cannot trace packets yet", unanswered)
	}
	t.Run("partial-syncs-equal-full-sync", func(t *testing.T) { partialSyncsEqualFullSync(t, newTarget) })
}

// partialSyncsEqualFullSync changes a cluster at random and checks, after
// every sync, that the fake is exactly what one full sync of the same
// model makes on a fresh node, and that the backend counts the same.
func partialSyncsEqualFullSync(t *testing.T, newTarget func(t *testing.T, r proxy.Routing) Target) {
	rng := rand.New(rand.NewPCG(1, 2))
	r := proxy.Routing{ClusterCIDRs: Prefixes(PodCIDR, PodCIDRv6)}
	target := newTarget(t, r)
	services := RandomServices(rng, 30)
	m := Model(nil, services...)
	target.Sync(t, m, true)
	showsState := target.State(t) != ""
	if !showsState {
		t.Log("the target cannot show its state: only the syncs and counts are checked")
	}
	for step := range 40 {
		services = Mutate(rng, services, step)
		// Odd steps build the model from the previous one (the backend may
		// then look only at the model's list of changes), even steps from
		// scratch; now and then a periodic full sync.
		fromPrev := step%2 == 1
		if fromPrev {
			m = Model(m, services...)
		} else {
			m = Model(nil, services...)
		}
		full := rng.IntN(8) == 0
		res := target.Sync(t, m, full)
		fresh := newTarget(t, r)
		want := fresh.Sync(t, Model(nil, services...), true)
		if res.Rules != want.Rules {
			t.Errorf("step %d: %d rules after partial syncs, %d after one full sync", step, res.Rules, want.Rules)
		}
		if fromPrev && !full && res.Rewritten > len(m.Changes) {
			t.Errorf("step %d: rewrote %d service ports for %d changes", step, res.Rewritten, len(m.Changes))
		}
		if !showsState {
			continue
		}
		if got, wantState := target.State(t), fresh.State(t); got != wantState {
			t.Fatalf("step %d: the state after partial syncs differs from one full sync:\n%s", step, LineDiff(got, wantState))
		}
	}
}

func formatFailure(step int, q Question, got Route) string {
	from := "from " + q.Packet.Src.String()
	if q.Packet.FromNode {
		from = "from the node (" + q.Packet.Src.String() + ")"
	}
	s := "step " + strconv.Itoa(step) + ", " + q.Name + ": " + string(q.Packet.Protocol) + " " + from + " to " +
		netip.AddrPortFrom(q.Packet.Dst, q.Packet.Port).String() + " reaches " + strings.Join(got.Outcomes, ", ")
	if got.Affinity > 0 {
		s += " with affinity " + strconv.Itoa(got.Affinity) + "s"
	}
	return s + "; want " + q.Want.String()
}
