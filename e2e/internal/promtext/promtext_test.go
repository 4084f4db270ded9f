package promtext

import "testing"

const page = `# HELP coredns_dns_requests_total Counter of DNS requests made per zone, protocol and family.
# TYPE coredns_dns_requests_total counter
coredns_dns_requests_total{family="1",proto="udp",server="dns://:53",type="A",zone="."} 7
coredns_dns_requests_total{family="1",proto="udp",server="dns://:53",type="AAAA",zone="."} 2
coredns_dns_requests_total{family="1",proto="tcp",server="dns://:53",type="A",zone="."} 1
# TYPE sync_seconds histogram
sync_seconds_bucket{kind="full",le="1"} 2
sync_seconds_bucket{kind="full",le="+Inf"} 3
sync_seconds_sum{kind="full"} 4.5
sync_seconds_count{kind="full"} 3
sync_seconds_bucket{kind="partial",le="1"} 1
sync_seconds_bucket{kind="partial",le="+Inf"} 1
sync_seconds_sum{kind="partial"} 0.25
sync_seconds_count{kind="partial"} 1
# TYPE last_sync_timestamp_seconds gauge
last_sync_timestamp_seconds 1.7e+09
# TYPE last_sync_timestamp_seconds_extra gauge
last_sync_timestamp_seconds_extra 5
`

func TestValue(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
		found  bool
	}{
		{"coredns_dns_requests_total", nil, 10, true},
		{"coredns_dns_requests_total", []string{`type="A"`}, 8, true},
		{"coredns_dns_requests_total", []string{`type="A"`, `proto="tcp"`}, 1, true},
		{"coredns_dns_requests_total", []string{`type="MX"`}, 0, false},
		{"sync_seconds_count", []string{`kind="full"`}, 3, true},
		{"sync_seconds_sum", nil, 4.75, true},
		{"sync_seconds", nil, 0, false},
		{"last_sync_timestamp_seconds", nil, 1.7e9, true},
		{"missing_total", nil, 0, false},
	} {
		got, found := Value(page, tc.name, tc.labels...)
		if got != tc.want || found != tc.found {
			t.Errorf("Value(%s, %v) = %v, %v; want %v, %v", tc.name, tc.labels, got, found, tc.want, tc.found)
		}
	}
	if _, found := Value("not { a page", "x"); found {
		t.Error("a page that does not parse gave a value")
	}
}
