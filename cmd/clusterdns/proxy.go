package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/healthcheck"
	"github.com/clusterdns/clusterdns/proxy/iptables"
	"github.com/clusterdns/clusterdns/proxy/ipvs"
	"github.com/clusterdns/clusterdns/proxy/nftables"
	"github.com/clusterdns/clusterdns/zone"
)

// rulesFullSyncPeriod is how often iptables and nftables mode rewrite every
// rule they own; kube-proxy's period for the same.
const rulesFullSyncPeriod = time.Hour

// proxyOptions are the flags of `clusterdns proxy`. Where kube-proxy has a
// flag with the same meaning, ours has its name.
type proxyOptions struct {
	mode              string
	kubeconfig        string
	master            string
	hostname          string
	clusterCIDR       string
	nodePortAddresses []string
	masqueradeAll     bool
	syncPeriod        time.Duration
	minSyncPeriod     time.Duration
	masqueradeBit     int
	healthzAddress    string
	metricsAddress    string
	cleanup           bool
	manifests         string
	dryRun            bool
	iptablesVariant   string
	verbosity         int
	nodeLocalDNS      string
	nodeLocalDNSSvc   string
	ipvs              ipvsOptions
}

func proxyFlags(stderr io.Writer) (*pflag.FlagSet, *proxyOptions) {
	o := &proxyOptions{}
	fs := pflag.NewFlagSet("clusterdns proxy", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.mode, "proxy-mode", "iptables", "which backend programs the routes: iptables, nftables (tables ip and ip6 clusterdns, through the nft tool) or ipvs")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file for the Kubernetes API (default: in-cluster configuration)")
	fs.StringVar(&o.master, "master", "", "address of the Kubernetes API server (overrides the kubeconfig)")
	fs.StringVar(&o.hostname, "hostname-override", "", "the name of this node (default: the host name)")
	fs.StringVar(&o.clusterCIDR, "cluster-cidr", "", "pod range(s), comma-separated, at most one per family: traffic to a cluster IP from outside them is masqueraded")
	fs.StringSliceVar(&o.nodePortAddresses, "nodeport-addresses", nil, "serve node ports only on local addresses in these ranges (default: every local address but loopback)")
	fs.BoolVar(&o.masqueradeAll, "masquerade-all", false, "masquerade all traffic sent to cluster IPs")
	fs.DurationVar(&o.syncPeriod, "iptables-sync-period", 30*time.Second, "in iptables and nftables mode, the longest time between syncs (all rules are rewritten hourly and after a failure)")
	fs.DurationVar(&o.minSyncPeriod, "iptables-min-sync-period", time.Second, "in iptables and nftables mode, the shortest time between syncs; changes in between are batched")
	fs.IntVar(&o.masqueradeBit, "iptables-masquerade-bit", 13, "the packet mark bit (0-31) asking for masquerade; kube-proxy uses 14, so 13 lets both run side by side")
	fs.StringVar(&o.healthzAddress, "healthz-bind-address", "0.0.0.0:10256", "address of /healthz (as kube-proxy's: 503 once a change has waited twice the sync period for a successful sync); empty disables it")
	fs.StringVar(&o.metricsAddress, "metrics-bind-address", "127.0.0.1:10249", "address of /metrics; empty disables it")
	fs.BoolVar(&o.cleanup, "cleanup", false, "remove every rule the agent ever programmed, then exit")
	fs.StringVar(&o.manifests, "manifests", "", "read the cluster from this folder (or file) of manifests, watched, instead of the Kubernetes API")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print what would be programmed (iptables: the iptables-restore input; nftables: the nft script; ipvs: the table as ipvsadm -Ln shows it), change nothing, and exit")
	fs.StringVar(&o.iptablesVariant, "iptables-variant", "", "which iptables tools to run: empty for the system's iptables, nft or legacy")
	fs.IntVarP(&o.verbosity, "v", "v", 0, "log verbosity: 0 info, 4 and more debug")
	fs.StringVar(&o.nodeLocalDNS, "node-local-dns", "", "the node-local DNS cache's link-local address (169.254.20.10): routed to --node-local-dns-service while no cache on the node is bound to it (iptables and nftables modes)")
	fs.StringVar(&o.nodeLocalDNSSvc, "node-local-dns-service", "kube-system/kube-dns", "namespace/name of the Service --node-local-dns falls back to")
	o.ipvs.addFlags(fs)
	return fs, o
}

