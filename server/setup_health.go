package server

import (
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/coredns/caddy/caddyfile"

	"github.com/clusterdns/clusterdns/resolver"
)

// defaultHealthAddr is where CoreDNS's health directive listens by default.
const defaultHealthAddr = ":8080"

// setupHealth reads "health [ADDRESS] { lameduck DURATION }": answer "OK" at
// http://ADDRESS/health while the process runs, and on shutdown keep serving
// DNS for DURATION before closing the listeners.
func setupHealth(b *Block, d *caddyfile.Dispenser) error {
	const name = "health"
	addr, err := parseHTTPDirective(d, name, defaultHealthAddr, func(prop string, args []string) error {
		if prop != "lameduck" {
			return fmt.Errorf("unknown property %q", prop)
		}
		if len(args) != 1 {
			return fmt.Errorf("lameduck needs one duration")
		}
		dur, err := time.ParseDuration(args[0])
		if err != nil || dur < 0 {
			return fmt.Errorf("lameduck %q is not a duration", args[0])
		}
		b.lameduck = dur.Seconds()
		return nil
	})
	if err != nil {
		return err
	}
	h := &healthHandler{}
	b.handlers = append(b.handlers, httpHandler{addr: addr, path: "/health", handler: h})
	// The link only hands the handler the process's metrics; it adds nothing
	// to the chain.
	b.links[name] = func(env *Env, next resolver.Handler) resolver.Handler {
		h.metrics.Store(env.Metrics)
		return next
	}
	return nil
}

// healthHandler says "OK" while the process runs, timing each answer as
// coredns_health_request_duration_seconds.
type healthHandler struct {
	metrics atomic.Pointer[Metrics]
}

func (h *healthHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	start := time.Now()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "OK")
	if m := h.metrics.Load(); m != nil {
		m.healthDuration.Observe(time.Since(start).Seconds())
	}
}
