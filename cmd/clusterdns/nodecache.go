package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/clusterdns/clusterdns/proxy/nodelocal"
	"github.com/clusterdns/clusterdns/server"
)

// configSyncPeriod is how often the base Corefile is read again, as
// node-cache does: a ConfigMap update reaches the file within a minute,
// and the server's reload directive picks up the rewritten Corefile.
const configSyncPeriod = 10 * time.Second

// drainDelay is how long a stopping cache keeps reading its sockets after
// its rules are gone: enough for what was queued before to be answered
// (a full 1 MiB receive buffer is read in well under this), short enough
// not to hold up a restart.
const drainDelay = 300 * time.Millisecond

// teardownTimeout bounds the rule tools at exit.
const teardownTimeout = 20 * time.Second

// nodecacheFlags are node-cache's flags, so the stock NodeLocal DNSCache
// DaemonSet runs us unchanged, plus a few of ours.
type nodecacheFlags struct {
	localIP        string
	conf           string
	baseCorefile   string
	upstreamSvc    string
	setupInterface bool
	setupIPTables  bool
	skipTeardown   bool
	interfaceName  string
	healthPort     int
	syncInterval   secondsDuration
	pidFile        string
	dnsPort        int
	// Ours: which rule set, where the node's resolvers are, log level.
	rules        string
	followSocket bool
	resolvConf   string
	logLevel     string
}

// secondsDuration parses node-cache's -syncinterval: its help says
// seconds, so a bare number is seconds; "1m30s" works too.
type secondsDuration struct{ d time.Duration }

func (s *secondsDuration) String() string { return s.d.String() }

func (s *secondsDuration) Set(v string) error {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		s.d = time.Duration(n * float64(time.Second))
	} else if s.d, err = time.ParseDuration(v); err != nil {
		return err
	}
	if s.d <= 0 {
		return fmt.Errorf("%q is not a positive interval", v)
	}
	return nil
}

// parseNodecacheFlags uses the standard flag package, not pflag: node-cache
// does, and the stock DaemonSet passes single-dash long flags ("-localip"),
// which the standard package takes with one dash or two.
func parseNodecacheFlags(args []string, stderr io.Writer) (*nodecacheFlags, error) {
	f := &nodecacheFlags{syncInterval: secondsDuration{60 * time.Second}}
	fs := flag.NewFlagSet("nodecache", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.localIP, "localip", "", "comma-separated addresses to bind the cache to (169.254.20.10,10.96.0.10)")
	fs.StringVar(&f.conf, "conf", "/etc/Corefile", "the Corefile served, written from -basecorefile with the placeholders filled in")
	fs.StringVar(&f.conf, "corefile", "/etc/Corefile", "same as -conf")
	fs.StringVar(&f.baseCorefile, "basecorefile", "/etc/coredns/Corefile.base", "the Corefile template (the ConfigMap); if missing, -conf is the template")
	fs.StringVar(&f.upstreamSvc, "upstreamsvc", "kube-dns", "the Service whose ClusterIP (<NAME>_SERVICE_HOST) fills __PILLAR__CLUSTER__DNS__")
	fs.BoolVar(&f.setupInterface, "setupinterface", true, "put the local IPs on -interfacename")
	fs.BoolVar(&f.setupIPTables, "setupiptables", true, "keep the NOTRACK and accept rules (see -rules)")
	fs.BoolVar(&f.skipTeardown, "skipteardown", false, "leave the interface and the rules in place on exit")
	fs.StringVar(&f.interfaceName, "interfacename", "nodelocaldns", "the link that holds the local IPs")
	fs.IntVar(&f.healthPort, "health-port", 8080, "TCP port of the health endpoint on the local IPs, accepted by the rules")
	fs.Var(&f.syncInterval, "syncinterval", "how often the interface and rules are checked and repaired (seconds, or a duration)")
	fs.StringVar(&f.pidFile, "pidfile", "", "write the process id here")
	fs.IntVar(&f.dnsPort, "dns.port", 53, "the DNS port the rules match")
	fs.StringVar(&f.rules, "rules", "iptables", "rule set when -setupiptables: iptables or nftables (a table of its own)")
	fs.BoolVar(&f.followSocket, "follow-socket", true, "skip conntrack for queries from pods only while the cache's socket is bound, and for the node's own only while the cache renews its 1 s lease, so both fall back to kube-dns through the Service rules when it dies")
	fs.StringVar(&f.resolvConf, "resolv-conf", "/etc/resolv.conf", "the node's resolv.conf, which fills __PILLAR__UPSTREAM__SERVERS__")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	// Accepted so the stock arguments parse; they configure parts of
	// node-cache that clusterdns has no counterpart for.
	fs.String("metrics-listen-address", "", "ignored: metrics are served by the Corefile's prometheus directive")
	fs.Bool("setupebtables", false, "ignored: no ebtables rules are needed")
	fs.Duration("initialdelay", 0, "ignored: rules are set up at once")
	fs.String("kubednscm", "", "ignored: kube-dns ConfigMap stub domains are not supported")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if f.localIP == "" {
		return nil, errors.New("-localip is required")
	}
	if f.rules != string(nodelocal.RulesIPTables) && f.rules != string(nodelocal.RulesNFTables) {
		return nil, fmt.Errorf("-rules %q: want iptables or nftables", f.rules)
	}
	return f, nil
}

