package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/utils/clock"

	"github.com/clusterdns/clusterdns/zone"
)

// Config configures an Agent.
type Config struct {
	Source  zone.Source
	Backend Backend
	// NodeName is this node's name: its endpoints are the local ones of the
	// Local traffic policies, and its Node object's zone selects topology
	// hints.
	NodeName string
	// DNSAlias, when set, routes the node-local DNS cache's address to
	// kube-dns while no cache holds it (see ServiceAlias).
	DNSAlias ServiceAlias
	// Conntrack, when set, forgets UDP flows to endpoints that went away.
	Conntrack Conntrack
	// MinSyncPeriod batches changes: syncs are at least this far apart.
	MinSyncPeriod time.Duration
	// SyncPeriod is the longest time between two syncs, changes or not.
	SyncPeriod time.Duration
	// HealthTimeout is how long a change may wait for a successful sync
	// before /healthz reports unhealthy; zero means twice SyncPeriod, as
	// kube-proxy has it.
	HealthTimeout time.Duration
	// FullSyncPeriod is how often a sync rewrites everything the backend
	// owns, repairing what someone else changed; zero means every
	// SyncPeriod. A failed sync is always followed by a full one.
	FullSyncPeriod time.Duration
	Logger         *slog.Logger
	// Synced, when set, is called after every successful sync with the
	// snapshot now programmed: what follows the rules (the Services' health
	// checks) moves with them.
	Synced func(ctx context.Context, programmed *zone.Cluster)
	// Clock times the sync loop and health (when syncs happen and how long
	// changes have waited, not how long a sync takes); nil is the real
	// clock. Tests set a fake one.
	Clock clock.Clock
}

// Agent keeps the kernel's service routes in step with the cluster: it takes
// snapshots from the source, and syncs the backend through a bounded-frequency
// loop. Health and metrics reflect the syncs.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	runner *boundedRunner

	mu sync.Mutex // protects the following fields
	// latest is the newest snapshot; nil until the source has loaded.
	latest *zone.Cluster
	// programmed is the model of the last successful sync.
	programmed *Model
	// modelOf is the snapshot programmed was built from.
	modelOf *zone.Cluster
	// lastSuccess is when a sync last succeeded; lastErr is the last sync's
	// error, nil when it succeeded.
	lastSuccess time.Time
	lastErr     error
	// pendingSince is when the oldest change not yet programmed arrived (a
	// snapshot, or a failed sync, which leaves the kernel behind); zero when
	// the kernel is up to date.
	pendingSince time.Time

	registry *prometheus.Registry
	metrics  agentMetrics
}

type agentMetrics struct {
	syncDuration *prometheus.HistogramVec
	lastSuccess  prometheus.Gauge
	lastQueued   prometheus.Gauge
	rules        prometheus.Gauge
	syncErrors   prometheus.Counter
	// modeFailures is kube-proxy's failure counter of the mode, nil in a
	// mode kube-proxy has none for.
	modeFailures prometheus.Counter
	healthz      *prometheus.CounterVec
	livez        *prometheus.CounterVec
	programming  prometheus.Histogram
	// noLocal and ports describe the programmed model: the ports whose
	// traffic is dropped for want of a local endpoint, by traffic policy,
	// and the ports by feature.
	noLocal *prometheus.GaugeVec
	ports   *prometheus.GaugeVec
}

// setModelMetrics publishes what the programmed model holds, per family
// (the ip_family label, "IPv4" or "IPv6", as kube-proxy labels its
// per-family metrics).
func (a *Agent) setModelMetrics(m *Model) {
	ipv4, ipv6 := m.Counts()
	for f, c := range map[Family]PortCounts{IPv4: ipv4, IPv6: ipv6} {
		family := f.String()
		a.metrics.noLocal.WithLabelValues("internal", family).Set(float64(c.NoLocalInternal))
		a.metrics.noLocal.WithLabelValues("external", family).Set(float64(c.NoLocalExternal))
		for feature, n := range map[string]int{
			"node_port": c.NodePorts, "external_ip": c.ExternalIPs, "load_balancer_ip": c.LoadBalancerIPs,
			"source_ranges": c.SourceRanges, "external_traffic_local": c.ExternalLocal,
			"internal_traffic_local": c.InternalLocal, "topology": c.Topology,
		} {
			a.metrics.ports.WithLabelValues(feature, family).Set(float64(n))
		}
	}
}

// modeFailureMetric is the name kube-proxy gives failed syncs in a mode
// (under our prefix), so that alerts written for it carry over; empty for a
// mode it has none for.
func modeFailureMetric(mode string) string {
	switch mode {
	case "iptables":
		return "clusterdns_proxy_sync_proxy_rules_iptables_restore_failures_total"
	case "nftables":
		return "clusterdns_proxy_sync_proxy_rules_nftables_sync_failures_total"
	}
	return ""
}

