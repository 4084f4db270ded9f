package server

import (
	"crypto/sha512"
	"encoding/hex"
	"net/netip"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/clusterdns/clusterdns/resolver"
	"github.com/clusterdns/clusterdns/zone"
	"github.com/clusterdns/clusterdns/zone/dnsindex"
)

// Metrics are the server's Prometheus collectors. They live as long as the
// process, across reloads. Names and labels follow CoreDNS's, so that its
// dashboards and alerts work unchanged; the view label is always empty.
type Metrics struct {
	programmingLatency prometheus.Histogram
	indexBuild         prometheus.Histogram
	indexRecords       prometheus.Gauge
	panics             prometheus.Counter

	requests     *prometheus.CounterVec   // server, zone, view, proto, family, type
	responses    *prometheus.CounterVec   // server, zone, view, rcode, plugin
	duration     *prometheus.HistogramVec // server, zone, view, type
	requestSize  *prometheus.HistogramVec // server, zone, view, proto
	responseSize *prometheus.HistogramVec // server, zone, view, proto

	cacheEntries  *prometheus.GaugeVec   // server, type, zones, view
	cacheHits     *prometheus.CounterVec // server, type, zones, view
	cacheMisses   *prometheus.CounterVec // server, zones, view
	cacheRequests *prometheus.CounterVec // server, zones, view
	cachePrefetch *prometheus.CounterVec // server, zones, view
	cacheStale    *prometheus.CounterVec // server, zones, view

	forwardRequests  *prometheus.CounterVec   // to
	forwardResponses *prometheus.CounterVec   // to, rcode
	forwardDuration  *prometheus.HistogramVec // to, rcode
	forwardHCFails   *prometheus.CounterVec   // to
	forwardRejects   prometheus.Counter
	forwardShed      prometheus.Counter
	forwardBroken    prometheus.Counter

	healthDuration prometheus.Histogram
	healthFailures prometheus.Counter

	reloadFailures prometheus.Counter
	reloadVersion  *prometheus.GaugeVec // hash, value

	tcp *tcpMetrics
}

// sizeBuckets are CoreDNS's buckets for message sizes in bytes.
var sizeBuckets = []float64{0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16e3, 32e3, 48e3, 64e3}

