package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/clusterdns/clusterdns/proxy"
	"github.com/clusterdns/clusterdns/proxy/inspect"
	"github.com/clusterdns/clusterdns/proxy/iptables"
	"github.com/clusterdns/clusterdns/proxy/ipvs"
	"github.com/clusterdns/clusterdns/proxy/nftables"
	"github.com/clusterdns/clusterdns/zone"
)

// explainOptions are the flags of `clusterdns explain`.
type explainOptions struct {
	manifests       string
	kubeconfig      string
	context         string
	node            string
	zone            string
	output          string
	proxyMode       string
	iptablesVariant string
	kernel          bool
	timeout         time.Duration
}

func explainFlags(stderr io.Writer) (*pflag.FlagSet, *explainOptions) {
	o := &explainOptions{}
	fs := pflag.NewFlagSet("clusterdns explain", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: clusterdns explain NAME|IP[:PORT] [flags]")
		fmt.Fprintln(stderr, "\nWhat DNS answers for a Service, the Service and its endpoints, and where this node's kernel sends its traffic.")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.manifests, "manifests", "", "read the cluster from this folder (or file) of manifests instead of the Kubernetes API")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file for the Kubernetes API (default: in-cluster configuration)")
	fs.StringVar(&o.context, "context", "", "the kubeconfig context to use")
	fs.StringVar(&o.node, "node", "", "the node whose view to show (default: the host name)")
	fs.StringVar(&o.zone, "zone", "cluster.local", "the cluster DNS zone")
	fs.StringVarP(&o.output, "output", "o", "text", "output format: text or json")
	fs.StringVar(&o.proxyMode, "proxy-mode", "", "which mode's rules to read back: iptables, nftables or ipvs (default: the one found)")
	fs.StringVar(&o.iptablesVariant, "iptables-variant", "", "in iptables mode, which tools to read with: nft or legacy (default: nft, then legacy where legacy tables exist)")
	fs.BoolVar(&o.kernel, "kernel", true, "read this node's rules back and compare them with the model (needs root)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the cluster to load")
	return fs, o
}

// runExplain answers "why does my Service not answer?" in one view; see
// explainReport for what it shows.
func runExplain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, o := explainFlags(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("want one NAME or IP[:PORT], got %d arguments", fs.NArg())
	}
	if o.output != "text" && o.output != "json" {
		return fmt.Errorf("-o %q: want text or json", o.output)
	}
	if o.proxyMode != "" && o.proxyMode != "iptables" && o.proxyMode != "nftables" && o.proxyMode != "ipvs" {
		return fmt.Errorf("--proxy-mode %q: want iptables, nftables or ipvs", o.proxyMode)
	}
	if o.iptablesVariant != "" && o.iptablesVariant != "nft" && o.iptablesVariant != "legacy" {
		return fmt.Errorf("--iptables-variant %q: want nft, legacy or empty", o.iptablesVariant)
	}
	// Only warnings reach stderr: the report is the output.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	klog.SetSlogLogger(log)
	src, err := o.source(log)
	if err != nil {
		return err
	}
	loadCtx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	c, err := firstSnapshot(loadCtx, src)
	if err != nil {
		return fmt.Errorf("load the cluster: %w", err)
	}
	node := o.node
	if node == "" {
		node, _ = os.Hostname()
	}
	in := explainInput{query: fs.Arg(0), zone: o.zone, node: node}
	if o.kernel {
		in.readKernel = func() (*inspect.Kernel, error) { return readKernel(ctx, o) }
	}
	r := explain(c, in)
	if o.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	return r.writeText(stdout)
}

func (o *explainOptions) source(log *slog.Logger) (zone.Source, error) {
	if o.manifests != "" {
		if o.kubeconfig != "" || o.context != "" {
			return nil, errors.New("--manifests excludes --kubeconfig and --context")
		}
		return &zone.ManifestSource{Path: o.manifests, Logger: log}, nil
	}
	src, err := zone.NewAPISource(zone.APIConfig{Kubeconfig: o.kubeconfig, Context: o.context, StartupTimeout: o.timeout})
	if err != nil {
		return nil, fmt.Errorf("Kubernetes API source (--kubeconfig/--context): %w", err)
	}
	return src, nil
}

// readKernel finds the mode whose rules this node has and reads them back:
// nftables, then iptables (nft, then legacy), then IPVS, unless
// --proxy-mode names one. It returns nil, with no error, when no mode has rules here.
func readKernel(ctx context.Context, o *explainOptions) (*inspect.Kernel, error) {
	families := []proxy.Family{proxy.IPv4, proxy.IPv6}
	var errs []error
	try := func(mode string) bool { return o.proxyMode == "" || o.proxyMode == mode }
	if try("nftables") {
		if _, err := exec.LookPath("nft"); err == nil || o.proxyMode != "" {
			k, err := nftables.ReadKernel(ctx, nftables.ExecRunner{}, families)
			if k != nil {
				return k, nil
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("nftables: %w", err))
			}
		}
	}
	if try("iptables") {
		// The system's iptables is one of these two; naming them keeps the
		// read from loading legacy tables through a legacy default.
		variants := []string{"nft", "legacy"}
		if o.iptablesVariant != "" {
			variants = []string{o.iptablesVariant}
		}
		for _, v := range variants {
			if v == "legacy" && o.iptablesVariant == "" && !legacyNATLoaded() {
				continue
			}
			r := iptables.ExecRunner{Variant: v}
			// A missing tool is no rule of this variant; an ip6tables that
			// fails (no IPv6 in the kernel) should not hide the IPv4 rules.
			for _, fams := range [][]proxy.Family{families, families[:1]} {
				k, err := iptables.ReadKernel(ctx, r, fams)
				if k != nil {
					return k, nil
				}
				if err == nil {
					break
				}
				if !errors.Is(err, exec.ErrNotFound) && len(fams) == 1 {
					errs = append(errs, fmt.Errorf("iptables %s: %w", v, err))
				}
			}
		}
	}
	if try("ipvs") && ipvs.Available() {
		h, err := ipvs.OpenIPVS()
		if err != nil {
			errs = append(errs, err)
		} else {
			defer h.Close()
			k, err := ipvs.ReadKernel(h)
			if k != nil {
				return k, nil
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return nil, errors.Join(errs...)
}

// legacyNATLoaded reports whether this namespace has a legacy iptables nat
// table. Without one there can be no legacy rules, and iptables-legacy-save
// would load the module to list an empty table: a read should not do that.
func legacyNATLoaded() bool {
	b, err := os.ReadFile("/proc/net/ip_tables_names")
	return err == nil && slices.Contains(strings.Fields(string(b)), "nat")
}

// joinComma is for lists in text output.
func joinComma(s []string) string { return strings.Join(s, ", ") }
