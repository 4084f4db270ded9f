package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy/caddyfile"
	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/resolver"
)

// maxUpstreams is CoreDNS's limit on the upstreams of one forward directive.
const maxUpstreams = 15

// setupForward reads the forward directive:
//
//	forward FROM TO... {
//	    except IGNORED_NAMES...
//	    force_tcp
//	    prefer_udp
//	    expire DURATION
//	    max_fails INTEGER
//	    health_check DURATION [no_rec] [domain FQDN]
//	    policy random|round_robin|sequential
//	    max_concurrent MAX
//	}
//
// TO is an address (IP, IP:PORT, dns://IP[:PORT]) or a resolv.conf file
// whose nameservers are used.
func setupForward(b *Block, d *caddyfile.Dispenser) error {
	const name = "forward"
	opts := resolver.ForwardOptions{
		MaxFails:        resolver.DefaultMaxFails,
		Expire:          resolver.DefaultExpire,
		HealthInterval:  resolver.DefaultHealthInterval,
		HealthRecursion: true,
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
		if len(args) < 2 {
			return errAt(d, name, "needs FROM and at least one TO")
		}
		opts.From = dns.Fqdn(strings.ToLower(args[0]))
		if _, ok := dns.IsDomainName(opts.From); !ok {
			return errAt(d, name, "%q is not a domain name", args[0])
		}
		for _, to := range args[1:] {
			addrs, err := upstreamAddrs(to)
			if err != nil {
				return errAt(d, name, "%v", err)
			}
			opts.Upstreams = append(opts.Upstreams, addrs...)
		}
		if len(opts.Upstreams) == 0 {
			return errAt(d, name, "no nameservers found in %v", args[1:])
		}
		if len(opts.Upstreams) > maxUpstreams {
			return errAt(d, name, "more than %d upstreams", maxUpstreams)
		}
		for d.NextBlock() {
			if err := forwardProperty(d, &opts); err != nil {
				return err
			}
		}
	}
	if opts.ForceTCP && opts.PreferUDP {
		return errAt(d, name, "force_tcp and prefer_udp cannot both be set")
	}
	holder := &forwardHolder{}
	b.links[name] = func(env *Env, next resolver.Handler) resolver.Handler {
		o := opts
		o.Stats = forwardStats{m: env.Metrics}
		o.Budget = env.Budget
		f, err := resolver.NewForward(o, next)
		if err != nil {
			// Options were checked above; a failure here is a bug.
			panic(err)
		}
		holder.f = f
		return f
	}
	b.services = append(b.services, ServiceFunc(func(ctx context.Context) error {
		<-ctx.Done()
		if holder.f != nil {
			holder.f.Close()
		}
		return nil
	}))
	return nil
}

// forwardHolder keeps the handler a build made, for its service to close.
type forwardHolder struct{ f *resolver.Forward }

func forwardProperty(d *caddyfile.Dispenser, o *resolver.ForwardOptions) error {
	const name = "forward"
	prop := d.Val()
	args := d.RemainingArgs()
	need := func(n int) error {
		if len(args) != n {
			return errAt(d, name, "%s: want %d argument(s), got %d", prop, n, len(args))
		}
		return nil
	}
	duration := func() (time.Duration, error) {
		if err := need(1); err != nil {
			return 0, err
		}
		dur, err := time.ParseDuration(args[0])
		if err != nil || dur < 0 {
			return 0, errAt(d, name, "%s: %q is not a duration", prop, args[0])
		}
		return dur, nil
	}
	switch prop {
	case "except":
		if len(args) == 0 {
			return errAt(d, name, "except needs at least one name")
		}
		for _, a := range args {
			o.Except = append(o.Except, dns.Fqdn(strings.ToLower(a)))
		}
	case "force_tcp":
		if err := need(0); err != nil {
			return err
		}
		o.ForceTCP = true
	case "prefer_udp":
		if err := need(0); err != nil {
			return err
		}
		o.PreferUDP = true
	case "expire":
		dur, err := duration()
		if err != nil {
			return err
		}
		o.Expire = dur
	case "max_fails":
		if err := need(1); err != nil {
			return err
		}
		n, err := strconv.Atoi(args[0])
		if err != nil || n < 0 {
			return errAt(d, name, "max_fails %q is not a whole number", args[0])
		}
		o.MaxFails = n
	case "health_check":
		if len(args) == 0 {
			return errAt(d, name, "health_check needs a duration")
		}
		dur, err := time.ParseDuration(args[0])
		if err != nil || dur <= 0 {
			return errAt(d, name, "health_check %q is not a positive duration", args[0])
		}
		o.HealthInterval = dur
		for i := 1; i < len(args); i++ {
			switch args[i] {
			case "no_rec":
				o.HealthRecursion = false
			case "domain":
				if i+1 >= len(args) {
					return errAt(d, name, "health_check domain needs a name")
				}
				i++
				o.HealthDomain = dns.Fqdn(args[i])
				if _, ok := dns.IsDomainName(o.HealthDomain); !ok {
					return errAt(d, name, "health_check domain %q is not a domain name", args[i])
				}
			default:
				return errAt(d, name, "health_check: unknown option %q", args[i])
			}
		}
	case "policy":
		if err := need(1); err != nil {
			return err
		}
		switch args[0] {
		case "random":
			o.Policy = resolver.PolicyRandom
		case "round_robin":
			o.Policy = resolver.PolicyRoundRobin
		case "sequential":
			o.Policy = resolver.PolicySequential
		default:
			return errAt(d, name, "policy %q: want random, round_robin or sequential", args[0])
		}
	case "max_concurrent":
		if err := need(1); err != nil {
			return err
		}
		n, err := strconv.ParseInt(args[0], 10, 64)
		if err != nil || n <= 0 {
			return errAt(d, name, "max_concurrent %q is not a positive number", args[0])
		}
		o.MaxConcurrent = n
	case "tls", "tls_servername", "next", "failfast_all_unhealthy_upstreams", "failover":
		return errAt(d, name, "%s is not supported", prop)
	default:
		return errAt(d, name, "unknown property %q", prop)
	}
	return nil
}

// upstreamAddrs turns one TO argument into host:port addresses: an existing
// file is read as resolv.conf, anything else is an address.
func upstreamAddrs(to string) ([]string, error) {
	if strings.Contains(to, "://") && !strings.HasPrefix(to, "dns://") {
		return nil, fmt.Errorf("upstream %q: only plain DNS (dns://) is supported", to)
	}
	if !strings.HasPrefix(to, "dns://") {
		if _, err := os.Stat(to); err == nil {
			cc, err := dns.ClientConfigFromFile(to)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", to, err)
			}
			out := make([]string, 0, len(cc.Servers))
			for _, s := range cc.Servers {
				out = append(out, net.JoinHostPort(s, cc.Port))
			}
			if len(out) == 0 {
				return nil, fmt.Errorf("%s lists no nameserver", to)
			}
			return out, nil
		}
	}
	addr := strings.TrimPrefix(to, "dns://")
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		host, port = strings.Trim(addr, "[]"), "53"
	}
	if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("upstream %q is neither an IP address nor a readable resolv.conf", to)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return nil, fmt.Errorf("upstream %q: bad port", to)
	}
	return []string{net.JoinHostPort(host, port)}, nil
}
