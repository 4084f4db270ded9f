package server

import (
	"fmt"
	"net"
	"strings"

	"github.com/coredns/caddy/caddyfile"
)

// parseHTTPDirective reads the shape health, ready and prometheus share:
// "NAME [ADDRESS] { PROPERTY ARGS... }", used at most once per block. Each
// property goes to property, which may be nil when the directive has none.
// It returns the listen address, defaultAddr when none is given.
func parseHTTPDirective(d *caddyfile.Dispenser, name, defaultAddr string, property func(prop string, args []string) error) (string, error) {
	addr := defaultAddr
	uses := 0
	for {
		ok, err := nextOnce(d, name, &uses)
		if err != nil {
			return "", err
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
			return "", errAt(d, name, "takes at most one address, got %d arguments", len(args))
		}
		for d.NextBlock() {
			prop := d.Val()
			if property == nil {
				return "", errAt(d, name, "unknown property %q", prop)
			}
			if err := property(prop, d.RemainingArgs()); err != nil {
				return "", errAt(d, name, "%v", err)
			}
		}
	}
	if err := checkListenAddr(addr); err != nil {
		return "", errAt(d, name, "%v", err)
	}
	return addr, nil
}

// checkListenAddr accepts [HOST]:PORT with an IP (or localhost) host.
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
