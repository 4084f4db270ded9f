package server

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
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
	addr := defaultHealthAddr
	uses := 0
	for {
		ok, err := nextOnce(d, name, &uses)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		args := d.RemainingArgs()
		switch len(args) {
		case 0:
		case 1:
			addr = args[0]
		default:
			return errAt(d, name, "takes at most one address, got %d arguments", len(args))
		}
		for d.NextBlock() {
			switch d.Val() {
			case "lameduck":
				args := d.RemainingArgs()
				if len(args) != 1 {
					return errAt(d, name, "lameduck needs one duration")
				}
				dur, err := time.ParseDuration(args[0])
				if err != nil || dur < 0 {
					return errAt(d, name, "lameduck %q is not a duration", args[0])
				}
				b.lameduck = dur.Seconds()
			default:
				return errAt(d, name, "unknown property %q", d.Val())
			}
		}
	}
	if err := checkListenAddr(addr); err != nil {
		return errAt(d, name, "%v", err)
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

// checkListenAddr validates an HTTP listen address such as ":8080" or
// "127.0.0.1:8080".
func checkListenAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: want [HOST]:PORT", addr)
	}
	if port == "" || strings.ContainsAny(port, " /") {
		return fmt.Errorf("address %q has no port", addr)
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return fmt.Errorf("address %q: host must be an IP address", addr)
	}
	return nil
}
