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

// Teardown removes the rules and the interface. What is already gone is
// not an error, so it can run after a crash left half of it behind.
func (a *Agent) Teardown(ctx context.Context) error {
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
	if a.cfg.Interface != "" {
		if err := a.links.Delete(a.cfg.Interface); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Run syncs again every interval until ctx ends, then tears down unless
// skipTeardown. The caller syncs once before, so that the addresses exist
// before the server binds them. Sync errors are logged, never fatal: the
// cache keeps answering on whatever part of the node side is in place.
func (a *Agent) Run(ctx context.Context, interval time.Duration, skipTeardown bool) error {
	sync := func() {
		if err := a.Sync(ctx); err != nil && ctx.Err() == nil {
			a.logger.Error("nodecache: sync node rules", "err", err)
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			sync()
		case <-ctx.Done():
			if skipTeardown {
				a.logger.Info("nodecache: leaving node rules in place (-skipteardown)")
				return nil
			}
			// The parent context is gone; teardown gets its own bound.
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
			defer cancel()
			if err := a.Teardown(tctx); err != nil {
				return fmt.Errorf("nodecache: teardown: %w", err)
			}
			a.logger.Info("nodecache: node rules torn down")
			return nil
		}
	}
}
