package server

import (
	"fmt"
	"strings"

	"github.com/coredns/caddy/caddyfile"
	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/resolver"
)

// hostResolvConf supplies the server's own search list to autopath, as a
// Pod's resolv.conf ends with its node's search domains.
const hostResolvConf = "/etc/resolv.conf"

// setupAutopath reads "autopath [ZONES...] @kubernetes": answer a Pod's
// search-path query with the first search candidate that exists. Only the
// kubernetes source of search paths is supported.
func setupAutopath(b *Block, d *caddyfile.Dispenser) error {
	const name = "autopath"
	var zones []string
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
		if len(args) == 0 {
			return errAt(d, name, "needs @kubernetes")
		}
		src := args[len(args)-1]
		if src != "@kubernetes" {
			return errAt(d, name, "search path source %q is not supported; use @kubernetes", src)
		}
		zones = zonesArg(b, args[:len(args)-1])
		for d.NextBlock() {
			return errAt(d, name, "unknown property %q", d.Val())
		}
	}
	var hostSearch []string
	if cc, err := dns.ClientConfigFromFile(hostResolvConf); err == nil {
		for _, s := range cc.Search {
			hostSearch = append(hostSearch, dns.Fqdn(strings.ToLower(s)))
		}
	}
	file, line := d.File(), d.Line()
	linked := false
	b.links[name] = func(_ *Env, next resolver.Handler) resolver.Handler {
		k, ok := next.(*resolver.Kubernetes)
		if !ok {
			return next
		}
		linked = true
		return resolver.NewAutopath(zones, k, hostSearch, next)
	}
	b.onStart = append(b.onStart, func(*Runtime) error {
		if !linked {
			return fmt.Errorf("%s:%d: %s: @kubernetes needs a kubernetes directive in the same server block", file, line, name)
		}
		return nil
	})
	return nil
}
