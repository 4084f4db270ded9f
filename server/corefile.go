package server

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/coredns/caddy/caddyfile"
	"github.com/miekg/dns"
)

// Config is a parsed and set-up Corefile.
type Config struct {
	File   string
	Blocks []*Block
}

// Block is one server block: the zones and port it serves and what its
// directives configured.
type Block struct {
	File  string
	Line  int
	Zones []string
	Port  string
	// Bind lists the addresses to listen on; empty means every address.
	Bind []string

	// links are the chain's middlewares by directive name; the chain is built
	// in the fixed directive order, not the order of the file.
	links map[string]Link
	// services run for the life of the configuration (sources, HTTP servers).
	services []Service
	// readiness checks must all pass for /ready to say yes.
	readiness []func() bool
	// handlers are HTTP endpoints by listen address and path.
	handlers []httpHandler
	// hooks let directives see the finished chain (e.g. loop detection).
	onStart []func(*Runtime) error
	// settings that server-wide directives set.
	lameduck     float64 // seconds
	reloadPeriod float64 // seconds; zero disables reload
	tcp          tcpSettings
}

// directiveSetup parses one directive's tokens into the block.
type directiveSetup func(b *Block, d *caddyfile.Dispenser) error

// directive pairs a name with its setup.
type directive struct {
	name  string
	setup directiveSetup
}

// directives is the fixed directive order: a query passes the chain's links in
// this order whatever order the Corefile lists them in, as in CoreDNS.
func directives() []directive {
	return []directive{
		{"reload", setupReload},
		{"bind", setupBind},
		{"timeouts", setupTimeouts},
		{"ready", setupReady},
		{"health", setupHealth},
		{"prometheus", setupPrometheus},
		{"pprof", setupPprof},
		{"errors", setupErrors},
		{"log", setupLog},
		{"loadbalance", setupLoadbalance},
		{"cache", setupCache},
		{"autopath", setupAutopath},
		{"kubernetes", setupKubernetes},
		{"loop", setupLoop},
		{"forward", setupForward},
	}
}

// LoadConfig reads and sets up a Corefile.
func LoadConfig(file string) (*Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("corefile: %w", err)
	}
	return ParseConfig(file, data)
}

// ParseConfig sets up a Corefile held in memory; file names it in errors.
func ParseConfig(file string, data []byte) (*Config, error) {
	dirs := directives()
	names := make([]string, len(dirs))
	for i, d := range dirs {
		names[i] = d.name
	}
	blocks, err := caddyfile.Parse(file, bytes.NewReader(data), names)
	if err != nil {
		return nil, tidyParseError(err)
	}
	if len(blocks) == 0 {
		return nil, fmt.Errorf("%s:1: no server blocks", file)
	}
	lines := blockLines(file, data, len(blocks))
	cfg := &Config{File: file}
	seen := make(map[string]string) // zone and port -> where it was declared
	for i, sb := range blocks {
		b := &Block{File: file, Line: lines[i], links: make(map[string]Link)}
		if err := b.parseKeys(sb); err != nil {
			return nil, err
		}
		for _, z := range b.Zones {
			k := z + ":" + b.Port
			if where, dup := seen[k]; dup {
				return nil, fmt.Errorf("%s:%d: zone %s on port %s is already served by the block at %s", file, b.Line, z, b.Port, where)
			}
			seen[k] = file + ":" + strconv.Itoa(b.Line)
		}
		for _, d := range dirs {
			tokens, ok := sb.Tokens[d.name]
			if !ok {
				continue
			}
			disp := caddyfile.NewDispenserTokens(file, tokens)
			if err := d.setup(b, &disp); err != nil {
				return nil, tidyParseError(err)
			}
		}
		cfg.Blocks = append(cfg.Blocks, b)
	}
	return cfg, nil
}

// parseKeys reads the block's addresses: ZONE[:PORT], with an optional dns://.
func (b *Block) parseKeys(sb caddyfile.ServerBlock) error {
	for _, key := range sb.Keys {
		host, port := key, "53"
		host = strings.TrimPrefix(host, "dns://")
		if strings.Contains(host, "://") {
			return fmt.Errorf("%s:%d: server block %q: only dns:// is supported", b.File, b.Line, key)
		}
		if h, p, err := net.SplitHostPort(host); err == nil {
			host, port = h, p
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("%s:%d: server block %q: bad port %q", b.File, b.Line, key, port)
		}
		if b.Port != "" && b.Port != port {
			return fmt.Errorf("%s:%d: server block %q: every address of a block must use the same port", b.File, b.Line, key)
		}
		b.Port = port
		zone := dns.Fqdn(strings.ToLower(host))
		if _, ok := dns.IsDomainName(zone); !ok {
			return fmt.Errorf("%s:%d: server block %q: %q is not a domain name", b.File, b.Line, key, host)
		}
		b.Zones = append(b.Zones, zone)
	}
	sort.Strings(b.Zones)
	return nil
}

// blockLines finds the line each of the n server blocks starts on, for
// errors about a block's addresses: caddyfile keeps no position for them.
// Blocks start at the top level, after the closing brace of the previous
// one. Snippets and imports make the count differ; blocks then report the
// first line.
func blockLines(file string, data []byte, n int) []int {
	lines := make([]int, 0, n)
	d := caddyfile.NewDispenser(file, bytes.NewReader(data))
	depth, start := 0, true
	for d.Next() {
		switch v := d.Val(); {
		case v == "{":
			depth++
		case v == "}":
			if depth--; depth == 0 {
				start = true
			}
		case depth == 0 && start:
			start = false
			if !strings.HasPrefix(v, "(") {
				lines = append(lines, d.Line())
			}
		}
	}
	if len(lines) != n {
		lines = lines[:0]
		for range n {
			lines = append(lines, 1)
		}
	}
	return lines
}

var caddyError = regexp.MustCompile(`(?s)^(.*?):(\d+) - (?:Error during parsing|Syntax error): (.*)$`)

// tidyParseError turns caddyfile's "FILE:LINE - Error during parsing: MSG"
// into the "FILE:LINE: MSG" form every other error uses.
func tidyParseError(err error) error {
	if m := caddyError.FindStringSubmatch(err.Error()); m != nil {
		return errors.New(m[1] + ":" + m[2] + ": " + m[3])
	}
	return err
}

// errAt reports a problem at the dispenser's current token, naming the
// directive: "Corefile:12: kubernetes: unknown property \"bogus\"".
func errAt(d *caddyfile.Dispenser, directive, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s: %s", d.File(), d.Line(), directive, fmt.Sprintf(format, args...))
}

// zonesArg normalises a list of zone arguments, defaulting to the block's.
func zonesArg(b *Block, args []string) []string {
	if len(args) == 0 {
		return append([]string(nil), b.Zones...)
	}
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = dns.Fqdn(strings.ToLower(a))
	}
	return out
}

// nextOnce advances to the directive's next use, failing on a second one:
// caddyfile gathers every use of a directive in a block into one token list.
func nextOnce(d *caddyfile.Dispenser, name string, uses *int) (bool, error) {
	if !d.Next() {
		return false, nil
	}
	*uses++
	if *uses > 1 {
		return false, errAt(d, name, "given more than once in this server block")
	}
	return true, nil
}
