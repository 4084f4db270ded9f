package server

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/coredns/caddy/caddyfile"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clusterdns/clusterdns/resolver"
)

// defaultMetricsAddr is where CoreDNS's prometheus directive listens by default.
const defaultMetricsAddr = ":9153"

// setupPrometheus reads "prometheus [ADDRESS]": count the block's queries and
// serve every metric at http://ADDRESS/metrics.
func setupPrometheus(b *Block, d *caddyfile.Dispenser) error {
	const name = "prometheus"
	addr, err := parseHTTPDirective(d, name, defaultMetricsAddr, nil)
	if err != nil {
		return err
	}
	h := &metricsHandler{}
	b.handlers = append(b.handlers, httpHandler{addr: addr, path: "/metrics", handler: h})
	b.links[name] = func(env *Env, next resolver.Handler) resolver.Handler {
		h.storeHandler(promhttp.HandlerFor(env.Registry, promhttp.HandlerOpts{}))
		rec := newDNSRecorder(env.Metrics, env.Server, env.Zones)
		if env.fast != nil {
			env.fast.rec, env.fast.recZones = rec, env.Zones
		}
		return prometheusLink(rec, env.Zones, next)
	}
	return nil
}

// metricsHandler serves the registry the chain was built with.
type metricsHandler struct {
	inner atomic.Pointer[http.Handler]
}

func (h *metricsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	inner := h.inner.Load()
	if inner == nil {
		http.Error(w, "metrics not ready", http.StatusServiceUnavailable)
		return
	}
	(*inner).ServeHTTP(w, r)
}

func (h *metricsHandler) storeHandler(x http.Handler) { h.inner.Store(&x) }

// prometheusLink records every client query of the block: count, duration,
// sizes, and the reply's rcode with the handler that produced it. The
// server's own lookups (ExternalName targets) are not client queries.
func prometheusLink(rec *dnsRecorder, zones []string, next resolver.Handler) resolver.Handler {
	return resolver.HandlerFunc(func(ctx context.Context, req *resolver.Request) (*dns.Msg, error) {
		if resolver.Internal(ctx) {
			return next.Resolve(ctx, req)
		}
		start := time.Now()
		answered := resolver.WithResponder(ctx)
		m, err := next.Resolve(answered, req)
		rcode, size := dns.RcodeServerFailure, 0
		switch {
		case err != nil:
		case m == nil:
			rcode = dns.RcodeRefused
		default:
			rcode, size = m.Rcode, m.Len()
		}
		rec.record(req, resolver.MatchZone(req.Name, zones), rcode, answered.Name(), size, time.Since(start))
		return m, err
	})
}
