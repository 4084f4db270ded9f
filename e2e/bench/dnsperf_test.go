package bench

import (
	"strings"
	"testing"
	"time"
)

const perfOutput = `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 5399 -d /tmp/q.txt -l 2 -c 4 -v
> NOERROR svc-1.ns-1.svc.cluster.local A 0.000300
> NXDOMAIN missing-1.ns-1.svc.cluster.local A 0.000100
> NOERROR svc-2.ns-1.svc.cluster.local A 0.000200
[Timeout] Query timed out: msg id 1190
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         65724
  Queries completed:    65661 (99.90%)
  Queries lost:         63 (0.10%)

  Response codes:       NOERROR 65000 (98.99%), NXDOMAIN 661 (1.01%)
  Average packet size:  request 39, response 39
  Run time (s):         3.000044
  Queries per second:   21886.678995

  Average Latency (s):  0.006637 (min 0.000035, max 0.091501)
  Latency StdDev (s):   0.005872
`

func TestParsePerf(t *testing.T) {
	p, err := ParsePerf([]byte(perfOutput))
	if err != nil {
		t.Fatal(err)
	}
	if p.Sent != 65724 || p.Completed != 65661 || p.Lost != 63 {
		t.Errorf("counts %d/%d/%d", p.Sent, p.Completed, p.Lost)
	}
	if p.QPS < 21886 || p.QPS > 21887 {
		t.Errorf("qps %v", p.QPS)
	}
	if p.AverageLatency != 6637*time.Microsecond {
		t.Errorf("average latency %v", p.AverageLatency)
	}
	if p.Rcodes["NOERROR"] != 65000 || p.Rcodes["NXDOMAIN"] != 661 {
		t.Errorf("rcodes %v", p.Rcodes)
	}
	if len(p.Latencies) != 3 || p.Percentile(0.5) != 200*time.Microsecond || p.Percentile(0.99) != 300*time.Microsecond {
		t.Errorf("latencies %v, p50 %v p99 %v", p.Latencies, p.Percentile(0.5), p.Percentile(0.99))
	}
}

func TestParsePerfWithoutStatistics(t *testing.T) {
	if _, err := ParsePerf([]byte("Error: could not open data file\n")); err == nil {
		t.Error("no error for output without statistics")
	}
}

func TestPerfRunArgs(t *testing.T) {
	got := strings.Join(PerfRun{CPU: 0, Server: "127.0.0.1:53", DataFile: "q", Clients: 64, Outstanding: 500,
		Duration: 10 * time.Second, Rate: 12000, Verbose: true}.Args(), " ")
	want := "taskset -c 0 dnsperf -s 127.0.0.1 -p 53 -d q -c 64 -q 500 -l 10.0 -t 2 -Q 12000 -v"
	if got != want {
		t.Errorf("args\n got %s\nwant %s", got, want)
	}
}
