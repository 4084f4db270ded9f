package server

import (
	"time"

	"github.com/coredns/caddy/caddyfile"
)

// Defaults and bounds of the reload directive, as in CoreDNS.
const (
	defaultReloadInterval = 30 * time.Second
	defaultReloadJitter   = 15 * time.Second
	minReloadInterval     = 2 * time.Second
	minReloadJitter       = time.Second
)

// setupReload reads "reload [INTERVAL] [JITTER]": check the Corefile every
// INTERVAL (give or take JITTER) and serve it anew when its content changed.
func setupReload(b *Block, d *caddyfile.Dispenser) error {
	const name = "reload"
	interval, jitter := defaultReloadInterval, defaultReloadJitter
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
		if len(args) > 2 {
			return errAt(d, name, "want [INTERVAL] [JITTER], got %d arguments", len(args))
		}
		if len(args) > 0 {
			dur, err := time.ParseDuration(args[0])
			if err != nil || dur < minReloadInterval {
				return errAt(d, name, "interval %q must be a duration of at least %v", args[0], minReloadInterval)
			}
			interval = dur
			jitter = interval / 2
		}
		if len(args) > 1 {
			dur, err := time.ParseDuration(args[1])
			if err != nil || dur < minReloadJitter {
				return errAt(d, name, "jitter %q must be a duration of at least %v", args[1], minReloadJitter)
			}
			jitter = dur
		}
		if jitter > interval/2 {
			return errAt(d, name, "jitter %v must be at most half the interval %v", jitter, interval)
		}
		for d.NextBlock() {
			return errAt(d, name, "unknown property %q", d.Val())
		}
	}
	b.reloadPeriod = interval.Seconds()
	b.onStart = append(b.onStart, func(rt *Runtime) error {
		if jitter > rt.reloadJitter {
			rt.reloadJitter = jitter
		}
		return nil
	})
	return nil
}
