package server

import "github.com/coredns/caddy/caddyfile"

// Directives that are recognised but not built yet. Each is an error at start
// rather than silently ignored, so a Corefile never means less than it says.

func notBuilt(name string) directiveSetup {
	return func(_ *Block, d *caddyfile.Dispenser) error {
		d.Next()
		return errAt(d, name, "directive is not supported yet")
	}
}

var (
	setupReload      = notBuilt("reload")
	setupReady       = notBuilt("ready")
	setupHealth      = notBuilt("health")
	setupPrometheus  = notBuilt("prometheus")
	setupLoadbalance = notBuilt("loadbalance")
	setupCache       = notBuilt("cache")
	setupAutopath    = notBuilt("autopath")
	setupLoop        = notBuilt("loop")
	setupForward     = notBuilt("forward")
)