// NewMetrics creates and registers the collectors.
func NewMetrics(reg *prometheus.Registry) *Metrics {
	durationBuckets := prometheus.ExponentialBuckets(0.00025, 2, 16)
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
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "dns", Name: "requests_total",
			Help: "Counter of DNS requests made per zone, protocol and family.",
		}, []string{"server", "zone", "view", "proto", "family", "type"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "dns", Name: "responses_total",
			Help: "Counter of response status codes.",
		}, []string{"server", "zone", "view", "rcode", "plugin"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "coredns", Subsystem: "dns", Name: "request_duration_seconds",
			Help: "Histogram of the time (in seconds) each request took per zone.", Buckets: durationBuckets,
		}, []string{"server", "zone", "view", "type"}),
		requestSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "coredns", Subsystem: "dns", Name: "request_size_bytes",
			Help: "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.", Buckets: sizeBuckets,
		}, []string{"server", "zone", "view", "proto"}),
		responseSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "coredns", Subsystem: "dns", Name: "response_size_bytes",
			Help: "Size of the returned response in bytes.", Buckets: sizeBuckets,
		}, []string{"server", "zone", "view", "proto"}),
		cacheEntries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "coredns", Subsystem: "cache", Name: "entries",
			Help: "The number of elements in the cache.",
		}, []string{"server", "type", "zones", "view"}),
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "cache", Name: "hits_total",
			Help: "The count of cache hits.",
		}, []string{"server", "type", "zones", "view"}),
		cacheMisses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "cache", Name: "misses_total",
			Help: "The count of cache misses.",
		}, []string{"server", "zones", "view"}),
		cacheRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "cache", Name: "requests_total",
			Help: "The count of cache requests.",
		}, []string{"server", "zones", "view"}),
		cachePrefetch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "cache", Name: "prefetch_total",
			Help: "The number of times the cache has prefetched a cached item.",
		}, []string{"server", "zones", "view"}),
		cacheStale: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "cache", Name: "served_stale_total",
			Help: "The number of requests served from stale cache entries.",
		}, []string{"server", "zones", "view"}),
		forwardRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "forward", Name: "requests_total",
			Help: "Counter of requests made per upstream.",
		}, []string{"to"}),
		forwardResponses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "forward", Name: "responses_total",
			Help: "Counter of responses received per upstream.",
		}, []string{"to", "rcode"}),
		forwardDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "coredns", Subsystem: "forward", Name: "request_duration_seconds",
			Help: "Histogram of the time each request took.", Buckets: durationBuckets,
		}, []string{"to", "rcode"}),
		forwardHCFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "forward", Name: "healthcheck_failures_total",
			Help: "Counter of the number of failed healthchecks.",
		}, []string{"to"}),
		forwardRejects: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "coredns", Subsystem: "forward", Name: "max_concurrent_rejects_total",
			Help: "Counter of the number of queries rejected because the concurrent queries were at maximum.",
		}),
		forwardShed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "clusterdns", Subsystem: "forward", Name: "shed_total",
			Help: "Forwarded queries refused at once because the server's limit of queries waiting on upstreams was reached.",
		}),
	}
	m.forwardBroken = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "coredns", Subsystem: "forward", Name: "healthcheck_broken_total",
		Help: "Counter of the number of complete failures of the healthchecks.",
	})
	m.healthDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "coredns", Subsystem: "health", Name: "request_duration_seconds",
		Help:    "Histogram of the time (in seconds) each request took.",
		Buckets: prometheus.ExponentialBuckets(0.00025, 10, 5),
	})
	m.healthFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "coredns", Subsystem: "health", Name: "request_failures_total",
		Help: "The number of times the health check failed.",
	})
	m.reloadFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "coredns", Subsystem: "reload", Name: "failed_total",
		Help: "Counter of the number of failed reload attempts.",
	})
	m.reloadVersion = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "coredns", Subsystem: "reload", Name: "version_info",
		Help: "A metric with a constant '1' value labeled by hash, and value which type of hash generated.",
	}, []string{"hash", "value"})
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "coredns", Name: "build_info",
		Help: "A metric with a constant '1' value labeled by version, revision, and goversion from which CoreDNS was built.",
	}, []string{"version", "revision", "goversion"})
	version, revision := buildVersion()
	buildInfo.WithLabelValues(version, revision, runtime.Version()).Set(1)
	reg.MustRegister(m.programmingLatency, m.indexBuild, m.indexRecords, m.panics,
		m.requests, m.responses, m.duration, m.requestSize, m.responseSize,
		m.cacheEntries, m.cacheHits, m.cacheMisses, m.cacheRequests, m.cachePrefetch, m.cacheStale,
		m.forwardRequests, m.forwardResponses, m.forwardDuration, m.forwardHCFails, m.forwardRejects, m.forwardShed,
		m.forwardBroken, m.healthDuration, m.healthFailures,
		m.reloadFailures, m.reloadVersion,
		buildInfo, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.tcp = newTCPMetrics(reg)
	return m
}

// tcpStats are the TCP listeners' collectors; without Metrics, unregistered
// ones.
func (m *Metrics) tcpStats() *tcpMetrics {
	if m == nil {
		return newTCPMetrics(prometheus.NewRegistry())
	}
	return m.tcp
}

// buildVersion reads the module version and VCS revision the binary was
// built from.
func buildVersion() (version, revision string) {
	version, revision = "dev", "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		version = v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 7 {
			revision = s.Value[:7]
		}
	}
	return
}

// observeUpdate records a new index.
func (m *Metrics) observeUpdate(env *Env, c *zone.Cluster, ix *dnsindex.Index, took time.Duration) {
	if m == nil {
		return
	}
	m.indexBuild.Observe(took.Seconds())
	m.indexRecords.Set(float64(ix.Len()))
	if !c.Changed.IsZero() && c.Generation > 1 {
		m.programmingLatency.Observe(time.Since(c.Changed).Seconds())
	}
}

