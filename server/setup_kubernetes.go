package server

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/coredns/caddy/caddyfile"
	"github.com/miekg/dns"

	"github.com/clusterdns/clusterdns/resolver"
	"github.com/clusterdns/clusterdns/zone"
	"github.com/clusterdns/clusterdns/zone/dnsindex"
)

// kubernetesConfig is what a kubernetes block says.
type kubernetesConfig struct {
	index            dnsindex.Options
	fallthroughZones []string
	fallthroughAll   bool

	// manifests, when set, is the folder or file to serve from.
	manifests string
	// The API source's settings, used when manifests is empty.
	api zone.APIConfig
}

// setupKubernetes reads the kubernetes directive:
//
//	kubernetes [ZONES...] {
//	    manifests PATH
//	    endpoint URL
//	    tls CERT KEY CACERT
//	    kubeconfig FILE [CONTEXT]
//	    startup_timeout DURATION
//	    labels SELECTOR
//	    namespace_labels SELECTOR
//	    namespaces NAMESPACE...
//	    pods disabled|insecure|verified
//	    ttl SECONDS
//	    fallthrough [ZONES...]
//	    noendpoints
//	    endpoint_pod_names
//	    ignore empty_service
//	}
func setupKubernetes(b *Block, d *caddyfile.Dispenser) error {
	cfg, err := parseKubernetes(b, d)
	if err != nil {
		return err
	}
	var src zone.Source
	if cfg.manifests != "" {
		src = &zone.ManifestSource{Path: cfg.manifests}
	} else {
		src, err = zone.NewAPISource(cfg.api)
		if err != nil {
			return fmt.Errorf("%s:%d: kubernetes: %w", b.File, b.Line, err)
		}
	}
	holder := &kubernetesHolder{cfg: cfg, source: src}
	b.links["kubernetes"] = holder.link
	b.services = append(b.services, holder)
	b.readiness = append(b.readiness, holder.ready)
	return nil
}