func (f *nodecacheFlags) nodeConfig() (nodelocal.Config, error) {
	cfg := nodelocal.Config{DNSPort: f.dnsPort, HealthPort: f.healthPort, Rules: nodelocal.RulesNone, FollowSocket: f.followSocket}
	for _, s := range strings.Split(f.localIP, ",") {
		ip, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return cfg, fmt.Errorf("-localip: %w", err)
		}
		cfg.LocalIPs = append(cfg.LocalIPs, ip)
	}
	if f.setupInterface {
		cfg.Interface = f.interfaceName
	}
	if f.setupIPTables {
		cfg.Rules = nodelocal.Rules(f.rules)
	}
	return cfg, cfg.Validate()
}

// serviceHostEnv is the variable kubelet sets for a Service's ClusterIP:
// kube-dns-upstream → KUBE_DNS_UPSTREAM_SERVICE_HOST.
func serviceHostEnv(svc string) string {
	return strings.ToUpper(strings.ReplaceAll(svc, "-", "_")) + "_SERVICE_HOST"
}

// fillCorefile substitutes the two placeholders node-cache fills itself;
// the others are the DaemonSet user's, done before the ConfigMap is applied.
func fillCorefile(template []byte, clusterDNS, upstreams string) ([]byte, error) {
	const clusterVar, upstreamVar = "__PILLAR__CLUSTER__DNS__", "__PILLAR__UPSTREAM__SERVERS__"
	s := string(template)
	if strings.Contains(s, clusterVar) {
		if clusterDNS == "" {
			return nil, fmt.Errorf("the Corefile uses %s but the upstream Service's address is not set", clusterVar)
		}
		s = strings.ReplaceAll(s, clusterVar, clusterDNS)
	}
	s = strings.ReplaceAll(s, upstreamVar, upstreams)
	if i := strings.Index(s, "__PILLAR__"); i >= 0 {
		end := min(len(s), i+40)
		return nil, fmt.Errorf("the Corefile still has a placeholder to substitute: %q", s[i:end])
	}
	return []byte(s), nil
}

