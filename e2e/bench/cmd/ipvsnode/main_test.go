package main

import (
	"testing"

	"github.com/clusterdns/clusterdns/e2e/internal/promtext"
)

func TestCountIPVS(t *testing.T) {
	table := `IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.96.0.1:443 rr
  -> 127.0.0.1:6443               Masq    1      0          0
TCP  10.100.0.10:80 rr
  -> 10.128.0.1:8080              Masq    1      0          0
  -> 10.128.0.2:8080              Masq    1      0          0
UDP  10.100.0.11:53 rr persistent 10800
`
	tests := []struct {
		name          string
		table         string
		virtual, real int
	}{
		{"empty", "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n", 0, 0},
		{"services and servers", table, 3, 3},
	}
	for _, tt := range tests {
		if v, r := countIPVS(tt.table); v != tt.virtual || r != tt.real {
			t.Errorf("%s: %d virtual, %d real; want %d, %d", tt.name, v, r, tt.virtual, tt.real)
		}
	}
}

func TestMetricValue(t *testing.T) {
	body := `# HELP kubeproxy_sync_proxy_rules_duration_seconds x
kubeproxy_sync_proxy_rules_duration_seconds_sum{ip_family="IPv4"} 2.5
kubeproxy_sync_proxy_rules_duration_seconds_sum{ip_family="IPv6"} 1
kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family="IPv4"} 2
clusterdns_proxy_sync_duration_seconds_count{kind="full"} 3
clusterdns_proxy_sync_duration_seconds_count{kind="partial"} 7
clusterdns_proxy_last_sync_success_timestamp_seconds 1.7e+09
clusterdns_proxy_last_sync_success_timestamp_seconds_extra 5
`
	tests := []struct {
		name   string
		labels []string
		want   float64
		found  bool
	}{
		{"kubeproxy_sync_proxy_rules_duration_seconds_sum", []string{`ip_family="IPv4"`}, 2.5, true},
		{"kubeproxy_sync_proxy_rules_duration_seconds_sum", nil, 3.5, true},
		{"clusterdns_proxy_sync_duration_seconds_count", []string{`kind="full"`}, 3, true},
		{"clusterdns_proxy_last_sync_success_timestamp_seconds", nil, 1.7e9, true},
		{"clusterdns_proxy_sync_duration_seconds_count", []string{`kind="none"`}, 0, false},
		{"missing", nil, 0, false},
	}
	for _, tt := range tests {
		got, found := promtext.Value(body, tt.name, tt.labels...)
		if got != tt.want || found != tt.found {
			t.Errorf("%s %v = %v, %v; want %v, %v", tt.name, tt.labels, got, found, tt.want, tt.found)
		}
	}
}