// dnsAlias reads --node-local-dns. IPVS mode refuses it: IPVS takes every
// packet to an address it serves at input, whether or not the cache's socket
// is bound, so the alias would always steal the cache's queries.
func (o *proxyOptions) dnsAlias() (proxy.ServiceAlias, error) {
	if o.nodeLocalDNS == "" {
		return proxy.ServiceAlias{}, nil
	}
	addr, err := netip.ParseAddr(o.nodeLocalDNS)
	if err != nil {
		return proxy.ServiceAlias{}, fmt.Errorf("--node-local-dns: %w", err)
	}
	if o.mode == "ipvs" {
		return proxy.ServiceAlias{}, errors.New("--node-local-dns: IPVS mode would take the cache's queries even while it is alive; use it in iptables or nftables mode")
	}
	ns, name, ok := strings.Cut(o.nodeLocalDNSSvc, "/")
	if !ok || ns == "" || name == "" {
		return proxy.ServiceAlias{}, fmt.Errorf("--node-local-dns-service %q: want namespace/name", o.nodeLocalDNSSvc)
	}
	return proxy.ServiceAlias{Service: zone.Key{Namespace: ns, Name: name}, Addr: addr.Unmap()}, nil
}

// runProxy is the node agent; see proxy/.
func runProxy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, o := proxyFlags(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	level := slog.LevelInfo
	if o.verbosity >= 4 {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	mode, ok := proxyModeNamed(o.mode)
	if !ok {
		return fmt.Errorf("--proxy-mode %q: want %s", o.mode, modeNames())
	}
	cfg, err := o.backendConfig(log)
	if err != nil {
		return err
	}
	if err := o.ipvs.validate(); err != nil {
		return err
	}
	alias, err := o.dnsAlias()
	if err != nil {
		return err
	}
	// Every mode's backend is built: the one chosen runs, the others clean
	// up what an earlier run of theirs left.
	var backend proxy.Backend
	var all []proxy.Backend
	for _, m := range proxyModes() {
		env := backendEnv{o: o, shared: cfg, log: log, active: m.name == o.mode && !o.dryRun && !o.cleanup}
		b, closeBackend, err := m.build(env)
		if err != nil {
			return err
		}
		defer closeBackend()
		if m.name == o.mode {
			backend = b
		}
		all = append(all, b)
	}
	minSyncPeriod, syncPeriod, fullSyncPeriod := mode.periods(o)

	if o.ipvs.list {
		for _, b := range all {
			if b, ok := b.(*ipvs.Backend); ok {
				return b.List(stdout)
			}
		}
	}
	if o.cleanup {
		for _, b := range all {
			if err := b.Cleanup(ctx); err != nil {
				return err
			}
		}
		log.Info("removed every rule clusterdns programmed, in every mode")
		return nil
	}

	source, err := o.source(log)
	if err != nil {
		return err
	}
	if o.dryRun {
		c, err := firstSnapshot(ctx, source)
		if err != nil {
			return err
		}
		return backend.DryRun(proxy.BuildNodeModelAlias(nil, c, o.nodeName(), alias), stdout)
	}

	cleanupOtherModes(ctx, backend, all, log)
	warnIfNotForwarding(log)
	node := o.nodeName()
	var agent *proxy.Agent
	checks := healthcheck.New(healthcheck.Config{
		NodeName:  node,
		Addresses: localAddresses(cfg.NodePortAddresses, log),
		Healthy: func() bool {
			ok, _, _ := agent.Healthy()
			return ok
		},
		Logger: log,
	})
	defer checks.Close()
	agent = proxy.NewAgent(proxy.Config{
		Source:         source,
		Backend:        backend,
		NodeName:       node,
		DNSAlias:       alias,
		Conntrack:      proxy.NetlinkConntrack{},
		MinSyncPeriod:  minSyncPeriod,
		SyncPeriod:     syncPeriod,
		FullSyncPeriod: fullSyncPeriod,
		Logger:         log,
		Synced:         checks.Sync,
	})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	serveErr := make(chan error, 2)
	for _, srv := range []struct {
		addr     string
		handlers map[string]http.Handler
	}{
		{o.healthzAddress, map[string]http.Handler{"/healthz": agent.HealthHandler(), "/livez": agent.LiveHandler()}},
		{o.metricsAddress, map[string]http.Handler{"/metrics": agent.MetricsHandler()}},
	} {
		if srv.addr == "" {
			continue
		}
		mux := http.NewServeMux()
		for path, h := range srv.handlers {
			mux.Handle(path, h)
		}
		if err := serveHTTP(ctx, srv.addr, mux, serveErr); err != nil {
			return err
		}
	}
	log.Info("node agent starting", "mode", o.mode, "node", node, "healthz", o.healthzAddress, "metrics", o.metricsAddress)
	agentErr := make(chan error, 1)
	go func() { agentErr <- agent.Run(ctx) }()
	select {
	case err := <-agentErr:
		return err
	case err := <-serveErr:
		cancel()
		<-agentErr
		return err
	}
}

// backendEnv is what a mode's backend is built from.
type backendEnv struct {
	o *proxyOptions
	// shared holds the options every mode reads, and the iptables runner.
	shared iptables.Config
	log    *slog.Logger
	// active is set for the mode that is to program the kernel: not a dry
	// run, not a cleanup.
	active bool
}

// proxyMode is one --proxy-mode: how to build its backend and how often the
// agent syncs it.
type proxyMode struct {
	name string
	// build returns the backend and what to close once the agent is done.
	build func(env backendEnv) (proxy.Backend, func(), error)
	// periods are the agent's minimum sync period, sync period and full
	// sync period.
	periods func(o *proxyOptions) (minSync, sync, fullSync time.Duration)
}

// proxyModes are the modes, in the order --help names them.
//
// In iptables and nftables mode a full rewrite is costly at scale (5 s at
// 10,000 Services, during which changes wait), so, as kube-proxy does, the
// sync period brings a sync that writes only what changed and the whole
// rule set is rewritten hourly (and after any failure). IPVS mode's full
// sync reads the kernel and repairs it every sync period.
func proxyModes() []proxyMode {
	rulesPeriods := func(o *proxyOptions) (time.Duration, time.Duration, time.Duration) {
		return o.minSyncPeriod, o.syncPeriod, rulesFullSyncPeriod
	}
	return []proxyMode{
		{
			name:    "iptables",
			build:   func(env backendEnv) (proxy.Backend, func(), error) { return iptables.New(env.shared), func() {}, nil },
			periods: rulesPeriods,
		},
		{
			name: "nftables",
			build: func(env backendEnv) (proxy.Backend, func(), error) {
				if _, err := exec.LookPath("nft"); err != nil && env.active {
					return nil, nil, fmt.Errorf("--proxy-mode nftables runs the nft tool, which is missing (Debian: apt-get install nftables): %w", err)
				}
				return nftables.New(nftables.Config{
					Runner:  &nftables.NetlinkRunner{Exec: nftables.ExecRunner{}},
					Routing: env.shared.Routing,
					Logger:  env.log,
				}), func() {}, nil
			},
			periods: rulesPeriods,
		},
		{
			name: "ipvs",
			build: func(env backendEnv) (proxy.Backend, func(), error) {
				return ipvsBackend(&env.o.ipvs, env.shared, env.log, env.active || env.o.ipvs.list)
			},
			periods: func(o *proxyOptions) (time.Duration, time.Duration, time.Duration) {
				return o.ipvs.minSyncPeriod, o.ipvs.syncPeriod, o.ipvs.syncPeriod
			},
		},
	}
}

func proxyModeNamed(name string) (proxyMode, bool) {
	for _, m := range proxyModes() {
		if m.name == name {
			return m, true
		}
	}
	return proxyMode{}, false
}

// modeNames is "iptables, nftables or ipvs".
func modeNames() string {
	modes := proxyModes()
	names := make([]string, len(modes))
	for i, m := range modes {
		names[i] = m.name
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

func (o *proxyOptions) backendConfig(log *slog.Logger) (iptables.Config, error) {
	cfg := iptables.Config{
		Runner:  iptables.ExecRunner{Variant: o.iptablesVariant},
		Routing: proxy.Routing{MasqueradeAll: o.masqueradeAll},
		Logger:  log,
	}
	switch o.iptablesVariant {
	case "", "nft", "legacy":
	default:
		return cfg, fmt.Errorf("--iptables-variant %q: want nft, legacy or empty", o.iptablesVariant)
	}
	if o.masqueradeBit < 0 || o.masqueradeBit > 31 {
		return cfg, fmt.Errorf("--iptables-masquerade-bit %d: want 0 to 31", o.masqueradeBit)
	}
	cfg.MasqueradeMark = 1 << o.masqueradeBit
	if o.clusterCIDR != "" {
		seen := map[proxy.Family]bool{}
		for _, s := range strings.Split(o.clusterCIDR, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(s))
			if err != nil {
				return cfg, fmt.Errorf("--cluster-cidr: %w", err)
			}
			if f := proxy.FamilyOf(p.Addr()); seen[f] {
				return cfg, fmt.Errorf("--cluster-cidr %q: more than one %s range", o.clusterCIDR, f)
			} else {
				seen[f] = true
			}
			cfg.ClusterCIDRs = append(cfg.ClusterCIDRs, p)
		}
	}
	for _, s := range o.nodePortAddresses {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return cfg, fmt.Errorf("--nodeport-addresses: %w", err)
		}
		cfg.NodePortAddresses = append(cfg.NodePortAddresses, p)
	}
	if o.minSyncPeriod <= 0 || o.syncPeriod < o.minSyncPeriod {
		return cfg, fmt.Errorf("--iptables-min-sync-period %s must be positive and not above --iptables-sync-period %s", o.minSyncPeriod, o.syncPeriod)
	}
	return cfg, nil
}

// source picks the manifests folder or the Kubernetes API.
func (o *proxyOptions) source(log *slog.Logger) (zone.Source, error) {
	if o.manifests != "" {
		if o.kubeconfig != "" || o.master != "" {
			return nil, errors.New("--manifests excludes --kubeconfig and --master")
		}
		return &zone.ManifestSource{Path: o.manifests, Logger: log}, nil
	}
	src, err := zone.NewAPISource(zone.APIConfig{Kubeconfig: o.kubeconfig, Endpoint: o.master, NodeName: o.nodeName()})
	if err != nil {
		return nil, fmt.Errorf("Kubernetes API source (--kubeconfig/--master): %w", err)
	}
	return src, nil
}

// nodeName is this node's name: --hostname-override, else the host name.
func (o *proxyOptions) nodeName() string {
	if o.hostname != "" {
		return o.hostname
	}
	name, _ := os.Hostname()
	return name
}

// firstSnapshot runs the source until it publishes once.
func firstSnapshot(ctx context.Context, src zone.Source) (*zone.Cluster, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan *zone.Cluster, 1)
	done := make(chan error, 1)
	go func() {
		done <- src.Run(ctx, func(c *zone.Cluster) {
			select {
			case got <- c:
			default:
			}
			cancel()
		})
	}()
	select {
	case c := <-got:
		<-done
		return c, nil
	case err := <-done:
		select {
		case c := <-got:
			return c, nil
		default:
		}
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("source ended before loading: %v", err)
	}
}

