package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/resolver"
)

// Runtime is a configuration brought to life: every block's chain built and
// grouped by the address it listens on. It opens no socket itself; the Server
// points its listeners at a Runtime's routers and runs its services.
type Runtime struct {
	Config *Config
	// routers by listen address ("127.0.0.1:53", ":53").
	routers map[string]*router
	// tcp are the TCP listeners' limits by listen address.
	tcp       map[string]tcpLimits
	services  []Service
	readiness []func() bool
	// http muxes by listen address.
	http     map[string]*http.ServeMux
	lameduck time.Duration
	// reload is how often the Corefile is checked for changes (zero: never),
	// give or take reloadJitter.
	reload       time.Duration
	reloadJitter time.Duration
	onStart      []func(*Runtime) error
}

// Build turns a Config into a Runtime, using shared for what outlives it.
func Build(cfg *Config, shared Shared) (*Runtime, error) {
	rt := &Runtime{
		Config:  cfg,
		routers: make(map[string]*router),
		http:    make(map[string]*http.ServeMux),
	}
	routes := make(map[string][]route)
	tcp := make(map[string]tcpLimits)
	paths := make(map[string]bool) // addr+path already served
	for _, b := range cfg.Blocks {
		env := &Env{
			Logger:   shared.Logger,
			Registry: shared.Registry,
			Metrics:  shared.Metrics,
			Server:   "dns://:" + b.Port,
			Zones:    b.Zones,
			Budget:   shared.Budget,
			memory:   shared.Memory,
			fast:     &fastPlan{},
		}
		h := b.chain(env)
		fast := env.fast.chain(b)
		for _, addr := range b.listenAddrs() {
			for _, z := range b.Zones {
				routes[addr] = append(routes[addr], route{zone: z, handler: h, fast: fast})
			}
			have, ok := tcp[addr]
			tcp[addr] = mergeTCP(have, ok, b.tcp.limits())
		}
		rt.services = append(rt.services, b.services...)
		rt.readiness = append(rt.readiness, b.readiness...)
		rt.onStart = append(rt.onStart, b.onStart...)
		for _, hh := range b.handlers {
			// Several blocks may ask for the same endpoint (health in each);
			// one serves them all.
			if paths[hh.addr+hh.path] {
				continue
			}
			paths[hh.addr+hh.path] = true
			mux := rt.http[hh.addr]
			if mux == nil {
				mux = http.NewServeMux()
				rt.http[hh.addr] = mux
			}
			mux.Handle(hh.path, hh.handler)
		}
		if d := time.Duration(b.lameduck * float64(time.Second)); d > rt.lameduck {
			rt.lameduck = d
		}
		if d := time.Duration(b.reloadPeriod * float64(time.Second)); d > 0 && (rt.reload == 0 || d < rt.reload) {
			rt.reload = d
		}
	}
	rt.tcp = make(map[string]tcpLimits, len(tcp))
	for addr, rs := range routes {
		rt.routers[addr] = newRouter(rs)
		rt.tcp[addr] = tcp[addr]
	}
	// Lookups the server makes for itself enter where a client's query for
	// the same name would: the block that serves it on the same listener.
	for _, b := range cfg.Blocks {
		r := rt.routers[b.listenAddrs()[0]]
		for _, svc := range b.services {
			if u, ok := svc.(chainUser); ok {
				u.useChain(routerHandler{r})
			}
		}
	}
	return rt, nil
}

// chainUser is a service that needs the finished chains, to resolve names
// through them from the top (as the kubernetes handler does for the targets
// of ExternalName Services).
type chainUser interface {
	useChain(top resolver.Handler)
}

// routerHandler resolves a name with the chain of the block that serves it.
type routerHandler struct{ r *router }

func (h routerHandler) Resolve(ctx context.Context, req *resolver.Request) (*dns.Msg, error) {
	if next := h.r.handler(req.Name); next != nil {
		return next.Resolve(ctx, req)
	}
	return resolver.Refused.Resolve(ctx, req)
}

// useChain lets the cluster zone chase CNAME targets outside it through the
// server's chains, so that cache and forward apply to them.
func (h *kubernetesHolder) useChain(top resolver.Handler) {
	if h.handler != nil {
		h.handler.SetUpstream(top)
	}
}

// listenAddrs are the host:port pairs the block listens on.
func (b *Block) listenAddrs() []string {
	if len(b.Bind) == 0 {
		return []string{net.JoinHostPort("", b.Port)}
	}
	out := make([]string, len(b.Bind))
	for i, a := range b.Bind {
		out[i] = net.JoinHostPort(a, b.Port)
	}
	return out
}

// Addrs lists the DNS listen addresses, sorted.
func (rt *Runtime) Addrs() []string {
	out := make([]string, 0, len(rt.routers))
	for a := range rt.routers {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// Ready reports whether every source has loaded.
func (rt *Runtime) Ready() bool {
	for _, r := range rt.readiness {
		if !r() {
			return false
		}
	}
	return true
}

// runServices starts the runtime's services; it returns a function that stops
// them and waits until they have returned.
func (rt *Runtime) runServices(ctx context.Context, report func(error)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, s := range rt.services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				report(err)
			}
		}()
	}
	return func() { cancel(); wg.Wait() }
}

// httpEndpoint is one HTTP listen address (health, ready, metrics). It
// outlives configurations: a reload swaps the handlers behind it, so that
// probes and scrapes never meet a closed port.
type httpEndpoint struct {
	addr string
	ln   net.Listener
	srv  *http.Server
	mux  atomic.Pointer[http.ServeMux]
}

// listenHTTP binds addr now, so that a busy port fails the configuration
// before anything else changes.
func listenHTTP(addr string) (*httpEndpoint, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	e := &httpEndpoint{addr: addr, ln: ln}
	e.srv = &http.Server{Handler: e, ReadHeaderTimeout: 5 * time.Second}
	return e, nil
}

func (e *httpEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mux.Load().ServeHTTP(w, r)
}

// serve starts answering; the mux must be stored first.
func (e *httpEndpoint) serve(report func(error)) {
	go func() {
		if err := e.srv.Serve(e.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			report(fmt.Errorf("http %s: %w", e.addr, err))
		}
	}()
}

// close stops the endpoint, letting requests in progress finish briefly.
func (e *httpEndpoint) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		e.ln.Close()
	}
}

// describe names the runtime's listeners for logs.
func (rt *Runtime) describe() string {
	var parts []string
	for _, a := range rt.Addrs() {
		var zones []string
		for _, r := range rt.routers[a].routes {
			zones = append(zones, r.zone)
		}
		parts = append(parts, a+" "+strings.Join(zones, ","))
	}
	return strings.Join(parts, "; ")
}
