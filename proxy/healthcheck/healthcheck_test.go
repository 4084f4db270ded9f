package healthcheck

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/zone"
)

const node = "node-a"

func ep(node string, ready, serving, terminating bool, addrs ...string) zone.Endpoint {
	e := zone.Endpoint{NodeName: node, Ready: ready, Serving: serving, Terminating: terminating}
	for _, a := range addrs {
		e.Addresses = append(e.Addresses, netip.MustParseAddr(a))
	}
	return e
}

func slice(name string, family zone.AddressType, eps ...zone.Endpoint) *zone.EndpointSlice {
	return &zone.EndpointSlice{Key: zone.Key{Namespace: "shop", Name: name}, Service: "web", AddressType: family, Endpoints: eps,
		Ports: []zone.EndpointPort{{Name: "http", Protocol: zone.ProtocolTCP, Port: 8080}}}
}

func TestLocalReady(t *testing.T) {
	tests := []struct {
		name   string
		node   string
		slices []*zone.EndpointSlice
		want   int
	}{
		{"none", node, nil, 0},
		{"only other nodes", node, []*zone.EndpointSlice{slice("a", zone.AddressIPv4, ep("node-b", true, true, false, "10.1.0.1"))}, 0},
		{"ready local ones count", node, []*zone.EndpointSlice{slice("a", zone.AddressIPv4,
			ep(node, true, true, false, "10.1.0.1"), ep(node, true, true, false, "10.1.0.2"), ep("node-b", true, true, false, "10.1.0.3"))}, 2},
		{"unready and terminating ones do not", node, []*zone.EndpointSlice{slice("a", zone.AddressIPv4,
			ep(node, false, false, false, "10.1.0.1"), ep(node, false, true, true, "10.1.0.2"))}, 0},
		{"one address in two slices counts once", node, []*zone.EndpointSlice{
			slice("a", zone.AddressIPv4, ep(node, true, true, false, "10.1.0.1")),
			slice("b", zone.AddressIPv4, ep(node, true, true, false, "10.1.0.1"))}, 1},
		{"dual-stack pods count once", node, []*zone.EndpointSlice{
			slice("a", zone.AddressIPv4, ep(node, true, true, false, "10.1.0.1"), ep(node, true, true, false, "10.1.0.2")),
			slice("b", zone.AddressIPv6, ep(node, true, true, false, "fd00::1"), ep(node, true, true, false, "fd00::2"))}, 2},
		{"FQDN slices are not endpoints", node, []*zone.EndpointSlice{slice("a", zone.AddressFQDN, ep(node, true, true, false))}, 0},
		{"no node name, nothing is local", "", []*zone.EndpointSlice{slice("a", zone.AddressIPv4, ep("", true, true, false, "10.1.0.1"))}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := LocalReady(tt.slices, tt.node); got != tt.want {
				t.Errorf("LocalReady = %d, want %d", got, tt.want)
			}
		})
	}
}

// cluster builds a snapshot with the given Services, each with the given
// endpoints in one slice.
func cluster(services map[*zone.Service][]zone.Endpoint) *zone.Cluster {
	b := zone.NewBuilder()
	for svc, eps := range services {
		b.SetService(svc)
		b.SetSlice(&zone.EndpointSlice{Key: zone.Key{Namespace: svc.Namespace, Name: svc.Name + "-a"}, Service: svc.Name,
			AddressType: zone.AddressIPv4, Endpoints: eps})
	}
	return b.Snapshot()
}

func lb(name string, local bool, port int32) *zone.Service {
	return &zone.Service{Key: zone.Key{Namespace: "shop", Name: name}, Type: zone.TypeLoadBalancer,
		ExternalTrafficLocal: local, HealthCheckNodePort: port}
}

func TestWantedOnlyLocalLoadBalancers(t *testing.T) {
	nodePort := lb("np", true, 30001)
	nodePort.Type = zone.TypeNodePort
	c := cluster(map[*zone.Service][]zone.Endpoint{
		lb("local", true, 32000):       {ep(node, true, true, false, "10.1.0.1")},
		lb("empty", true, 32001):       {ep("node-b", true, true, false, "10.1.0.2")},
		lb("cluster", false, 0):        {ep(node, true, true, false, "10.1.0.3")},
		lb("no-port", true, 0):         {ep(node, true, true, false, "10.1.0.4")},
		nodePort:                       {ep(node, true, true, false, "10.1.0.5")},
		lb("terminating", true, 32002): {ep(node, false, true, true, "10.1.0.6")},
	})
	got := Wanted(c, node)
	want := map[zone.Key]Want{
		{Namespace: "shop", Name: "local"}:       {Port: 32000, Local: 1},
		{Namespace: "shop", Name: "empty"}:       {Port: 32001, Local: 0},
		{Namespace: "shop", Name: "terminating"}: {Port: 32002, Local: 0},
	}
	if len(got) != len(want) {
		t.Fatalf("Wanted = %v, want %v", got, want)
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("Wanted[%s] = %+v, want %+v", k, got[k], w)
		}
	}
}

