package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/spf13/pflag"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/iptables"
	"github.com/clusterdns/clusterdns/proxy/ipvs"
)

// ipvsOptions are the flags of IPVS mode, named as kube-proxy names them.
type ipvsOptions struct {
	scheduler                             string
	syncPeriod, minSyncPeriod             time.Duration
	strictARP                             bool
	tcpTimeout, tcpFinTimeout, udpTimeout time.Duration
	list                                  bool
}

func (o *ipvsOptions) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.scheduler, "ipvs-scheduler", "rr", "IPVS scheduler: rr, lc, dh, sh, sed, nq, wrr or mh")
	fs.DurationVar(&o.syncPeriod, "ipvs-sync-period", 30*time.Second, "in ipvs mode, how often a full sync reads the kernel and repairs it")
	fs.DurationVar(&o.minSyncPeriod, "ipvs-min-sync-period", time.Second, "in ipvs mode, the shortest time between syncs; changes in between are batched")
	fs.BoolVar(&o.strictARP, "ipvs-strict-arp", false, "set arp_ignore=1 and arp_announce=2, so the node never answers ARP for service addresses")
	fs.DurationVar(&o.tcpTimeout, "ipvs-tcp-timeout", 0, "IPVS timeout of idle TCP connections (0 keeps the kernel's)")
	fs.DurationVar(&o.tcpFinTimeout, "ipvs-tcpfin-timeout", 0, "IPVS timeout of TCP connections after a FIN (0 keeps the kernel's)")
	fs.DurationVar(&o.udpTimeout, "ipvs-udp-timeout", 0, "IPVS timeout of UDP flows (0 keeps the kernel's)")
	fs.BoolVar(&o.list, "list", false, "print the kernel's IPVS table in the layout of ipvsadm -Ln, and exit")
}

func (o *ipvsOptions) validate() error {
	if !slices.Contains(ipvs.Schedulers, o.scheduler) {
		return fmt.Errorf("--ipvs-scheduler %q: want one of %v", o.scheduler, ipvs.Schedulers)
	}
	if o.minSyncPeriod <= 0 || o.syncPeriod < o.minSyncPeriod {
		return fmt.Errorf("--ipvs-min-sync-period %s must be positive and not above --ipvs-sync-period %s", o.minSyncPeriod, o.syncPeriod)
	}
	for _, d := range []time.Duration{o.tcpTimeout, o.tcpFinTimeout, o.udpTimeout} {
		if d < 0 || d%time.Second != 0 {
			return fmt.Errorf("IPVS timeouts must be whole seconds, not negative: %s", d)
		}
	}
	return nil
}

// ipvsBackend builds the IPVS backend from the flags both modes share (in
// the iptables backend's config) and the IPVS ones. When the agent is to
// program IPVS (need), opening the handle loads ip_vs, and a kernel without
// IPVS is an error; otherwise IPVS is used only if already loaded, and
// without it the backend can still clean up the rest and dry-run.
func ipvsBackend(o *ipvsOptions, shared iptables.Config, log *slog.Logger, need bool) (proxy.Backend, func(), error) {
	cfg := ipvs.Config{
		Links:         ipvs.NetlinkLinks{},
		IPSets:        ipvs.NetlinkIPSets{},
		Sysctl:        ipvs.ProcSysctl{},
		Runner:        shared.Runner,
		Scheduler:     o.scheduler,
		StrictARP:     o.strictARP,
		TCPTimeout:    o.tcpTimeout,
		TCPFinTimeout: o.tcpFinTimeout,
		UDPTimeout:    o.udpTimeout,
		Routing:       shared.Routing,
		Logger:        log,
	}
	closer := func() {}
	if need || ipvs.Available() {
		h, err := ipvs.OpenIPVS()
		if err != nil {
			return nil, nil, err
		}
		if !ipvs.Available() {
			h.Close()
			return nil, nil, errors.New("ipvs: the kernel has no IPVS (modprobe ip_vs failed or is missing)")
		}
		cfg.IPVS, closer = h, h.Close
	}
	return ipvs.New(cfg), closer, nil
}

// cleanupOtherModes removes what the other modes left, as kube-proxy does at
// start: before iptables mode runs, the nftables tables and IPVS mode's
// virtual servers, sets, link and chains; before IPVS mode, the iptables
// mode's chains and the nftables tables; and so on.
func cleanupOtherModes(ctx context.Context, current proxy.Backend, all []proxy.Backend, log *slog.Logger) {
	for _, other := range all {
		if other == current {
			continue
		}
		if err := other.Cleanup(ctx); err != nil {
			log.Warn("could not remove what another proxy mode left", "mode", other.Name(), "err", err)
		}
	}
}
