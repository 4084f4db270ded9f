package bench

import "testing"

func TestMetricValue(t *testing.T) {
	body := `# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds The last time
kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} 1.7640816e+09
kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv6"} 1.5e+09
kubeproxy_sync_full_proxy_rules_duration_seconds_sum{ip_family="IPv4"} 0.25
kubeproxy_sync_full_proxy_rules_duration_seconds_count{ip_family="IPv4"} 2
clusterdns_proxy_sync_duration_seconds_count{kind="full"} 1
clusterdns_proxy_sync_duration_seconds_count{kind="partial"} 4
clusterdns_proxy_rules 120
clusterdns_proxy_rules_extra 7
`
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
		found  bool
	}{
		{"kubeproxy_sync_proxy_rules_last_timestamp_seconds", []string{`ip_family="IPv4"`}, 1.7640816e+09, true},
		{"kubeproxy_sync_full_proxy_rules_duration_seconds_count", []string{`ip_family="IPv4"`}, 2, true},
		{"clusterdns_proxy_sync_duration_seconds_count", []string{`kind="full"`}, 1, true},
		{"clusterdns_proxy_sync_duration_seconds_count", nil, 5, true},
		{"clusterdns_proxy_rules", nil, 120, true},
		{"clusterdns_proxy_missing", nil, 0, false},
	} {
		got, found := MetricValue(body, c.name, c.labels...)
		if got != c.want || found != c.found {
			t.Errorf("%s %v = %v, %v; want %v, %v", c.name, c.labels, got, found, c.want, c.found)
		}
	}
}
