// Package healthcheck serves the per-Service health checks that cloud load
// balancers poll on a node: for every LoadBalancer Service with
// externalTrafficPolicy: Local, an HTTP server on its healthCheckNodePort
// that answers 200 while this node has ready endpoints of the Service (and
// the agent is healthy) and 503 otherwise, so that the load balancer sends
// external traffic only to nodes that keep it local. The answers follow
// kube-proxy's: a JSON body naming the Service, the number of local
// endpoints and the agent's health.
//
// The package reads zone snapshots and opens listeners; it never touches
// the packet filter. Servers are opened and closed as Services come and go,
// and a port that cannot be opened is logged and retried at the next sync
// rather than stopping the agent.
package healthcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterdns/clusterdns/zone"
)

// Config configures Servers.
type Config struct {
	// NodeName is this node: endpoints whose nodeName matches are local.
	NodeName string
	// Addresses are the local addresses to listen on; empty means every
	// address (kube-proxy listens on the node port addresses, or on all).
	Addresses []netip.Addr
	// Healthy reports the agent's own health (its /healthz rule); a check
	// answers 503 while it is false. Nil means always healthy.
	Healthy func() bool
	// Listen opens a listener; nil is net.Listen on TCP. Tests replace it.
	Listen func(ctx context.Context, address string) (net.Listener, error)
	Logger *slog.Logger
}

// Servers keeps one health check server per eTP-Local LoadBalancer Service.
type Servers struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex // protects the following fields
	// services are the Services with a server, by Service.
	services map[zone.Key]*check
	closed   bool
}

// check is the health check of one Service.
type check struct {
	key  zone.Key
	port int32
	// local is the number of ready endpoints on this node, read by the
	// handler without the Servers' lock.
	local   atomic.Int64
	servers []*http.Server
}

// New returns Servers with none open; Sync opens them.
func New(cfg Config) *Servers {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Listen == nil {
		cfg.Listen = func(ctx context.Context, address string) (net.Listener, error) {
			var lc net.ListenConfig
			return lc.Listen(ctx, "tcp", address)
		}
	}
	return &Servers{cfg: cfg, log: log, services: map[zone.Key]*check{}}
}

// Wanted returns, for a snapshot, the health check port of every Service
// that needs one and how many ready endpoints it has on node.
func Wanted(c *zone.Cluster, node string) map[zone.Key]Want {
	out := map[zone.Key]Want{}
	for key, svc := range c.Services {
		if svc.Type != zone.TypeLoadBalancer || !svc.ExternalTrafficLocal || svc.HealthCheckNodePort == 0 {
			continue
		}
		out[key] = Want{Port: svc.HealthCheckNodePort, Local: LocalReady(c.SlicesFor(key), node)}
	}
	return out
}

// Want is one Service's health check.
type Want struct {
	Port  int32
	Local int
}

// LocalReady counts the distinct addresses of ready endpoints on node, per
// address family, and returns the larger count: a pod with ports in two
// slices, or with an address of each family, counts once. Serving but
// terminating endpoints do not count, so that load balancers drain a node
// whose last endpoints are going away (KEP-1669).
func LocalReady(slices []*zone.EndpointSlice, node string) int {
	if node == "" {
		return 0
	}
	seen := map[netip.Addr]struct{}{}
	var v4, v6 int
	for _, s := range slices {
		if s.AddressType != zone.AddressIPv4 && s.AddressType != zone.AddressIPv6 {
			continue
		}
		for _, e := range s.Endpoints {
			if !e.Ready || e.NodeName != node {
				continue
			}
			for _, a := range e.Addresses {
				if _, dup := seen[a]; dup {
					continue
				}
				seen[a] = struct{}{}
				if a.Is4() {
					v4++
				} else {
					v6++
				}
			}
		}
	}
	return max(v4, v6)
}

// Sync opens servers for the Services of c that need one, closes those of
// Services that no longer do (or whose port changed), and updates every
// count. A port that cannot be opened is logged and tried again next time.
func (s *Servers) Sync(ctx context.Context, c *zone.Cluster) {
	want := Wanted(c, s.cfg.NodeName)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	for key, hc := range s.services {
		if w, ok := want[key]; !ok || w.Port != hc.port {
			s.log.Info("closing health check", "service", key.String(), "port", hc.port)
			hc.close()
			delete(s.services, key)
		}
	}
	for key, w := range want {
		hc := s.services[key]
		if hc == nil {
			var err error
			if hc, err = s.open(ctx, key, w.Port); err != nil {
				s.log.Error("cannot open health check; retrying at the next sync", "service", key.String(), "port", w.Port, "err", err)
				continue
			}
			s.log.Info("opened health check", "service", key.String(), "port", w.Port)
			s.services[key] = hc
		}
		hc.local.Store(int64(w.Local))
	}
}

// Ports returns the open health check ports by Service, for tests and
// listings.
func (s *Servers) Ports() map[zone.Key]int32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[zone.Key]int32, len(s.services))
	for k, hc := range s.services {
		out[k] = hc.port
	}
	return out
}

// Close closes every server; Sync does nothing afterwards.
func (s *Servers) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, hc := range s.services {
		hc.close()
		delete(s.services, key)
	}
	s.closed = true
}

// open listens on the port at every configured address, all or none.
func (s *Servers) open(ctx context.Context, key zone.Key, port int32) (*check, error) {
	hc := &check{key: key, port: port}
	hosts := []string{""}
	if len(s.cfg.Addresses) > 0 {
		hosts = hosts[:0]
		for _, a := range s.cfg.Addresses {
			hosts = append(hosts, a.String())
		}
	}
	handler := s.handler(hc)
	for _, host := range hosts {
		addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
		ln, err := s.cfg.Listen(ctx, addr)
		if err != nil {
			hc.close()
			return nil, fmt.Errorf("health check of %s: listen %s: %w", key, addr, err)
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
		hc.servers = append(hc.servers, srv)
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("health check server ended", "service", key.String(), "address", addr, "err", err)
			}
		}()
	}
	return hc, nil
}

func (hc *check) close() {
	for _, srv := range hc.servers {
		_ = srv.Close()
	}
	hc.servers = nil
}

// Body is the JSON a health check answers, as kube-proxy's does.
type Body struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

// handler answers any path: load balancers are configured with "/" or
// "/healthz" alike.
func (s *Servers) handler(hc *check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		var b Body
		b.Service.Namespace, b.Service.Name = hc.key.Namespace, hc.key.Name
		b.LocalEndpoints = int(hc.local.Load())
		b.ServiceProxyHealthy = s.cfg.Healthy == nil || s.cfg.Healthy()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		code := http.StatusOK
		if b.LocalEndpoints == 0 || !b.ServiceProxyHealthy {
			code = http.StatusServiceUnavailable
		}
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(b)
	})
}

// Handler returns the handler serving key's health check, or nil when it
// has no server; for tests.
func (s *Servers) Handler(key zone.Key) http.Handler {
	s.mu.Lock()
	defer s.mu.Unlock()
	hc := s.services[key]
	if hc == nil {
		return nil
	}
	return s.handler(hc)
}
