package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
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
	// Conntrack, when set, forgets UDP flows to endpoints that went away.
	Conntrack Conntrack
	// MinSyncPeriod batches changes: syncs are at least this far apart.
	MinSyncPeriod time.Duration
	// SyncPeriod is the longest time between two syncs, changes or not.
	SyncPeriod time.Duration
	// FullSyncPeriod is how often a sync rewrites everything the backend
	// owns, repairing what someone else changed; zero means every
	// SyncPeriod. A failed sync is always followed by a full one.
	FullSyncPeriod time.Duration
	Logger         *slog.Logger
	// Clock times the sync loop (when syncs happen, not how long they take);
	// nil is the real clock. Tests set a fake one.
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

	registry *prometheus.Registry
	metrics  agentMetrics
}

type agentMetrics struct {
	syncDuration *prometheus.HistogramVec
	lastSuccess  prometheus.Gauge
	rules        prometheus.Gauge
	syncErrors   prometheus.Counter
	programming  prometheus.Histogram
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
		rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "clusterdns_proxy_rules",
			Help: "How many rules the backend has programmed.",
		}),
		syncErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clusterdns_proxy_sync_errors_total",
			Help: "Syncs that failed.",
		}),
		programming: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "clusterdns_proxy_network_programming_duration_seconds",
			Help:    "Time from an object change to the sync that programmed it, when the source knows the change time.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 15),
		}),
	}
	a.lastErr = errNoSnapshot // until the first sync says otherwise
	a.registry.MustRegister(a.metrics.syncDuration, a.metrics.lastSuccess, a.metrics.rules,
		a.metrics.syncErrors, a.metrics.programming,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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
	a.mu.Lock()
	a.latest = c
	a.mu.Unlock()
	a.runner.Request()
}

// errNoSnapshot holds the agent unhealthy until the source has loaded.
var errNoSnapshot = errors.New("waiting for the first snapshot from the source")

// syncOnce builds the model from the newest snapshot (when it changed) and
// has the backend program it.
func (a *Agent) syncOnce(ctx context.Context, full bool) error {
	a.mu.Lock()
	latest, programmed, modelOf := a.latest, a.programmed, a.modelOf
	a.mu.Unlock()
	if latest == nil {
		a.setResult(errNoSnapshot)
		return errNoSnapshot
	}
	start := time.Now()
	model := programmed
	if latest != modelOf || model == nil {
		model = BuildModel(programmed, latest)
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
		a.log.Error("sync failed; retrying with a full sync", "backend", a.cfg.Backend.Name(), "full", full, "err", err)
		a.setResult(err)
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
	a.mu.Lock()
	a.programmed, a.modelOf = model, latest
	a.mu.Unlock()
	a.setResult(nil)
	if res.Rewritten > 0 || full {
		a.log.Debug("synced", "backend", a.cfg.Backend.Name(), "full", full, "rewritten", res.Rewritten,
			"rules", res.Rules, "took", elapsed, "model", modelTook, "generation", latest.Generation)
	}
	return nil
}

func (a *Agent) setResult(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastErr = err
	if err == nil {
		a.lastSuccess = time.Now()
	}
}

// Healthy reports whether the last sync succeeded.
func (a *Agent) Healthy() (bool, time.Time, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastErr == nil && !a.lastSuccess.IsZero(), a.lastSuccess, a.lastErr
}

// HealthHandler serves /healthz: 200 while syncs succeed, 503 before the
// first success and after a failure. The body says when the rules were last
// programmed.
func (a *Agent) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		ok, last, err := a.Healthy()
		body := struct {
			LastUpdated string `json:"lastUpdated,omitempty"`
			CurrentTime string `json:"currentTime"`
			Error       string `json:"error,omitempty"`
		}{CurrentTime: time.Now().UTC().Format(time.RFC3339Nano)}
		if !last.IsZero() {
			body.LastUpdated = last.UTC().Format(time.RFC3339Nano)
		}
		if err != nil {
			body.Error = err.Error()
		}
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
}

// MetricsHandler serves the agent's Prometheus metrics.
func (a *Agent) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{})
}
