package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/clusterdns/clusterdns/zone"
)

// fakeBackend records syncs, with the time on the agent's clock, and fails
// on demand.
type fakeBackend struct {
	clock clock.PassiveClock
	name  string // the mode; "fake" when empty
	mu    sync.Mutex
	calls []fakeSync
	fail  int // fail this many syncs
}

type fakeSync struct {
	full  bool
	model *Model
	at    time.Time
}

func (f *fakeBackend) Name() string {
	if f.name == "" {
		return "fake"
	}
	return f.name
}

func (f *fakeBackend) Sync(_ context.Context, m *Model, full bool) (SyncResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fakeSync{full: full, model: m, at: f.clock.Now()})
	if f.fail > 0 {
		f.fail--
		return SyncResult{}, errors.New("injected failure")
	}
	return SyncResult{Rules: 7, Rewritten: len(m.Ports)}, nil
}

func (f *fakeBackend) Cleanup(context.Context) error { return nil }

func (f *fakeBackend) snapshot() []fakeSync {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeSync(nil), f.calls...)
}

func (f *fakeBackend) DryRun(*Model, io.Writer) error { return nil }

// loopClock is a fake clock that tells the test each time the sync loop arms
// its timer, which the loop does last before it waits. The test moves the
// time only then: moved earlier, the loop would measure its next wait from a
// moment the test has already skipped, and never wake.
type loopClock struct {
	*clocktesting.FakeClock
	armed chan time.Time // when each armed timer is due
}

func newLoopClock() *loopClock {
	return &loopClock{
		FakeClock: clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		armed:     make(chan time.Time, 16),
	}
}

func (c *loopClock) NewTimer(d time.Duration) clock.Timer {
	return &armedTimer{Timer: c.FakeClock.NewTimer(d), c: c}
}

type armedTimer struct {
	clock.Timer
	c *loopClock
}

func (t *armedTimer) Reset(d time.Duration) bool {
	active := t.Timer.Reset(d)
	select {
	case t.c.armed <- t.c.Now().Add(d):
	default: // the test stopped listening; waitArmed reports it
	}
	return active
}

// waitArmed waits, bounded, until the loop has done what the last event asked
// and waits again, and returns when its timer is due.
func (c *loopClock) waitArmed(t *testing.T) time.Time {
	t.Helper()
	select {
	case at := <-c.armed:
		return at
	case <-time.After(10 * time.Second):
		t.Fatal("the sync loop never went back to waiting")
		return time.Time{}
	}
}

// fire moves the clock to when the loop's timer is due, and waits until the
// loop has handled it.
func (c *loopClock) fire(t *testing.T, due time.Time) time.Time {
	t.Helper()
	c.SetTime(due)
	return c.waitArmed(t)
}

// chanSource publishes what the test sends it.
type chanSource struct {
	snapshots chan *zone.Cluster
	published chan struct{}
}

func newChanSource() chanSource {
	return chanSource{snapshots: make(chan *zone.Cluster), published: make(chan struct{})}
}