// reloadFailed counts a Corefile change that was rejected.
func (m *Metrics) reloadFailed() {
	if m != nil {
		m.reloadFailures.Inc()
	}
}

// configLoaded labels the served Corefile's version by its SHA-512, as
// CoreDNS's reload directive does, so that a fleet's configs can be compared.
func (m *Metrics) configLoaded(data []byte) {
	if m == nil {
		return
	}
	sum := sha512.Sum512(data)
	m.reloadVersion.Reset()
	m.reloadVersion.WithLabelValues("sha512", hex.EncodeToString(sum[:])).Set(1)
}

func (m *Metrics) panic() {
	if m != nil {
		m.panics.Inc()
	}
}

// monitoredTypes are the query types with their own label value; others are
// counted as "other", which keeps the label set small, as in CoreDNS.
var monitoredTypes = map[uint16]string{
	dns.TypeA: "A", dns.TypeAAAA: "AAAA", dns.TypeMX: "MX", dns.TypeSOA: "SOA", dns.TypeCNAME: "CNAME",
	dns.TypePTR: "PTR", dns.TypeTXT: "TXT", dns.TypeNS: "NS", dns.TypeSRV: "SRV", dns.TypeDS: "DS",
	dns.TypeDNSKEY: "DNSKEY", dns.TypeRRSIG: "RRSIG", dns.TypeNSEC: "NSEC", dns.TypeNSEC3: "NSEC3",
	dns.TypeHTTPS: "HTTPS", dns.TypeIXFR: "IXFR", dns.TypeAXFR: "AXFR", dns.TypeANY: "ANY",
}

func typeLabel(t uint16) string {
	if s, ok := monitoredTypes[t]; ok {
		return s
	}
	return "other"
}

func rcodeLabel(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return strconv.Itoa(rcode)
}

// dnsRecorder records one server block's queries. Label combinations are
// resolved once and kept, so recording a query takes no map of label values
// and allocates nothing once its combination has been seen.
type dnsRecorder struct {
	m      *Metrics
	server string
	zones  []string

	mu   sync.RWMutex // protects reqs and resp
	reqs map[reqLabels]*reqObservers
	resp map[respLabels]prometheus.Counter
}

type reqLabels struct {
	zone  string
	tcp   bool
	v6    bool
	qtype uint16
}

type respLabels struct {
	zone   string
	rcode  int
	plugin string
}

type reqObservers struct {
	requests       prometheus.Counter
	duration       prometheus.Observer
	reqSize, rSize prometheus.Observer
}

func newDNSRecorder(m *Metrics, server string, zones []string) *dnsRecorder {
	return &dnsRecorder{m: m, server: server, zones: zones,
		reqs: make(map[reqLabels]*reqObservers), resp: make(map[respLabels]prometheus.Counter)}
}

// record counts one answered query.
func (r *dnsRecorder) record(req *resolver.Request, zone string, rcode int, plugin string, size int, took time.Duration) {
	r.observe(zone, req.Client, req.TCP, req.Type, req.Msg.Len(), rcode, plugin, size, took)
}

// observe counts one answered query from its parts: the fast path has no
// Request to give.
func (r *dnsRecorder) observe(zone string, client netip.AddrPort, tcp bool, qtype uint16, reqSize, rcode int, plugin string, size int, took time.Duration) {
	if zone == "" {
		zone = "dropped"
	}
	k := reqLabels{zone: zone, tcp: tcp, v6: client.Addr().Is6() && !client.Addr().Is4In6(), qtype: qtype}
	r.mu.RLock()
	o := r.reqs[k]
	c := r.resp[respLabels{zone, rcode, plugin}]
	r.mu.RUnlock()
	if o == nil {
		o = r.requestObservers(k)
	}
	if c == nil {
		c = r.responseCounter(respLabels{zone, rcode, plugin})
	}
	o.requests.Inc()
	o.duration.Observe(took.Seconds())
	o.reqSize.Observe(float64(reqSize))
	o.rSize.Observe(float64(size))
	c.Inc()
}

