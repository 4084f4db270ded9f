package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestReadyFollowsTheRuntime(t *testing.T) {
	loaded := false
	rt := &Runtime{readiness: []func() bool{func() bool { return true }, func() bool { return loaded }}}
	h := &readyHandler{}
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ready", nil))
		return rec.Code, rec.Body.String()
	}
	if code, _ := get(); code != http.StatusServiceUnavailable {
		t.Fatalf("before any runtime: %d, want 503", code)
	}
	h.rt.Store(rt)
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready") {
		t.Fatalf("with a source still loading: %d %q, want 503", code, body)
	}
	loaded = true
	if code, body := get(); code != http.StatusOK || body != "OK" {
		t.Fatalf("once loaded: %d %q, want 200 OK", code, body)
	}
}

func TestHealthSaysOK(t *testing.T) {
	h := &healthHandler{}
	h.metrics.Store(testShared().Metrics)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/health", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "OK" {
		t.Fatalf("%d %q, want 200 OK", rec.Code, rec.Body.String())
	}
}

func TestPprofServesProfiles(t *testing.T) {
	cfg, err := ParseConfig("Corefile", []byte(".:1053 {\n pprof 127.0.0.1:6060\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	hs := cfg.Blocks[0].handlers
	if len(hs) != 1 || hs[0].addr != "127.0.0.1:6060" || hs[0].path != "/debug/pprof/" {
		t.Fatalf("handlers %+v, want /debug/pprof/ on 127.0.0.1:6060", hs)
	}
	for path, want := range map[string]string{"/debug/pprof/": "goroutine", "/debug/pprof/heap?debug=1": "heap profile"} {
		rec := httptest.NewRecorder()
		hs[0].handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("GET %s: %d, body without %q", path, rec.Code, want)
		}
	}
}