// renderCorefile writes the filled-in Corefile to f.conf when it changed.
// The write is a rename, so the server's reload never reads half a file.
func (f *nodecacheFlags) renderCorefile(logger *slog.Logger) error {
	src := f.baseCorefile
	template, err := os.ReadFile(src)
	if errors.Is(err, fs.ErrNotExist) {
		src = f.conf
		template, err = os.ReadFile(src)
	}
	if err != nil {
		return fmt.Errorf("corefile template: %w", err)
	}
	data, err := fillCorefile(template, os.Getenv(serviceHostEnv(f.upstreamSvc)), f.resolvConf)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	if old, err := os.ReadFile(f.conf); err == nil && string(old) == string(data) {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.conf), ".Corefile-*")
	if err != nil {
		return fmt.Errorf("write corefile: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write corefile: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write corefile: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.conf); err != nil {
		return fmt.Errorf("write corefile: %w", err)
	}
	logger.Info("nodecache: corefile written", "from", src, "to", f.conf)
	return nil
}

// runNodecache is node-cache's job done by clusterdns: fill in the stock
// Corefile, keep the node side (interface, NOTRACK rules) in place, and
// serve the Corefile with the same server as "serve".
func runNodecache(ctx context.Context, args []string, _, stderr io.Writer) error {
	f, err := parseNodecacheFlags(args, stderr)
	if err != nil {
		return err
	}
	logger, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}
	klog.SetSlogLogger(logger)
	nodeCfg, err := f.nodeConfig()
	if err != nil {
		return err
	}
	if f.pidFile != "" {
		if err := os.WriteFile(f.pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return fmt.Errorf("-pidfile: %w", err)
		}
	}
	if err := f.renderCorefile(logger); err != nil {
		return err
	}
	agent, err := nodelocal.NewAgent(nodeCfg, nodelocal.ExecRunner{}, nodelocal.NetlinkLinks{}, nodelocal.NetlinkSets{}, logger)
	if err != nil {
		return err
	}
	// The addresses must exist before the server binds them; a failure is
	// logged and repaired by the next sync, and the bind error (if any)
	// says the rest.
	if err := agent.Sync(ctx); err != nil {
		logger.Error("nodecache: sync node rules", "err", err)
	}

	// The server gets a context of its own: on SIGTERM the NOTRACK of pod
	// queries goes first and the server stops after drainDelay, so that new
	// queries already take the Service path while those queued on its
	// sockets are answered; the rest of the rules and the link go last.
	srv := server.NewServer(f.conf, logger)
	serveCtx, stopServe := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServe()
	agentCtx, stopAgent := context.WithCancel(ctx)
	var agentWG, wg sync.WaitGroup
	agentWG.Add(1)
	go func() {
		defer agentWG.Done()
		// The lease of the node's own queries is renewed only once the
		// server has bound its sockets (it has a runtime from then on).
		agent.Run(agentCtx, f.syncInterval.d, func() bool { return srv.Runtime() != nil })
	}()
	serveDone := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		t := time.NewTicker(configSyncPeriod)
		defer t.Stop()
		for {
			select {
			case <-agentCtx.Done():
				return
			case <-t.C:
				if err := f.renderCorefile(logger); err != nil {
					logger.Error("nodecache: corefile", "err", err)
				}
			}
		}
	}()
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-serveDone:
			return
		}
		stopAgent()
		agentWG.Wait() // no sync may put the rules back
		if !f.skipTeardown {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
			if err := agent.StopSteering(tctx); err != nil {
				logger.Error("nodecache: stop steering queries to the cache", "err", err)
			}
			cancel()
			time.Sleep(drainDelay)
		}
		stopServe()
	}()
	serveErr := srv.Run(serveCtx)
	close(serveDone)
	stopAgent()
	agentWG.Wait()
	wg.Wait()
	if f.skipTeardown {
		logger.Info("nodecache: leaving the interface and rules in place (-skipteardown)")
		return serveErr
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), teardownTimeout)
	defer cancel()
	if err := agent.Teardown(tctx); err != nil {
		return errors.Join(serveErr, fmt.Errorf("teardown: %w", err))
	}
	logger.Info("nodecache: interface and rules torn down")
	return serveErr
}