func (r *dnsRecorder) requestObservers(k reqLabels) *reqObservers {
	proto, family := "udp", "1"
	if k.tcp {
		proto = "tcp"
	}
	if k.v6 {
		family = "2"
	}
	t := typeLabel(k.qtype)
	o := &reqObservers{
		requests: r.m.requests.WithLabelValues(r.server, k.zone, "", proto, family, t),
		duration: r.m.duration.WithLabelValues(r.server, k.zone, "", t),
		reqSize:  r.m.requestSize.WithLabelValues(r.server, k.zone, "", proto),
		rSize:    r.m.responseSize.WithLabelValues(r.server, k.zone, "", proto),
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Types outside the monitored set share one label value, so the map is
	// bounded by zones x 2 x 2 x (monitored types + the others seen); cap it
	// by not remembering the unmonitored ones.
	if _, ok := monitoredTypes[k.qtype]; ok {
		r.reqs[k] = o
	}
	return o
}

func (r *dnsRecorder) responseCounter(k respLabels) prometheus.Counter {
	c := r.m.responses.WithLabelValues(r.server, k.zone, "", rcodeLabel(k.rcode), k.plugin)
	r.mu.Lock()
	r.resp[k] = c
	r.mu.Unlock()
	return c
}

// cacheStats resolves a cache's counters for its labels.
func (m *Metrics) cacheStats(server, zones string) resolver.CacheStats {
	return resolver.CacheStats{
		Requests:       m.cacheRequests.WithLabelValues(server, zones, ""),
		Misses:         m.cacheMisses.WithLabelValues(server, zones, ""),
		Prefetches:     m.cachePrefetch.WithLabelValues(server, zones, ""),
		ServedStale:    m.cacheStale.WithLabelValues(server, zones, ""),
		SuccessHits:    m.cacheHits.WithLabelValues(server, "success", zones, ""),
		DenialHits:     m.cacheHits.WithLabelValues(server, "denial", zones, ""),
		SuccessEntries: m.cacheEntries.WithLabelValues(server, "success", zones, ""),
		DenialEntries:  m.cacheEntries.WithLabelValues(server, "denial", zones, ""),
	}
}

// forwardStats implements resolver.ForwardStats over the shared collectors.
type forwardStats struct{ m *Metrics }

func (f forwardStats) MaxConcurrentRejected() { f.m.forwardRejects.Inc() }
func (f forwardStats) AllUpstreamsDown()      { f.m.forwardBroken.Inc() }
func (f forwardStats) Shed()                  { f.m.forwardShed.Inc() }

func (f forwardStats) Upstream(addr string) resolver.UpstreamStats {
	return &upstreamStats{m: f.m, to: addr,
		requests: f.m.forwardRequests.WithLabelValues(addr),
		hcFails:  f.m.forwardHCFails.WithLabelValues(addr)}
}

// upstreamStats holds one upstream's counters, with the rcode-labelled ones
// resolved on first use of each rcode.
type upstreamStats struct {
	m        *Metrics
	to       string
	requests prometheus.Counter
	hcFails  prometheus.Counter
	byRcode  [24]atomic.Pointer[rcodeObservers]
}

type rcodeObservers struct {
	responses prometheus.Counter
	duration  prometheus.Observer
}

func (u *upstreamStats) Request()           { u.requests.Inc() }
func (u *upstreamStats) HealthcheckFailed() { u.hcFails.Inc() }

func (u *upstreamStats) Response(rcode int, took time.Duration) {
	var o *rcodeObservers
	if rcode >= 0 && rcode < len(u.byRcode) {
		o = u.byRcode[rcode].Load()
	}
	if o == nil {
		label := rcodeLabel(rcode)
		o = &rcodeObservers{
			responses: u.m.forwardResponses.WithLabelValues(u.to, label),
			duration:  u.m.forwardDuration.WithLabelValues(u.to, label),
		}
		if rcode >= 0 && rcode < len(u.byRcode) {
			u.byRcode[rcode].Store(o)
		}
	}
	o.responses.Inc()
	o.duration.Observe(took.Seconds())
}
