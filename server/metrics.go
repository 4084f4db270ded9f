package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterdns/clusterdns/zone"
)

// Metrics are the server's Prometheus collectors. They live as long as the
// process, across reloads.
type Metrics struct {
	programmingLatency prometheus.Histogram
	indexBuild         prometheus.Histogram
	indexRecords       prometheus.Gauge
	panics             prometheus.Counter
}

// NewMetrics creates and registers the collectors.
func NewMetrics(reg *prometheus.Registry) *Metrics {
	m := &Metrics{
		programmingLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "coredns", Subsystem: "kubernetes", Name: "dns_programming_duration_seconds",
			Help:    "Time from the newest change of a cluster object to the moment answers reflect it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		indexBuild: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "clusterdns", Name: "index_build_duration_seconds",
			Help:    "Time to build the cluster zone's record index from a snapshot.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		indexRecords: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "clusterdns", Name: "index_names",
			Help: "Owner names in the cluster zone's record index.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "coredns", Name: "panics_total",
			Help: "Panics recovered while answering queries.",
		}),
	}
	reg.MustRegister(m.programmingLatency, m.indexBuild, m.indexRecords, m.panics)
	return m
}

// observeUpdate records a new index.
func (m *Metrics) observeUpdate(env *Env, c *zone.Cluster, ix *zone.Index, took time.Duration) {
	if m == nil {
		return
	}
	m.indexBuild.Observe(took.Seconds())
	m.indexRecords.Set(float64(ix.Len()))
	if !c.Changed.IsZero() && c.Generation > 1 {
		m.programmingLatency.Observe(time.Since(c.Changed).Seconds())
	}
}

func (m *Metrics) panic() {
	if m != nil {
		m.panics.Inc()
	}
}
