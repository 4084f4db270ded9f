package server

import (
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy/caddyfile"

	"github.com/clusterdns/clusterdns/resolver"
)

// setupCache reads the cache directive:
//
//	cache [TTL] [ZONES...] {
//	    success CAPACITY [TTL] [MINTTL]
//	    denial CAPACITY [TTL] [MINTTL]
//	    prefetch AMOUNT [[DURATION] [PERCENTAGE%]]
//	    serve_stale [DURATION] [REFRESH_MODE]
//	    disable success|denial [ZONES...]
//	}
func setupCache(b *Block, d *caddyfile.Dispenser) error {
	const name = "cache"
	opts := resolver.CacheOptions{
		Success: resolver.CachePolicy{Capacity: resolver.DefaultCacheCapacity, MaxTTL: resolver.DefaultSuccessMaxTTL, MinTTL: resolver.DefaultCacheMinTTL},
		Denial:  resolver.CachePolicy{Capacity: resolver.DefaultCacheCapacity, MaxTTL: resolver.DefaultDenialMaxTTL, MinTTL: resolver.DefaultCacheMinTTL},
	}
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
		if len(args) > 0 {
			if n, err := strconv.Atoi(args[0]); err == nil {
				if n <= 0 {
					return errAt(d, name, "ttl %q must be positive", args[0])
				}
				opts.Success.MaxTTL = time.Duration(n) * time.Second
				opts.Denial.MaxTTL = opts.Success.MaxTTL
				args = args[1:]
			}
		}
		opts.Zones = zonesArg(b, args)
		for d.NextBlock() {
			if err := cacheProperty(b, d, &opts); err != nil {
				return err
			}
		}
	}
	b.links[name] = func(env *Env, next resolver.Handler) resolver.Handler {
		o := opts
		o.Stats = env.Metrics.cacheStats(env.Server, strings.Join(o.Zones, ","))
		c, err := resolver.NewCache(o, next)
		if err != nil {
			// Capacities were checked above; a failure here is a bug.
			panic(err)
		}
		if env.fast != nil {
			env.fast.caches = append(env.fast.caches, c)
		}
		return c
	}
	return nil
}

func cacheProperty(b *Block, d *caddyfile.Dispenser, o *resolver.CacheOptions) error {
	const name = "cache"
	prop := d.Val()
	args := d.RemainingArgs()
	seconds := func(s string) (time.Duration, error) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return 0, errAt(d, name, "%s: %q is not a whole number of seconds", prop, s)
		}
		return time.Duration(n) * time.Second, nil
	}
	switch prop {
	case "success", "denial":
		p := &o.Success
		if prop == "denial" {
			p = &o.Denial
		}
		if len(args) < 1 || len(args) > 3 {
			return errAt(d, name, "%s: want CAPACITY [TTL] [MINTTL]", prop)
		}
		n, err := strconv.Atoi(args[0])
		if err != nil || n <= 0 {
			return errAt(d, name, "%s: capacity %q must be a positive number", prop, args[0])
		}
		p.Capacity = n
		if len(args) > 1 {
			if p.MaxTTL, err = seconds(args[1]); err != nil {
				return err
			}
			if p.MaxTTL == 0 {
				return errAt(d, name, "%s: ttl must be positive", prop)
			}
		}
		if len(args) > 2 {
			if p.MinTTL, err = seconds(args[2]); err != nil {
				return err
			}
		}
		if p.MinTTL > p.MaxTTL {
			return errAt(d, name, "%s: minimum ttl %v is above the maximum %v", prop, p.MinTTL, p.MaxTTL)
		}
	case "prefetch":
		if len(args) < 1 || len(args) > 3 {
			return errAt(d, name, "prefetch: want AMOUNT [[DURATION] [PERCENTAGE%%]]")
		}
		n, err := strconv.Atoi(args[0])
		if err != nil || n <= 0 {
			return errAt(d, name, "prefetch: amount %q must be a positive number", args[0])
		}
		o.Prefetch = n
		for _, a := range args[1:] {
			if pct, ok := strings.CutSuffix(a, "%"); ok {
				p, err := strconv.Atoi(pct)
				if err != nil || p < 10 || p > 90 {
					return errAt(d, name, "prefetch: percentage %q must be from 10%% to 90%%", a)
				}
				o.PrefetchPercent = p
				continue
			}
			dur, err := time.ParseDuration(a)
			if err != nil || dur <= 0 {
				return errAt(d, name, "prefetch: %q is neither a duration nor a percentage", a)
			}
			o.PrefetchWindow = dur
		}
	case "serve_stale":
		o.ServeStale = resolver.DefaultServeStale
		if len(args) > 2 {
			return errAt(d, name, "serve_stale: want [DURATION] [verify|immediate]")
		}
		if len(args) > 0 {
			dur, err := time.ParseDuration(args[0])
			if err != nil || dur < 0 {
				return errAt(d, name, "serve_stale: %q is not a duration", args[0])
			}
			o.ServeStale = dur
		}
		if len(args) > 1 {
			switch args[1] {
			case "immediate":
			case "verify":
				o.StaleVerify = true
			default:
				return errAt(d, name, "serve_stale: refresh mode %q: want verify or immediate", args[1])
			}
		}
	case "disable":
		if len(args) < 1 {
			return errAt(d, name, "disable: want success|denial [ZONES...]")
		}
		zones := zonesArg(b, args[1:])
		switch args[0] {
		case "success":
			o.Success.Disabled = append(o.Success.Disabled, zones...)
		case "denial":
			o.Denial.Disabled = append(o.Denial.Disabled, zones...)
		default:
			return errAt(d, name, "disable %q: want success or denial", args[0])
		}
	default:
		return errAt(d, name, "unknown property %q", prop)
	}
	return nil
}