// NewAgent returns an agent; Run starts it.
func NewAgent(cfg Config) *Agent {
	if cfg.MinSyncPeriod <= 0 {
		cfg.MinSyncPeriod = time.Second
	}
	if cfg.SyncPeriod <= 0 {
		cfg.SyncPeriod = 30 * time.Second
	}
	if cfg.FullSyncPeriod <= 0 {
		cfg.FullSyncPeriod = cfg.SyncPeriod
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 2 * cfg.SyncPeriod
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	a := &Agent{
		cfg:      cfg,
		log:      log,
		runner:   newBoundedRunner(cfg.Clock, cfg.MinSyncPeriod, cfg.SyncPeriod, cfg.FullSyncPeriod),
		registry: prometheus.NewRegistry(),
	}
	a.metrics = agentMetrics{
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "clusterdns_proxy_sync_duration_seconds",
			Help:    "How long one sync of the rules took (model, render and apply), by kind: full or partial.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"kind"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clusterdns_proxy_last_sync_success_timestamp_seconds",
			Help: "Unix time of the last successful sync.",
		}),
		lastQueued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clusterdns_proxy_sync_proxy_rules_last_queued_timestamp_seconds",
			Help: "Unix time of the last change the source delivered, which queues a sync.",
		}),
		rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clusterdns_proxy_rules",
			Help: "How many rules the backend has programmed.",
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clusterdns_proxy_sync_errors_total",
			Help: "Syncs that failed.",
		}),
		healthz: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clusterdns_proxy_healthz_total",
			Help: "/healthz answers, by status code.",
		}, []string{"code"}),
		livez: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clusterdns_proxy_livez_total",
			Help: "/livez answers, by status code.",
		}, []string{"code"}),
		programming: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "clusterdns_proxy_network_programming_duration_seconds",
			Help:    "Time from an object change to the sync that programmed it, when the source knows the change time.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 15),
		}),
		noLocal: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "clusterdns_proxy_sync_proxy_rules_no_local_endpoints_total",
			Help: "Service ports with endpoints but none on this node, whose traffic of the Local traffic_policy (internal or external) is dropped, by ip_family; kube-proxy's name for the same.",
		}, []string{"traffic_policy", "ip_family"}),
		ports: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "clusterdns_proxy_service_ports",
			Help: "Service ports programmed, by ip_family and by feature they use: node_port, external_ip, load_balancer_ip, source_ranges, external_traffic_local, internal_traffic_local, topology.",
		}, []string{"feature", "ip_family"}),
	}
	a.registry.MustRegister(a.metrics.syncDuration, a.metrics.lastSuccess, a.metrics.lastQueued, a.metrics.rules,
		a.metrics.syncErrors, a.metrics.healthz, a.metrics.livez, a.metrics.programming, a.metrics.noLocal, a.metrics.ports,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if name := modeFailureMetric(cfg.Backend.Name()); name != "" {
		a.metrics.modeFailures = prometheus.NewCounter(prometheus.CounterOpts{
			Name: name,
			Help: "Syncs the kernel refused (or that failed otherwise); kube-proxy's name for the same.",
		})
		a.registry.MustRegister(a.metrics.modeFailures)
	}
	return a
}

// Run runs the source and the sync loop until ctx ends or the source fails.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		a.runner.Loop(ctx, func(full bool) bool { return a.syncOnce(ctx, full) == nil })
	}()
	err := a.cfg.Source.Run(ctx, a.publish)
	cancel()
	<-loopDone
	if err != nil {
		return fmt.Errorf("proxy: source: %w", err)
	}
	return nil
}

// publish is the source's callback.
func (a *Agent) publish(c *zone.Cluster) {
	now := a.cfg.Clock.Now()
	a.mu.Lock()
	a.latest = c
	if a.pendingSince.IsZero() {
		a.pendingSince = now
	}
	a.mu.Unlock()
	a.metrics.lastQueued.Set(float64(now.UnixNano()) / 1e9)
	a.runner.Request()
}

// errNoSnapshot is a sync with nothing to program.
var errNoSnapshot = errors.New("waiting for the first snapshot from the source")