func (c chanSource) Run(ctx context.Context, publish func(*zone.Cluster)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-c.snapshots:
			publish(s)
			select {
			case c.published <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// send returns once the agent was handed s.
func (c chanSource) send(s *zone.Cluster) {
	c.snapshots <- s
	<-c.published
}

type fakeConntrack struct {
	mu    sync.Mutex
	flows []StaleFlow
}

func (f *fakeConntrack) DeleteUDP(flows []StaleFlow) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flows = append(f.flows, flows...)
	return nil
}

func dnsCluster(endpoints ...string) *zone.Cluster {
	svc := &zone.Service{Key: zone.Key{Namespace: "kube-system", Name: "dns"}, Type: zone.TypeClusterIP,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.0.0.10")},
		Ports:      []zone.ServicePort{{Name: "dns", Protocol: zone.ProtocolUDP, Port: 53, TargetPort: 53}}}
	sl := &zone.EndpointSlice{Key: zone.Key{Namespace: "kube-system", Name: "dns-a"}, Service: "dns", AddressType: zone.AddressIPv4,
		Ports: []zone.EndpointPort{{Name: "dns", Protocol: zone.ProtocolUDP, Port: 53}}, Endpoints: ep(endpoints...)}
	return snapshot([]*zone.Service{svc}, sl)
}

func healthCode(a *Agent) int {
	code, _ := health(a)
	return code
}

func health(a *Agent) (int, string) {
	rec := httptest.NewRecorder()
	a.HealthHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	return rec.Code, rec.Body.String()
}

func metricsText(a *Agent) string {
	rec := httptest.NewRecorder()
	a.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

// runAgent runs a until the test ends, and fails the test if Run fails.
func runAgent(t *testing.T, a *Agent) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func TestAgentSyncLoop(t *testing.T) {
	const minPeriod = 200 * time.Millisecond
	clk := newLoopClock()
	backend := &fakeBackend{clock: clk, fail: 1}
	ct := &fakeConntrack{}
	src := newChanSource()
	a := NewAgent(Config{Source: src, Backend: backend, Conntrack: ct, MinSyncPeriod: minPeriod, SyncPeriod: time.Hour, Clock: clk})
	// Starting is healthy, as with kube-proxy; the body says nothing was
	// programmed yet.
	if code, body := health(a); code != http.StatusOK || strings.Contains(body, "lastUpdated") {
		t.Errorf("healthz before any sync: %d %s, want 200 without lastUpdated", code, body)
	}
	runAgent(t, a)

	src.send(dnsCluster("172.16.0.1", "172.16.0.2"))
	// The first sync fails (injected); it is retried, in full, once the
	// minimum period has passed.
	due := clk.waitArmed(t)
	calls := backend.snapshot()
	if len(calls) != 1 {
		t.Fatalf("%d syncs after the first snapshot, want 1", len(calls))
	}
	if want := calls[0].at.Add(minPeriod); !due.Equal(want) {
		t.Errorf("retry due at %v, want %v", due, want)
	}
	// A failed sync within the health timeout (twice the sync period) is
	// not yet unhealthy, and nothing is programmed.
	if code, body := health(a); code != http.StatusOK || strings.Contains(body, "lastUpdated") {
		t.Errorf("healthz after a failed sync: %d %s, want 200 without lastUpdated", code, body)
	}
	due = clk.fire(t, due)
	calls = backend.snapshot()
	if len(calls) != 2 || !calls[1].full {
		t.Fatalf("after the retry's time: syncs %+v, want a second, full one", calls)
	}
	if code, body := health(a); code != http.StatusOK || !strings.Contains(body, "lastUpdated") {
		t.Errorf("healthz after the retry succeeded: %d %s, want 200 with lastUpdated", code, body)
	} else {
		// kube-proxy's per-family status: both families were programmed.
		var b struct {
			LastUpdated string `json:"lastUpdated"`
			Healthy     bool   `json:"healthy"`
			Status      map[string]struct {
				LastUpdated string `json:"lastUpdated"`
				Healthy     bool   `json:"healthy"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(body), &b); err != nil {
			t.Fatalf("healthz body %s: %v", body, err)
		}
		for _, f := range []string{"IPv4", "IPv6"} {
			if st := b.Status[f]; !b.Healthy || !st.Healthy || st.LastUpdated != b.LastUpdated {
				t.Errorf("healthz %s status %+v in %s, want healthy and updated at %s", f, st, body, b.LastUpdated)
			}
		}
	}

	// A burst of changes within the minimum period is batched: nothing
	// syncs until the period has passed, then one sync programs the newest.
	clk.Step(minPeriod / 4)
	for _, s := range []*zone.Cluster{
		dnsCluster("172.16.0.2"),
		dnsCluster("172.16.0.2", "172.16.0.3"),
		dnsCluster("172.16.0.3"),
	} {
		src.send(s)
		due = clk.waitArmed(t)
	}
	if n := len(backend.snapshot()); n != 2 {
		t.Fatalf("%d syncs within the minimum period, want none beyond the 2 before", n)
	}
	clk.fire(t, due)
	calls = backend.snapshot()
	if len(calls) != 3 {
		t.Fatalf("%d syncs after the minimum period, want 3", len(calls))
	}
	if gap := calls[2].at.Sub(calls[1].at); gap != minPeriod {
		t.Errorf("the batched sync came %v after the one before, want %v", gap, minPeriod)
	}
	if p := calls[2].model.Ports; len(p) != 1 || len(p[0].Endpoints) != 1 || p[0].Endpoints[0] != netip.MustParseAddrPort("172.16.0.3:53") {
		t.Errorf("the batched sync programmed %+v, want the newest snapshot", p)
	}
	if calls[2].full {
		t.Error("a sync for a change was a full one")
	}
	// UDP flows to the endpoints that left were forgotten.
	ct.mu.Lock()
	gone := map[netip.AddrPort]bool{}
	for _, f := range ct.flows {
		gone[f.Endpoint] = true
	}
	ct.mu.Unlock()
	for _, e := range []string{"172.16.0.1:53", "172.16.0.2:53"} {
		if !gone[netip.MustParseAddrPort(e)] {
			t.Errorf("UDP flows to %s were not deleted (deleted: %v)", e, gone)
		}
	}

	rec := httptest.NewRecorder()
	a.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{
		`clusterdns_proxy_sync_duration_seconds_count{kind="full"}`,
		"clusterdns_proxy_last_sync_success_timestamp_seconds",
		"clusterdns_proxy_rules 7",
		"clusterdns_proxy_sync_errors_total 1",
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// The first sync follows the first snapshot at once, however long the
// minimum period between syncs: the time before it is not a sync.
func TestAgentFirstSyncWaitsForNothingButTheSnapshot(t *testing.T) {
	clk := newLoopClock()
	backend := &fakeBackend{clock: clk}
	src := newChanSource()
	a := NewAgent(Config{Source: src, Backend: backend, MinSyncPeriod: time.Hour, SyncPeriod: time.Hour, Clock: clk})
	runAgent(t, a)
	// Hours pass without a snapshot: there is nothing to sync, and the
	// loop must not take the wait for one.
	clk.Step(3 * time.Hour)
	if n := len(backend.snapshot()); n != 0 {
		t.Fatalf("%d syncs before any snapshot", n)
	}
	select {
	case at := <-clk.armed:
		t.Fatalf("the loop armed its timer (for %v) before any snapshot", at)
	default:
	}
	// The clock stands still from here on: the sync must not wait for it.
	src.send(dnsCluster("172.16.0.1"))
	clk.waitArmed(t)
	calls := backend.snapshot()
	if len(calls) != 1 || !calls[0].full || !calls[0].at.Equal(clk.Now()) {
		t.Errorf("syncs %+v, want one full one at once (%v)", calls, clk.Now())
	}
}

// Between changes the sync period brings syncs; they rewrite everything only
// when the full sync period says so: by default (zero) every time, and with
// kube-proxy's hourly full rewrite every 120th sync at a 30s period.
func TestAgentPeriodicSyncsAreFullOnlyEveryFullSyncPeriod(t *testing.T) {
	const period = 30 * time.Second
	for _, tc := range []struct {
		name      string
		full      time.Duration
		fullEvery int // every how many syncs is a full one
	}{
		{"full sync period an hour", time.Hour, 120},
		{"full sync period as the sync period", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newLoopClock()
			backend := &fakeBackend{clock: clk}
			src := newChanSource()
			a := NewAgent(Config{Source: src, Backend: backend, MinSyncPeriod: time.Second,
				SyncPeriod: period, FullSyncPeriod: tc.full, Clock: clk})
			runAgent(t, a)
			start := clk.Now()
			src.send(dnsCluster("172.16.0.1"))
			due := clk.waitArmed(t)
			// Two and a half hours without a change.
			for range 300 {
				due = clk.fire(t, due)
			}
			calls := backend.snapshot()
			if len(calls) != 301 {
				t.Fatalf("%d syncs in %v, want 301", len(calls), clk.Since(start))
			}
			for i, c := range calls {
				if want := start.Add(time.Duration(i) * period); !c.at.Equal(want) {
					t.Errorf("sync %d at %v, want %v", i, c.at.Sub(start), want.Sub(start))
				}
				if want := i%tc.fullEvery == 0; c.full != want {
					t.Errorf("sync %d (at %v): full %v, want %v", i, c.at.Sub(start), c.full, want)
				}
			}
		})
	}
}

// /healthz follows kube-proxy's rule: unhealthy once a change has waited
// longer than the health timeout without a successful sync, whether the
// syncs fail or never come; healthy again after a successful sync. Failed
// syncs are counted, under kube-proxy's name for the mode too.
func TestHealthFollowsPendingChanges(t *testing.T) {
	const timeout = time.Minute
	type step struct {
		do       string // "publish", "sync", "fail" (a sync the backend refuses), "wait" (past the timeout)
		wantCode int
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"starting and idle is healthy", []step{{"wait", 200}}},
		{"a change waiting for its first sync", []step{{"publish", 200}, {"wait", 503}, {"sync", 200}}},
		{"one failure within the timeout", []step{{"publish", 200}, {"sync", 200}, {"publish", 200}, {"fail", 200}, {"sync", 200}}},
		{"repeated failures past the timeout, then success", []step{
			{"publish", 200}, {"sync", 200}, {"publish", 200}, {"fail", 200}, {"wait", 503}, {"fail", 503}, {"sync", 200}, {"wait", 200}}},
		{"a failed periodic sync leaves the kernel behind too", []step{
			{"publish", 200}, {"sync", 200}, {"fail", 200}, {"wait", 503}, {"sync", 200}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			backend := &fakeBackend{clock: clk, name: "iptables"}
			a := NewAgent(Config{Source: newChanSource(), Backend: backend, HealthTimeout: timeout, Clock: clk})
			fails, gen := 0, 0
			for i, s := range tc.steps {
				switch s.do {
				case "publish":
					gen++
					a.publish(dnsCluster(fmt.Sprintf("172.16.0.%d", gen)))
				case "sync":
					if err := a.syncOnce(context.Background(), false); err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
				case "fail":
					backend.mu.Lock()
					backend.fail = 1
					backend.mu.Unlock()
					if err := a.syncOnce(context.Background(), false); err == nil {
						t.Fatalf("step %d: the sync did not fail", i)
					}
					fails++
				case "wait":
					clk.Step(timeout + timeout/2)
				}
				if code, body := health(a); code != s.wantCode {
					t.Fatalf("step %d (%s): healthz %d %s, want %d", i, s.do, code, body, s.wantCode)
				}
				rec := httptest.NewRecorder()
				a.LiveHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/livez", nil))
				if rec.Code != s.wantCode {
					t.Fatalf("step %d (%s): livez %d %s, want %d", i, s.do, rec.Code, rec.Body.String(), s.wantCode)
				}
			}
			m := metricsText(a)
			for _, want := range []string{
				fmt.Sprintf("clusterdns_proxy_sync_errors_total %d", fails),
				fmt.Sprintf("clusterdns_proxy_sync_proxy_rules_iptables_restore_failures_total %d", fails),
				"clusterdns_proxy_sync_proxy_rules_last_queued_timestamp_seconds",
				`clusterdns_proxy_healthz_total{code="200"}`,
				`clusterdns_proxy_livez_total{code="200"}`,
			} {
				if !strings.Contains(m, want) {
					t.Errorf("metrics lack %q", want)
				}
			}
		})
	}
}

// A failed sync leaves the agent's model as it was: the next sync is
// computed from the last programmed one, and it is a full one.
func TestFailedSyncKeepsProgrammedModel(t *testing.T) {
	backend := &fakeBackend{clock: clock.RealClock{}}
	a := NewAgent(Config{Source: newChanSource(), Backend: backend})
	a.publish(dnsCluster("172.16.0.1"))
	if err := a.syncOnce(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	before := a.programmed
	a.mu.Unlock()
	backend.fail = 1
	a.publish(dnsCluster("172.16.0.2"))
	if err := a.syncOnce(context.Background(), false); err == nil {
		t.Fatal("sync did not fail")
	}
	a.mu.Lock()
	after := a.programmed
	a.mu.Unlock()
	if after != before {
		t.Error("a failed sync replaced the programmed model")
	}
	if _, _, err := a.Healthy(); err == nil {
		t.Error("Healthy does not report the failed sync's error")
	}
}

// Synced sees every snapshot a successful sync programmed, and none that
// failed.
func TestSyncedFollowsSuccessfulSyncs(t *testing.T) {
	backend := &fakeBackend{clock: clock.RealClock{}}
	var got []*zone.Cluster
	a := NewAgent(Config{Source: newChanSource(), Backend: backend,
		Synced: func(_ context.Context, c *zone.Cluster) { got = append(got, c) }})
	first := dnsCluster("172.16.0.1")
	a.publish(first)
	if err := a.syncOnce(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	backend.mu.Lock()
	backend.fail = 1
	backend.mu.Unlock()
	a.publish(dnsCluster("172.16.0.2"))
	if err := a.syncOnce(context.Background(), false); err == nil {
		t.Fatal("the sync did not fail")
	}
	if len(got) != 1 || got[0] != first {
		t.Fatalf("Synced saw %d snapshots, want only the first", len(got))
	}
}

// The agent builds the model for its node, and the metrics say, per family,
// which Services have endpoints but none on it, and which features are in
// use.
func TestAgentRoutesForItsNode(t *testing.T) {
	clk := newLoopClock()
	backend := &fakeBackend{clock: clk}
	src := newChanSource()
	a := NewAgent(Config{Source: src, Backend: backend, NodeName: "n1", MinSyncPeriod: time.Hour, SyncPeriod: time.Hour, Clock: clk})
	runAgent(t, a)

	lb := &zone.Service{Key: zone.Key{Namespace: "dev", Name: "lb"}, Type: zone.TypeLoadBalancer, ExternalTrafficLocal: true,
		ClusterIPs:          []netip.Addr{netip.MustParseAddr("10.0.0.20"), netip.MustParseAddr("fd00::20")},
		LoadBalancerIngress: []zone.LoadBalancerIngress{{IP: netip.MustParseAddr("203.0.113.9")}, {IP: netip.MustParseAddr("fd00:203::9")}},
		Ports:               []zone.ServicePort{{Protocol: zone.ProtocolTCP, Port: 80, TargetPort: 80, NodePort: 30080}}}
	internal := &zone.Service{Key: zone.Key{Namespace: "dev", Name: "internal"}, InternalTrafficLocal: true,
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.0.0.21")}, Ports: []zone.ServicePort{{Protocol: zone.ProtocolTCP, Port: 80, TargetPort: 80}}}
	slice := func(svc, node string) *zone.EndpointSlice {
		e := ep("172.16.0.9")
		e[0].NodeName = node
		return &zone.EndpointSlice{Key: zone.Key{Namespace: "dev", Name: svc + "-a"}, Service: svc, AddressType: zone.AddressIPv4,
			Ports: []zone.EndpointPort{{Protocol: zone.ProtocolTCP, Port: 80}}, Endpoints: e}
	}
	lb6 := &zone.EndpointSlice{Key: zone.Key{Namespace: "dev", Name: "lb-6"}, Service: "lb", AddressType: zone.AddressIPv6,
		Ports: []zone.EndpointPort{{Protocol: zone.ProtocolTCP, Port: 80}}, Endpoints: ep("fd00:1::9")}
	lb6.Endpoints[0].NodeName = "n2"
	src.send(snapshot([]*zone.Service{lb, internal}, slice("lb", "n1"), lb6, slice("internal", "n2")))
	clk.waitArmed(t)
	calls := backend.snapshot()
	if len(calls) != 1 {
		t.Fatalf("%d syncs, want 1", len(calls))
	}
	got := calls[0].model.Lookup(PortKey{Service: lb.Key, Family: IPv4})
	if got == nil || len(got.ExternalEndpoints) != 1 {
		t.Fatalf("the load balancer's external endpoints %+v, want the one on n1", got)
	}
	m := metricsText(a)
	for _, want := range []string{
		`clusterdns_proxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="internal"} 1`,
		`clusterdns_proxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv4",traffic_policy="external"} 0`,
		`clusterdns_proxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv6",traffic_policy="internal"} 0`,
		`clusterdns_proxy_sync_proxy_rules_no_local_endpoints_total{ip_family="IPv6",traffic_policy="external"} 1`,
		`clusterdns_proxy_service_ports{feature="load_balancer_ip",ip_family="IPv4"} 1`,
		`clusterdns_proxy_service_ports{feature="load_balancer_ip",ip_family="IPv6"} 1`,
		`clusterdns_proxy_service_ports{feature="external_traffic_local",ip_family="IPv4"} 1`,
		`clusterdns_proxy_service_ports{feature="external_traffic_local",ip_family="IPv6"} 1`,
		`clusterdns_proxy_service_ports{feature="internal_traffic_local",ip_family="IPv4"} 1`,
		`clusterdns_proxy_service_ports{feature="internal_traffic_local",ip_family="IPv6"} 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