func TestHandlerAnswersLikeKubeProxy(t *testing.T) {
	tests := []struct {
		name     string
		local    int
		healthy  bool
		wantCode int
	}{
		{"local endpoints", 2, true, http.StatusOK},
		{"no local endpoint", 0, true, http.StatusServiceUnavailable},
		{"agent unhealthy", 2, false, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var healthy atomic.Bool
			healthy.Store(tt.healthy)
			s := New(Config{NodeName: node, Healthy: healthy.Load, Listen: loopback(t, nil)})
			defer s.Close()
			var eps []zone.Endpoint
			for i := range tt.local {
				eps = append(eps, ep(node, true, true, false, fmt.Sprintf("10.1.0.%d", i+1)))
			}
			s.Sync(context.Background(), cluster(map[*zone.Service][]zone.Endpoint{lb("web", true, 32000): eps}))
			h := s.Handler(zone.Key{Namespace: "shop", Name: "web"})
			if h == nil {
				t.Fatal("no health check for shop/web")
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
			if rec.Code != tt.wantCode {
				t.Errorf("code %d, want %d", rec.Code, tt.wantCode)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if v := rec.Header().Get("X-Content-Type-Options"); v != "nosniff" {
				t.Errorf("X-Content-Type-Options %q", v)
			}
			var b Body
			if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
				t.Fatalf("body %q: %v", rec.Body.String(), err)
			}
			if b.Service.Namespace != "shop" || b.Service.Name != "web" || b.LocalEndpoints != tt.local || b.ServiceProxyHealthy != tt.healthy {
				t.Errorf("body %+v", b)
			}
		})
	}
}

// loopback returns a Listen that opens a loopback port instead of the one
// asked for, recording which address was asked and where it listens.
func loopback(t *testing.T, opened *sync.Map) func(context.Context, string) (net.Listener, error) {
	return func(ctx context.Context, address string) (net.Listener, error) {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		if opened != nil {
			opened.Store(address, ln.Addr().String())
		}
		return ln, nil
	}
}

func get(t *testing.T, addr string) (int, Body, error) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + addr + "/")
	if err != nil {
		return 0, Body{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, Body{}, err
	}
	var b Body
	err = json.Unmarshal(data, &b)
	return resp.StatusCode, b, err
}

// TestServersFollowTheServices runs real servers on loopback through a
// Service's life: opened with it, counts updated, moved with its port,
// closed when it stops needing one.
func TestServersFollowTheServices(t *testing.T) {
	var opened sync.Map
	s := New(Config{NodeName: node, Addresses: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, Listen: loopback(t, &opened)})
	defer s.Close()
	ctx := context.Background()
	key := zone.Key{Namespace: "shop", Name: "web"}
	where := func(port int32) string {
		v, ok := opened.Load(fmt.Sprintf("192.0.2.1:%d", port))
		if !ok {
			t.Fatalf("nothing listened on 192.0.2.1:%d", port)
		}
		return v.(string)
	}

	s.Sync(ctx, cluster(map[*zone.Service][]zone.Endpoint{lb("web", true, 32000): {ep(node, true, true, false, "10.1.0.1")}}))
	first := where(32000)
	if code, b, err := get(t, first); err != nil || code != http.StatusOK || b.LocalEndpoints != 1 {
		t.Fatalf("with a local endpoint: %d %+v %v", code, b, err)
	}

	s.Sync(ctx, cluster(map[*zone.Service][]zone.Endpoint{lb("web", true, 32000): {ep("node-b", true, true, false, "10.1.0.1")}}))
	if code, b, err := get(t, first); err != nil || code != http.StatusServiceUnavailable || b.LocalEndpoints != 0 {
		t.Fatalf("with the endpoint moved away: %d %+v %v", code, b, err)
	}
	if got := s.Ports(); got[key] != 32000 || len(got) != 1 {
		t.Errorf("Ports = %v", got)
	}

	s.Sync(ctx, cluster(map[*zone.Service][]zone.Endpoint{lb("web", true, 32001): {ep(node, true, true, false, "10.1.0.1")}}))
	if _, _, err := get(t, first); err == nil {
		t.Errorf("the old port still answers after the port changed")
	}
	second := where(32001)
	if code, _, err := get(t, second); err != nil || code != http.StatusOK {
		t.Fatalf("on the new port: %d %v", code, err)
	}

	s.Sync(ctx, cluster(map[*zone.Service][]zone.Endpoint{lb("web", false, 0): {ep(node, true, true, false, "10.1.0.1")}}))
	if _, _, err := get(t, second); err == nil {
		t.Errorf("the check still answers once the Service is eTP Cluster")
	}
	if got := s.Ports(); len(got) != 0 {
		t.Errorf("Ports = %v, want none", got)
	}
}

// TestSyncRetriesAPortItCouldNotOpen: a taken port is logged, not fatal,
// and opened at a later sync.
func TestSyncRetriesAPortItCouldNotOpen(t *testing.T) {
	var fail atomic.Bool
	fail.Store(true)
	ok := loopback(t, nil)
	s := New(Config{NodeName: node, Listen: func(ctx context.Context, address string) (net.Listener, error) {
		if fail.Load() {
			return nil, fmt.Errorf("listen %s: address already in use", address)
		}
		return ok(ctx, address)
	}})
	defer s.Close()
	c := cluster(map[*zone.Service][]zone.Endpoint{lb("web", true, 32000): {ep(node, true, true, false, "10.1.0.1")}})
	s.Sync(context.Background(), c)
	if got := s.Ports(); len(got) != 0 {
		t.Fatalf("Ports = %v after a failed listen", got)
	}
	fail.Store(false)
	s.Sync(context.Background(), c)
	if got := s.Ports(); got[zone.Key{Namespace: "shop", Name: "web"}] != 32000 {
		t.Fatalf("Ports = %v after the retry", got)
	}
}
