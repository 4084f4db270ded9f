package server

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/coredns/caddy/caddyfile"
	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/resolver"
)

// setupBind reads "bind ADDR...": the addresses (IPs or interface names) to
// listen on instead of every address.
func setupBind(b *Block, d *caddyfile.Dispenser) error {
	for d.Next() {
		args := d.RemainingArgs()
		if len(args) == 0 {
			return errAt(d, "bind", "needs at least one address")
		}
		for _, a := range args {
			addrs, err := bindAddresses(a)
			if err != nil {
				return errAt(d, "bind", "%v", err)
			}
			b.Bind = append(b.Bind, addrs...)
		}
		if d.NextBlock() {
			return errAt(d, "bind", "takes no block")
		}
	}
	return nil
}

// bindAddresses turns an IP or an interface name into listen addresses.
func bindAddresses(a string) ([]string, error) {
	if ip := net.ParseIP(a); ip != nil {
		return []string{ip.String()}, nil
	}
	iface, err := net.InterfaceByName(a)
	if err != nil {
		return nil, fmt.Errorf("%q is neither an IP address nor an interface", a)
	}
	addrs, err := iface.Addrs()
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", a, err)
	}
	var out []string
	for _, ad := range addrs {
		if ipn, ok := ad.(*net.IPNet); ok && !ipn.IP.IsLinkLocalUnicast() {
			out = append(out, ipn.IP.String())
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("interface %s has no usable address", a)
	}
	return out, nil
}

// setupErrors reads "errors": log queries that fail.
func setupErrors(b *Block, d *caddyfile.Dispenser) error {
	uses := 0
	for {
		ok, err := nextOnce(d, "errors", &uses)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if args := d.RemainingArgs(); len(args) > 0 {
			return errAt(d, "errors", "unexpected argument %q", args[0])
		}
		for d.NextBlock() {
			return errAt(d, "errors", "unknown property %q", d.Val())
		}
	}
	b.links["errors"] = errorsLink
	return nil
}

// setupLog reads "log [NAMES...]": a query log line per answered query, for
// names in the given zones (all of the block's by default).
func setupLog(b *Block, d *caddyfile.Dispenser) error {
	var zones []string
	uses := 0
	for {
		ok, err := nextOnce(d, "log", &uses)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		zones = append(zones, zonesArg(b, d.RemainingArgs())...)
		for d.NextBlock() {
			switch d.Val() {
			case "class":
				// CoreDNS's classes: accepted; every class logs here.
				d.RemainingArgs()
			default:
				return errAt(d, "log", "unknown property %q", d.Val())
			}
		}
	}
	b.links["log"] = func(env *Env, next resolver.Handler) resolver.Handler {
		return resolver.HandlerFunc(func(ctx context.Context, req *resolver.Request) (*dns.Msg, error) {
			start := time.Now()
			m, err := next.Resolve(ctx, req)
			if m != nil && resolver.MatchZone(req.Name, zones) != "" {
				env.Logger.Info(queryLogLine(req, m, time.Since(start)))
			}
			return m, err
		})
	}
	return nil
}

// queryLogLine renders a query in CoreDNS's common log format:
// CLIENT - ID "TYPE CLASS NAME PROTO SIZE DO BUFSIZE" RCODE FLAGS RSIZE DURATION
func queryLogLine(req *resolver.Request, m *dns.Msg, took time.Duration) string {
	proto := "udp"
	if req.TCP {
		proto = "tcp"
	}
	do, bufsize := false, 512
	if opt := req.Msg.IsEdns0(); opt != nil {
		do, bufsize = opt.Do(), int(opt.UDPSize())
	}
	var flags []string
	for _, f := range []struct {
		on   bool
		name string
	}{{m.Response, "qr"}, {m.Authoritative, "aa"}, {m.Truncated, "tc"}, {m.RecursionDesired, "rd"}, {m.RecursionAvailable, "ra"}} {
		if f.on {
			flags = append(flags, f.name)
		}
	}
	return fmt.Sprintf("%s - %d \"%s %s %s %s %d %t %d\" %s %s %d %.9fs",
		req.Client.String(), req.Msg.Id, dns.TypeToString[req.Type], dns.ClassToString[req.Class], req.QName(),
		proto, req.Msg.Len(), do, bufsize, dns.RcodeToString[m.Rcode], strings.Join(flags, ","), m.Len(), took.Seconds())
}

// parseTTL reads a TTL in seconds within [lo, hi].
func parseTTL(d *caddyfile.Dispenser, directive, s string, lo, hi int) (uint32, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, errAt(d, directive, "ttl %q must be a whole number of seconds from %d to %d", s, lo, hi)
	}
	return uint32(n), nil
}
