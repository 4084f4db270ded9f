package nodelocal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Agent keeps the node side in place: Sync once, then again every interval,
// and Teardown when asked. It is not safe for concurrent use: Run owns it
// until Run returns.
type Agent struct {
	cfg    Config
	run    Runner
	links  Links
	sets   LeaseSets
	logger *slog.Logger
	// leased is whether the last lease renewal succeeded and no StopSteering
	// came after it: a sync of the nftables table then keeps the lease.
	leased bool
}

// NewAgent returns an agent for cfg, which must be valid.
func NewAgent(cfg Config, run Runner, links Links, sets LeaseSets, logger *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("nodelocal: %w", err)
	}
	return &Agent{cfg: cfg, run: run, links: links, sets: sets, logger: logger}, nil
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
		if a.cfg.FollowSocket {
			// The rules name the set: it must exist before them.
			if err := a.sets.Ensure(leaseSet, a.cfg.ipv6()); err != nil {
				errs = append(errs, err)
				break
			}
		}
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
		if err := a.run.Run(ctx, renderNFTables(a.cfg, true, a.leased), "nft", "-f", "-"); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Renew renews the lease that steers the node's own queries to the cache
// (see Config.FollowSocket). Only a cache whose sockets are bound may call
// it; without FollowSocket there is no lease and it does nothing.
func (a *Agent) Renew(ctx context.Context) error {
	if !a.cfg.FollowSocket {
		return nil
	}
	var err error
	switch a.cfg.Rules {
	case RulesIPTables:
		err = a.sets.Renew(leaseSet, a.cfg.LocalIPs, LeaseTTL)
	case RulesNFTables:
		err = a.run.Run(ctx, nftRenewLease(a.cfg), "nft", "-f", "-")
	default:
		return nil
	}
	a.leased = err == nil
	return err
}

// StopSteering removes only the NOTRACK of queries arriving from pods: a
// cache that is stopping calls it first, so that new queries are tracked
// and take the Service path while those already queued on its socket are
// still answered. Its answers must stay untracked meanwhile: tracked, an
// answer would clash with the entry of the same flow's DNATed queries, and
// conntrack would drop it.
//
// The lease of the node's own queries ends too, for the same reason.
func (a *Agent) StopSteering(ctx context.Context) error {
	a.leased = false
	switch a.cfg.Rules {
	case RulesIPTables:
		j := jumps[0] // raw PREROUTING
		for i := 0; i < 8; i++ {
			if a.run.Run(ctx, nil, a.iptables(), "--wait", "5", "-t", j.table, "-D", j.from, "-j", j.to) != nil {
				break
			}
		}
		if a.cfg.FollowSocket {
			return a.sets.Clear(leaseSet)
		}
	case RulesNFTables:
		return a.run.Run(ctx, renderNFTables(a.cfg, false, false), "nft", "-f", "-")
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
		// Last, once no rule names it; also when this run does not follow
		// the socket, for the set an earlier run left.
		if err := a.sets.Destroy(leaseSet); err != nil {
			errs = append(errs, err)
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

// Run syncs again every interval until ctx ends, and renews the lease every
// LeaseRenew while alive reports the cache's sockets bound. The caller
// syncs once before, so that the addresses exist before the server binds
// them, and tears down after. Errors are logged, never fatal: the cache
// keeps answering on whatever part of the node side is in place.
func (a *Agent) Run(ctx context.Context, interval time.Duration, alive func() bool) {
	t := time.NewTicker(interval)
	defer t.Stop()
	lease := time.NewTicker(LeaseRenew)
	defer lease.Stop()
	failing := false // log a run of failed renewals once
	for {
		select {
		case <-t.C:
			if err := a.Sync(ctx); err != nil && ctx.Err() == nil {
				a.logger.Error("nodecache: sync node rules", "err", err)
			}
		case <-lease.C:
			if !alive() {
				continue
			}
			err := a.Renew(ctx)
			if err != nil && !failing && ctx.Err() == nil {
				a.logger.Error("nodecache: renew the lease of the node's own queries", "err", err)
			}
			failing = err != nil
		case <-ctx.Done():
			return
		}
	}
}
