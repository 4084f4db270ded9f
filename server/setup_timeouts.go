package server

import (
	"fmt"
	"strconv"
	"time"

	"github.com/coredns/caddy/caddyfile"
)

// Bounds of the timeouts directive's durations, as in CoreDNS.
const (
	minTimeout = time.Second
	maxTimeout = 24 * time.Hour
)

// tcpSettings are what a block's timeouts directive set; zero means unset.
type tcpSettings struct {
	read, write, idle time.Duration
	maxConns          int
	maxQueries        int // -1: unlimited, said explicitly
}

// setupTimeouts reads CoreDNS's
//
//	timeouts {
//	    read DURATION
//	    write DURATION
//	    idle DURATION
//	    maxtcpqueries MAXIMUM
//	    max_connections MAXIMUM
//	}
//
// for the TCP side of the block's listeners. max_connections is ours: the
// open connections a listener keeps (see tcpServer for what happens at the
// limit).
func setupTimeouts(b *Block, d *caddyfile.Dispenser) error {
	const name = "timeouts"
	uses := 0
	for {
		ok, err := nextOnce(d, name, &uses)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if args := d.RemainingArgs(); len(args) > 0 {
			return errAt(d, name, "unexpected argument %q; the values go in a block", args[0])
		}
		line, set := d.Line(), 0
		for d.NextBlock() {
			prop := d.Val()
			args := d.RemainingArgs()
			if len(args) != 1 {
				return errAt(d, name, "%s needs one value, got %d", prop, len(args))
			}
			switch prop {
			case "read", "write", "idle":
				dur, err := time.ParseDuration(args[0])
				if err != nil || dur < minTimeout || dur > maxTimeout {
					return errAt(d, name, "%s %q must be a duration from %v to %v", prop, args[0], minTimeout, maxTimeout)
				}
				switch prop {
				case "read":
					b.tcp.read = dur
				case "write":
					b.tcp.write = dur
				default:
					b.tcp.idle = dur
				}
			case "maxtcpqueries":
				n, err := strconv.Atoi(args[0])
				if err != nil || n == 0 || n < -1 {
					return errAt(d, name, "maxtcpqueries %q must be a positive number, or -1 for no limit", args[0])
				}
				b.tcp.maxQueries = n
			case "max_connections":
				n, err := strconv.Atoi(args[0])
				if err != nil || n < 1 {
					return errAt(d, name, "max_connections %q must be a positive number", args[0])
				}
				b.tcp.maxConns = n
			default:
				return errAt(d, name, "unknown property %q", prop)
			}
			set++
		}
		if set == 0 {
			return fmt.Errorf("%s:%d: %s: give at least one of read, write, idle, maxtcpqueries, max_connections, or leave the directive out", d.File(), line, name)
		}
	}
	return nil
}

// mergeTCP folds the limits of a block (its settings with the defaults
// filled in) into those of a listener it shares with others: the most
// generous value wins, so no block's clients get less than it asked for, nor
// less than the defaults it left alone. ok is false for the listener's first
// block.
func mergeTCP(l tcpLimits, ok bool, b tcpLimits) tcpLimits {
	if !ok {
		return b
	}
	l.read = max(l.read, b.read)
	l.write = max(l.write, b.write)
	l.idle = max(l.idle, b.idle)
	l.maxConns = max(l.maxConns, b.maxConns)
	if l.maxQueries == 0 || b.maxQueries == 0 { // 0: never closed
		l.maxQueries = 0
	} else {
		l.maxQueries = max(l.maxQueries, b.maxQueries)
	}
	return l
}

// limits fills what was not set with the defaults.
func (t tcpSettings) limits() tcpLimits {
	l := defaultTCPLimits()
	if t.read > 0 {
		l.read = t.read
	}
	if t.write > 0 {
		l.write = t.write
	}
	if t.idle > 0 {
		l.idle = t.idle
	}
	if t.maxConns > 0 {
		l.maxConns = t.maxConns
	}
	if t.maxQueries > 0 {
		l.maxQueries = t.maxQueries
	}
	return l
}
