package server

import (
	"io"
	"net/http"
	"sync/atomic"

	"github.com/coredns/caddy/caddyfile"
)

// defaultReadyAddr is where CoreDNS's ready directive listens by default.
const defaultReadyAddr = ":8181"

// setupReady reads "ready [ADDRESS]": http://ADDRESS/ready answers 200 "OK"
// once every source of the configuration has loaded, 503 before.
func setupReady(b *Block, d *caddyfile.Dispenser) error {
	const name = "ready"
	addr, err := parseHTTPDirective(d, name, defaultReadyAddr, nil)
	if err != nil {
		return err
	}
	h := &readyHandler{}
	b.handlers = append(b.handlers, httpHandler{addr: addr, path: "/ready", handler: h})
	b.onStart = append(b.onStart, func(rt *Runtime) error { h.rt.Store(rt); return nil })
	return nil
}

// readyHandler answers for the runtime being served.
type readyHandler struct {
	rt atomic.Pointer[Runtime]
}

func (h *readyHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if rt := h.rt.Load(); rt != nil && rt.Ready() {
		_, _ = io.WriteString(w, "OK")
		return
	}
	w.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(w, "not ready: the cluster zone has not loaded")
}