// syncOnce builds the model from the newest snapshot (when it changed) and
// has the backend program it.
func (a *Agent) syncOnce(ctx context.Context, full bool) error {
	a.mu.Lock()
	latest, programmed, modelOf := a.latest, a.programmed, a.modelOf
	a.mu.Unlock()
	if latest == nil {
		return errNoSnapshot // the runner waits for the first snapshot; not reached
	}
	start, began := time.Now(), a.cfg.Clock.Now()
	model := programmed
	if latest != modelOf || model == nil {
		model = BuildNodeModelAlias(programmed, latest, a.cfg.NodeName, a.cfg.DNSAlias)
	}
	modelTook := time.Since(start)
	res, err := a.cfg.Backend.Sync(ctx, model, full)
	elapsed := time.Since(start)
	kind := "partial"
	if full {
		kind = "full"
	}
	if err != nil {
		a.metrics.syncDuration.WithLabelValues(kind).Observe(elapsed.Seconds())
		a.metrics.syncErrors.Inc()
		if a.metrics.modeFailures != nil {
			a.metrics.modeFailures.Inc()
		}
		a.log.Error("sync failed; retrying with a full sync", "backend", a.cfg.Backend.Name(), "full", full, "err", err)
		a.setResult(err, nil, began)
		return err
	}
	if a.cfg.Conntrack != nil {
		if stale := StaleUDPFlows(programmed, model); len(stale) > 0 {
			if err := a.cfg.Conntrack.DeleteUDP(stale); err != nil {
				// The rules are right; only old UDP flows linger. Not worth
				// failing the sync for, but worth saying.
				a.log.Warn("could not delete stale UDP conntrack entries", "err", err)
			}
		}
	}
	now := time.Now()
	if latest != modelOf && !latest.Changed.IsZero() {
		a.metrics.programming.Observe(now.Sub(latest.Changed).Seconds())
	}
	// The last-success time goes first, so that a scraper that sees a new
	// sync in the duration histogram also sees when it ended.
	a.metrics.lastSuccess.Set(float64(now.UnixNano()) / 1e9)
	a.metrics.syncDuration.WithLabelValues(kind).Observe(elapsed.Seconds())
	a.metrics.rules.Set(float64(res.Rules))
	if model != programmed {
		a.setModelMetrics(model)
	}
	a.mu.Lock()
	a.programmed, a.modelOf = model, latest
	a.mu.Unlock()
	a.setResult(nil, latest, began)
	if a.cfg.Synced != nil {
		a.cfg.Synced(ctx, latest)
	}
	if res.Rewritten > 0 || full {
		a.log.Debug("synced", "backend", a.cfg.Backend.Name(), "full", full, "rewritten", res.Rewritten,
			"rules", res.Rules, "took", elapsed, "model", modelTook, "generation", latest.Generation)
	}
	return nil
}

// setResult records how the sync that began at began (on the agent's clock)
// ended: with err, or having programmed the snapshot programmed.
func (a *Agent) setResult(err error, programmed *zone.Cluster, began time.Time) {
	now := a.cfg.Clock.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastErr = err
	switch {
	case err != nil:
		// The kernel is behind what the agent wants until a sync succeeds
		// (the retry is queued), whether or not a change was waiting.
		if a.pendingSince.IsZero() {
			a.pendingSince = now
		}
	case a.latest == programmed:
		a.lastSuccess = now
		a.pendingSince = time.Time{}
	default:
		// A newer snapshot came during the sync; it waits since the sync
		// began at the latest.
		a.lastSuccess = now
		a.pendingSince = began
	}
}

// Healthy reports, as kube-proxy's /healthz does, whether every change has
// been programmed or has waited less than the health timeout: an agent that
// is starting, or idle, is healthy; one whose syncs keep failing (or hang)
// turns unhealthy once the oldest change it could not program is older than
// the timeout, and healthy again at the next successful sync. It also
// returns when a sync last succeeded and the last sync's error.
func (a *Agent) Healthy() (bool, time.Time, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ok := a.pendingSince.IsZero() || a.cfg.Clock.Since(a.pendingSince) < a.cfg.HealthTimeout
	return ok, a.lastSuccess, a.lastErr
}

// HealthHandler serves /healthz with kube-proxy's semantics (see Healthy):
// 200, or 503 once a change has waited longer than the health timeout. The
// body says when the rules were last programmed (absent before the first
// sync) and the last sync's error, and, in kube-proxy's shape, the same per
// family under "status": one sync programs both families, so they agree.
func (a *Agent) HealthHandler() http.Handler { return a.healthHandler(a.metrics.healthz) }

// LiveHandler serves /livez. kube-proxy's /livez is its /healthz without the
// node's eligibility (a node being drained turns /healthz, not /livez, to
// 503); the agent does not follow node eligibility, so both answer alike
// and are counted apart.
func (a *Agent) LiveHandler() http.Handler { return a.healthHandler(a.metrics.livez) }

func (a *Agent) healthHandler(answers *prometheus.CounterVec) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		ok, last, err := a.Healthy()
		code := http.StatusOK
		if !ok {
			code = http.StatusServiceUnavailable
		}
		answers.WithLabelValues(strconv.Itoa(code)).Inc()
		type familyHealth struct {
			LastUpdated string `json:"lastUpdated,omitempty"`
			Healthy     bool   `json:"healthy"`
		}
		body := struct {
			LastUpdated string                  `json:"lastUpdated,omitempty"`
			CurrentTime string                  `json:"currentTime"`
			Healthy     bool                    `json:"healthy"`
			Status      map[string]familyHealth `json:"status"`
			Error       string                  `json:"error,omitempty"`
		}{CurrentTime: a.cfg.Clock.Now().UTC().Format(time.RFC3339Nano), Healthy: ok}
		if !last.IsZero() {
			body.LastUpdated = last.UTC().Format(time.RFC3339Nano)
		}
		family := familyHealth{LastUpdated: body.LastUpdated, Healthy: ok}
		body.Status = map[string]familyHealth{IPv4.String(): family, IPv6.String(): family}
		if err != nil {
			body.Error = err.Error()
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	})
}

// MetricsHandler serves the agent's Prometheus metrics.
func (a *Agent) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{})
}