func parseKubernetes(b *Block, d *caddyfile.Dispenser) (*kubernetesConfig, error) {
	const name = "kubernetes"
	cfg := &kubernetesConfig{
		index: dnsindex.Options{TTL: 5, Pods: dnsindex.PodsDisabled},
		api:   zone.APIConfig{StartupTimeout: 5 * time.Second},
	}
	if b.Line == 0 {
		b.Line = d.Line()
	}
	baseDir := filepath.Dir(d.File())
	uses := 0
	for {
		ok, err := nextOnce(d, name, &uses)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		cfg.index.Zones = zonesArg(b, d.RemainingArgs())
		for _, z := range cfg.index.Zones {
			if resolver.MatchZone(z, b.Zones) == "" {
				return nil, errAt(d, name, "zone %s is not inside this server block's zones %v", z, b.Zones)
			}
		}
		for d.NextBlock() {
			prop := d.Val()
			args := d.RemainingArgs()
			need := func(lo, hi int) error {
				if len(args) < lo || hi >= 0 && len(args) > hi {
					return errAt(d, name, "%s: wrong number of arguments (%d)", prop, len(args))
				}
				return nil
			}
			switch prop {
			case "manifests":
				if err := need(1, 1); err != nil {
					return nil, err
				}
				cfg.manifests = args[0]
				if !filepath.IsAbs(cfg.manifests) {
					cfg.manifests = filepath.Join(baseDir, cfg.manifests)
				}
			case "endpoint":
				if err := need(1, 1); err != nil {
					return nil, err
				}
				cfg.api.Endpoint = args[0]
			case "tls":
				if err := need(3, 3); err != nil {
					return nil, err
				}
				cfg.api.CertFile, cfg.api.KeyFile, cfg.api.CAFile = args[0], args[1], args[2]
			case "kubeconfig":
				if err := need(1, 2); err != nil {
					return nil, err
				}
				cfg.api.Kubeconfig = args[0]
				if len(args) == 2 {
					cfg.api.Context = args[1]
				}
			case "startup_timeout":
				if err := need(1, 1); err != nil {
					return nil, err
				}
				dur, err := time.ParseDuration(args[0])
				if err != nil || dur <= 0 {
					return nil, errAt(d, name, "startup_timeout %q is not a positive duration", args[0])
				}
				cfg.api.StartupTimeout = dur
			case "labels":
				if err := need(1, -1); err != nil {
					return nil, err
				}
				cfg.api.Labels = strings.Join(args, " ")
			case "namespace_labels":
				if err := need(1, -1); err != nil {
					return nil, err
				}
				cfg.api.NamespaceLabels = strings.Join(args, " ")
			case "namespaces":
				if err := need(1, -1); err != nil {
					return nil, err
				}
				cfg.index.Namespaces = make(map[string]bool, len(args))
				for _, ns := range args {
					cfg.index.Namespaces[strings.ToLower(ns)] = true
				}
			case "pods":
				if err := need(1, 1); err != nil {
					return nil, err
				}
				switch args[0] {
				case "disabled":
					cfg.index.Pods = dnsindex.PodsDisabled
				case "insecure":
					cfg.index.Pods = dnsindex.PodsInsecure
				case "verified":
					cfg.index.Pods = dnsindex.PodsVerified
				default:
					return nil, errAt(d, name, "pods %q: want disabled, insecure or verified", args[0])
				}
			case "ttl":
				if err := need(1, 1); err != nil {
					return nil, err
				}
				ttl, err := parseTTL(d, name, args[0], 0, 3600)
				if err != nil {
					return nil, err
				}
				cfg.index.TTL = ttl
			case "fallthrough":
				if len(args) == 0 {
					cfg.fallthroughAll = true
				}
				for _, z := range args {
					cfg.fallthroughZones = append(cfg.fallthroughZones, dns.Fqdn(strings.ToLower(z)))
				}
			case "noendpoints":
				if err := need(0, 0); err != nil {
					return nil, err
				}
				cfg.index.NoEndpoints = true
			case "endpoint_pod_names":
				if err := need(0, 0); err != nil {
					return nil, err
				}
				cfg.index.EndpointPodNames = true
			case "ignore":
				if err := need(1, 1); err != nil {
					return nil, err
				}
				if args[0] != "empty_service" {
					return nil, errAt(d, name, "ignore %q: only empty_service is known", args[0])
				}
				cfg.index.IgnoreEmptyService = true
			default:
				return nil, errAt(d, name, "unknown property %q", prop)
			}
		}
	}
	cfg.api.WatchPods = cfg.index.Pods == dnsindex.PodsVerified
	if cfg.manifests != "" && (cfg.api.Endpoint != "" || cfg.api.Kubeconfig != "" || cfg.api.CertFile != "") {
		return nil, errAt(d, name, "manifests cannot be combined with endpoint, tls or kubeconfig")
	}
	return cfg, nil
}

// kubernetesHolder ties a block's source to the handler its chain holds.
type kubernetesHolder struct {
	cfg     *kubernetesConfig
	source  zone.Source
	handler *resolver.Kubernetes
	env     *Env
}

func (h *kubernetesHolder) link(env *Env, next resolver.Handler) resolver.Handler {
	h.env = env
	h.handler = resolver.NewKubernetes(h.cfg.index, h.cfg.fallthroughZones, h.cfg.fallthroughAll, next)
	if env.fast != nil {
		env.fast.k = h.handler
	}
	return h.handler
}

// Run feeds the source's snapshots into the handler until ctx ends.
//
// After the first snapshot it hands the memory of the initial load back to
// the operating system: listing a large cluster and building its index from
// scratch leaves garbage several times the size of what stays live, and
// without this the process keeps that peak as resident memory for minutes.
// Then, after every snapshot, the collector is fitted to the live set (see
// memoryTuner).
func (h *kubernetesHolder) Run(ctx context.Context) error {
	first := true
	if h.env != nil {
		h.env.memory.start()
	}
	return h.source.Run(ctx, func(c *zone.Cluster) {
		start := time.Now()
		ix := h.handler.Update(c)
		if h.env != nil {
			h.env.Metrics.observeUpdate(h.env, c, ix, time.Since(start))
		}
		if first {
			first = false
			debug.FreeOSMemory()
		}
		if h.env != nil {
			h.env.memory.loaded()
		}
	})
}

func (h *kubernetesHolder) ready() bool { return h.handler != nil && h.handler.Ready() }