// serveHTTP listens at once (so a taken port fails the start) and serves
// until ctx ends.
func serveHTTP(ctx context.Context, addr string, h http.Handler, errs chan<- error) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("serve %s: %w", addr, err)
		}
	}()
	return nil
}

// localAddresses lists this node's addresses in the node port ranges, where
// the Services' health checks listen as kube-proxy's do; nil (listen on
// every address) when no range is set or the addresses cannot be read.
func localAddresses(ranges []netip.Prefix, log *slog.Logger) []netip.Addr {
	if len(ranges) == 0 {
		return nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		log.Warn("cannot list local addresses; health checks listen on all of them", "err", err)
		return nil
	}
	var out []netip.Addr
	for _, a := range addrs {
		ipnet, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipnet.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		for _, r := range ranges {
			if r.Contains(ip) {
				out = append(out, ip)
				break
			}
		}
	}
	if len(out) == 0 {
		log.Warn("no local address in --nodeport-addresses; health checks listen on all of them")
	}
	return out
}

// warnIfNotForwarding says so when the node does not route packets: node
// ports and pod traffic to other nodes' pods need it.
func warnIfNotForwarding(log *slog.Logger) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err == nil && strings.TrimSpace(string(b)) == "0" {
		log.Warn("net.ipv4.ip_forward is 0: node ports and forwarded service traffic will not work")
	}
}
