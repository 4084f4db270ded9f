package server

import (
	"context"
	"log/slog"
	"net/http"
	"slices"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clusterdns/clusterdns/resolver"
)

// Env is what a link may use when the chain is built: things that outlive one
// configuration, so that a reload keeps counters and log settings.
type Env struct {
	Logger   *slog.Logger
	Registry *prometheus.Registry
	Metrics  *Metrics
	// Server names the block's listen address in metric labels, as CoreDNS
	// spells it: "dns://:53".
	Server string
	Zones  []string
	// Budget bounds the queries waiting on upstreams across the server.
	Budget *resolver.WaitBudget
	// memory is told when a snapshot has loaded; nil for none.
	memory *memoryTuner
	// fast collects what the block's links do on the wire-level fast path;
	// nil when none is wanted.
	fast *fastPlan
}

// Link is one handler of a block's chain: it wraps the rest of the chain.
type Link func(env *Env, next resolver.Handler) resolver.Handler

// Service is something a configuration runs for its lifetime: a source that
// feeds the cluster zone, a health checker. Run returns when ctx ends.
type Service interface {
	Run(ctx context.Context) error
}

// ServiceFunc adapts a function to Service.
type ServiceFunc func(ctx context.Context) error

// Run calls f.
func (f ServiceFunc) Run(ctx context.Context) error { return f(ctx) }

// httpHandler is an HTTP endpoint a directive asks for.
type httpHandler struct {
	addr    string
	path    string
	handler http.Handler
}

// chain builds a block's resolver chain in the fixed directive order.
func (b *Block) chain(env *Env) resolver.Handler {
	var h resolver.Handler = resolver.Refused
	dirs := directives()
	for _, d := range slices.Backward(dirs) {
		if link, ok := b.links[d.name]; ok {
			h = link(env, h)
		}
	}
	return h
}

// route is one zone of a listener and the chain that serves it.
type route struct {
	zone    string
	handler resolver.Handler
	// fast is the chain's wire-level fast path, or nil.
	fast *fastChain
}

// router picks the chain for a query by the longest matching zone.
type router struct {
	routes []route // sorted longest zone first
}

func newRouter(routes []route) *router {
	slices.SortFunc(routes, func(a, b route) int { return len(b.zone) - len(a.zone) })
	return &router{routes: routes}
}

// handler returns the chain for a lower-case name, or nil.
func (r *router) handler(name string) resolver.Handler {
	for _, rt := range r.routes {
		if resolver.InZone(name, rt.zone) {
			return rt.handler
		}
	}
	return nil
}

// errorsLink logs every query that ended in an error.
func errorsLink(env *Env, next resolver.Handler) resolver.Handler {
	return resolver.HandlerFunc(func(ctx context.Context, req *resolver.Request) (*dns.Msg, error) {
		m, err := next.Resolve(ctx, req)
		if err != nil {
			env.Logger.Error("query failed", "name", req.QName(), "type", dns.TypeToString[req.Type], "client", req.Client.String(), "err", err)
		}
		return m, err
	})
}
