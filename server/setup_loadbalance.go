package server

import (
	"github.com/coredns/caddy/caddyfile"

	"github.com/clusterdns/clusterdns/resolver"
)

// setupLoadbalance reads "loadbalance [round_robin]": shuffle the address
// records of every answer.
func setupLoadbalance(b *Block, d *caddyfile.Dispenser) error {
	const name = "loadbalance"
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
		if len(args) > 1 || len(args) == 1 && args[0] != "round_robin" {
			return errAt(d, name, "only the round_robin policy is supported, got %v", args)
		}
		for d.NextBlock() {
			return errAt(d, name, "unknown property %q", d.Val())
		}
	}
	b.links[name] = func(env *Env, next resolver.Handler) resolver.Handler {
		if env.fast != nil {
			env.fast.shuffle = true
		}
		return resolver.NewLoadBalance(next)
	}
	return nil
}
