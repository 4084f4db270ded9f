package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/zone"
)

// fakeBackend records syncs and fails on demand.
type fakeBackend struct {
	mu     sync.Mutex
	name   string // the mode; "fake" when empty
	calls  []fakeSync
	fail   int // fail this many syncs
	synced chan struct{}
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
	defer func() {
		f.mu.Unlock()
		select {
		case f.synced <- struct{}{}:
		default:
		}
	}()
	f.calls = append(f.calls, fakeSync{full: full, model: m, at: time.Now()})
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

// waitSyncs waits, bounded, until the backend saw n syncs.
func (f *fakeBackend) waitSyncs(t *testing.T, n int) []fakeSync {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if calls := f.snapshot(); len(calls) >= n {
			return calls
		}
		select {
		case <-f.synced:
		case <-deadline:
			t.Fatalf("backend saw %d syncs, want %d", len(f.snapshot()), n)
		}
	}
}

// chanSource publishes what the test sends it.
type chanSource chan *zone.Cluster

func (c chanSource) Run(ctx context.Context, publish func(*zone.Cluster)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-c:
			publish(s)
		}
	}
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
	backend := &fakeBackend{fail: 1, synced: make(chan struct{}, 1)}
	ct := &fakeConntrack{}
	src := make(chanSource)
	a := NewAgent(Config{Source: src, Backend: backend, Conntrack: ct, MinSyncPeriod: 200 * time.Millisecond, SyncPeriod: time.Hour})
	// Starting is healthy, as with kube-proxy; the body says nothing was
	// programmed yet.
	if code, body := health(a); code != http.StatusOK || strings.Contains(body, "lastUpdated") {
		t.Errorf("healthz before any sync: %d %s, want 200 without lastUpdated", code, body)
	}
	runAgent(t, a)

	src <- dnsCluster("172.16.0.1", "172.16.0.2")
	// The first sync fails (injected); it is retried, in full.
	calls := backend.waitSyncs(t, 2)
	last := calls[len(calls)-1]
	if !last.full {
		t.Error("the sync after a failure was not a full one")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, body := health(a); code == http.StatusOK && strings.Contains(body, "lastUpdated") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("healthz never said the rules were programmed")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A burst of changes is batched: no two syncs closer than the minimum period.
	n := len(backend.snapshot())
	src <- dnsCluster("172.16.0.2")
	src <- dnsCluster("172.16.0.2", "172.16.0.3")
	src <- dnsCluster("172.16.0.3")
	calls = backend.waitSyncs(t, n+1)
	for i := 1; i < len(calls); i++ {
		if gap := calls[i].at.Sub(calls[i-1].at); gap < 200*time.Millisecond {
			t.Errorf("syncs %d and %d only %s apart", i-1, i, gap)
		}
	}
	// Eventually the last snapshot is programmed, and UDP flows to the
	// endpoints that left were forgotten.
	deadline = time.Now().Add(10 * time.Second)
	for {
		calls = backend.snapshot()
		m := calls[len(calls)-1].model
		if p := m.Ports; len(p) == 1 && len(p[0].Endpoints) == 1 && p[0].Endpoints[0] == netip.MustParseAddrPort("172.16.0.3:53") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the last snapshot was never synced")
		}
		backend.waitSyncs(t, len(calls)+1)
	}
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
	backend := &fakeBackend{synced: make(chan struct{}, 1)}
	src := make(chanSource)
	a := NewAgent(Config{Source: src, Backend: backend, MinSyncPeriod: time.Hour, SyncPeriod: time.Hour})
	runAgent(t, a)
	time.Sleep(50 * time.Millisecond) // the loop is up and has nothing to do
	if n := len(backend.snapshot()); n != 0 {
		t.Fatalf("%d syncs before any snapshot", n)
	}
	src <- dnsCluster("172.16.0.1")
	if calls := backend.waitSyncs(t, 1); !calls[0].full {
		t.Error("the first sync was not a full one")
	}
}

// Between changes the sync period brings syncs; they rewrite everything only
// when the full sync period says so.
func TestAgentPeriodicSyncsAreFullOnlyEveryFullSyncPeriod(t *testing.T) {
	for _, tc := range []struct {
		name     string
		full     time.Duration
		wantFull bool
	}{
		{"full sync period an hour", time.Hour, false},
		{"full sync period as the sync period", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backend := &fakeBackend{synced: make(chan struct{}, 1)}
			src := make(chanSource)
			a := NewAgent(Config{Source: src, Backend: backend, MinSyncPeriod: 10 * time.Millisecond,
				SyncPeriod: 30 * time.Millisecond, FullSyncPeriod: tc.full})
			runAgent(t, a)
			src <- dnsCluster("172.16.0.1")
			calls := backend.waitSyncs(t, 4) // the first, then periodic ones
			if !calls[0].full {
				t.Error("the first sync was not a full one")
			}
			for i, c := range calls[1:4] {
				if c.full != tc.wantFull {
					t.Errorf("periodic sync %d: full %v, want %v", i+1, c.full, tc.wantFull)
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
	const timeout = 100 * time.Millisecond
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
			backend := &fakeBackend{name: "iptables", synced: make(chan struct{}, 1)}
			a := NewAgent(Config{Source: make(chanSource), Backend: backend, HealthTimeout: timeout})
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
					time.Sleep(timeout + timeout/2)
				}
				if code, body := health(a); code != s.wantCode {
					t.Fatalf("step %d (%s): healthz %d %s, want %d", i, s.do, code, body, s.wantCode)
				}
			}
			m := metricsText(a)
			for _, want := range []string{
				fmt.Sprintf("clusterdns_proxy_sync_errors_total %d", fails),
				fmt.Sprintf("clusterdns_proxy_sync_proxy_rules_iptables_restore_failures_total %d", fails),
				"clusterdns_proxy_sync_proxy_rules_last_queued_timestamp_seconds",
				`clusterdns_proxy_healthz_total{code="200"}`,
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
	backend := &fakeBackend{synced: make(chan struct{}, 1)}
	a := NewAgent(Config{Source: make(chanSource), Backend: backend})
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
