package server

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"runtime"
	"strconv"

	"github.com/coredns/caddy/caddyfile"
)

// defaultPprofAddr is where CoreDNS's pprof directive listens by default:
// loopback only, since profiles show the process's insides.
const defaultPprofAddr = "localhost:6053"

// setupPprof reads "pprof [ADDRESS] { block [RATE] }": Go's runtime profiles
// under http://ADDRESS/debug/pprof/. block turns on the blocking profile,
// sampling one blocking event per RATE nanoseconds (default 1: every event).
func setupPprof(b *Block, d *caddyfile.Dispenser) error {
	const name = "pprof"
	blockRate := 0
	addr, err := parseHTTPDirective(d, name, defaultPprofAddr, func(prop string, args []string) error {
		if prop != "block" {
			return fmt.Errorf("unknown property %q", prop)
		}
		blockRate = 1
		switch len(args) {
		case 0:
		case 1:
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 {
				return fmt.Errorf("block rate %q: want a positive number of nanoseconds", args[0])
			}
			blockRate = n
		default:
			return fmt.Errorf("block takes at most one rate, got %d arguments", len(args))
		}
		return nil
	})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	b.handlers = append(b.handlers, httpHandler{addr: addr, path: "/debug/pprof/", handler: mux})
	if blockRate > 0 {
		b.onStart = append(b.onStart, func(*Runtime) error { runtime.SetBlockProfileRate(blockRate); return nil })
	}
	return nil
}
