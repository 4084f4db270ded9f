package nodelocal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Agent keeps the node side in place: Sync once, then again every interval,
// and Teardown when asked.
type Agent struct {
	cfg    Config
	run    Runner
	links  Links
	logger *slog.Logger
}

// NewAgent returns an agent for cfg, which must be valid.
func NewAgent(cfg Config, run Runner, links Links, logger *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("nodelocal: %w", err)
	}
	return &Agent{cfg: cfg, run: run, links: links, logger: logger}, nil
}

func (a *Agent) iptables() string {
	if a.cfg.ipv6() {
		return "ip6tables"
	}
	return "iptables"
}

// Sync puts the interface, its addresses and the rules in place, repairing
// whatever is missing. It is idempotent; every step is tried even when an
// earlier one fails, so a broken rule tool does not also cost the address.
func (a *Agent) Sync(ctx context.Context) error {
	var errs []error
	if a.cfg.Interface != "" {
		if _, err := a.links.Ensure(a.cfg.Interface, a.cfg.LocalIPs); err != nil {
			errs = append(errs, err)
		}
	}
	switch a.cfg.Rules {
	case RulesIPTables:
		if err := a.run.Run(ctx, RenderIPTables(a.cfg), a.iptables()+"-restore", "--noflush", "--wait", "5"); err != nil {
			errs = append(errs, err)
			break
		}
		for _, j := range jumps {
			if a.run.Run(ctx, nil, a.iptables(), "--wait", "5", "-t", j.table, "-C", j.from, "-j", j.to) == nil {
				continue
			}
			// First, so that a NOTRACK or ACCEPT is not shadowed by a rule
			// kube-proxy or a firewall put in front.
			if err := a.run.Run(ctx, nil, a.iptables(), "--wait", "5", "-t", j.table, "-I", j.from, "1", "-j", j.to); err != nil {
				errs = append(errs, err)
			}
		}
	case RulesNFTables:
		if err := a.run.Run(ctx, RenderNFTables(a.cfg), "nft", "-f", "-"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// StopSteering removes only the NOTRACK of queries arriving from pods: a
// cache that is stopping calls it first, so that new queries are tracked
// and take the Service path while those already queued on its socket are
// still answered. Its answers must stay untracked meanwhile: tracked, an
// answer would clash with the entry of the same flow's DNATed queries, and
// conntrack would drop it.
func (a *Agent) StopSteering(ctx context.Context) error {
	switch a.cfg.Rules {
	case RulesIPTables:
		j := jumps[0] // raw PREROUTING
		for i := 0; i < 8; i++ {
			if a.run.Run(ctx, nil, a.iptables(), "--wait", "5", "-t", j.table, "-D", j.from, "-j", j.to) != nil {
				break
			}
		}
	case RulesNFTables:
		return a.run.Run(ctx, renderNFTables(a.cfg, false), "nft", "-f", "-")
	}
	return nil
}

// TeardownRules removes the rules and leaves the interface.
func (a *Agent) TeardownRules(ctx context.Context) error {
	var errs []error
	switch a.cfg.Rules {
	case RulesIPTables:
		for _, j := range jumps {
			// Delete every copy: a second agent or an old version may have
			// inserted the jump again.
			for i := 0; i < 8; i++ {
				if a.run.Run(ctx, nil, a.iptables(), "--wait", "5", "-t", j.table, "-D", j.from, "-j", j.to) != nil {
					break
				}
			}
		}
		for _, j := range jumps {
			if a.run.Run(ctx, nil, a.iptables(), "--wait", "5", "-t", j.table, "-L", j.to, "-n") != nil {
				continue // no such chain
			}
			if err := a.run.Run(ctx, nil, a.iptables(), "--wait", "5", "-t", j.table, "-F", j.to); err != nil {
				errs = append(errs, err)
			}
			if err := a.run.Run(ctx, nil, a.iptables(), "--wait", "5", "-t", j.table, "-X", j.to); err != nil {
				errs = append(errs, err)
			}
		}
	case RulesNFTables:
		if err := a.run.Run(ctx, nftTeardown(), "nft", "-f", "-"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Teardown removes the rules and the interface. What is already gone is
// not an error, so it can run after a crash left half of it behind.
func (a *Agent) Teardown(ctx context.Context) error {
	err := a.TeardownRules(ctx)
	if a.cfg.Interface != "" {
		err = errors.Join(err, a.links.Delete(a.cfg.Interface))
	}
	return err
}

// Run syncs again every interval until ctx ends. The caller syncs once
// before, so that the addresses exist before the server binds them, and
// tears down after. Sync errors are logged, never fatal: the cache keeps
// answering on whatever part of the node side is in place.
func (a *Agent) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := a.Sync(ctx); err != nil && ctx.Err() == nil {
				a.logger.Error("nodecache: sync node rules", "err", err)
			}
		case <-ctx.Done():
			return
		}
	}
}
