package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Perf is one dnsperf run: what it sent, what came back, and how fast.
type Perf struct {
	Sent, Completed, Lost int
	QPS                   float64
	AverageLatency        time.Duration
	// Rcodes counts answers by response code (NOERROR, NXDOMAIN, ...).
	Rcodes map[string]int
	// Latencies holds every answer's latency when dnsperf ran with -v,
	// sorted.
	Latencies []time.Duration
}

// Percentile returns the q-th quantile (0 < q <= 1) of the recorded
// latencies, or 0 without any.
func (p Perf) Percentile(q float64) time.Duration {
	if len(p.Latencies) == 0 {
		return 0
	}
	i := int(float64(len(p.Latencies))*q+0.5) - 1
	return p.Latencies[min(max(i, 0), len(p.Latencies)-1)]
}

// PerfRun says how to run dnsperf.
type PerfRun struct {
	// CPU is the core dnsperf is pinned to.
	CPU int
	// Server is the address queried: 127.0.0.1:PORT.
	Server   string
	DataFile string
	// Clients is the number of distinct flows (source ports); the issue
	// asks for at least 64.
	Clients int
	// Outstanding bounds the queries in flight.
	Outstanding int
	Duration    time.Duration
	// Rate limits the queries per second; zero for as fast as answered.
	Rate int
	// Verbose records every answer's latency.
	Verbose bool
}

// Args is dnsperf's command line, taskset first.
func (r PerfRun) Args() []string {
	host, port, _ := strings.Cut(r.Server, ":")
	args := []string{"taskset", "-c", strconv.Itoa(r.CPU), "dnsperf",
		"-s", host, "-p", port, "-d", r.DataFile,
		"-c", strconv.Itoa(r.Clients), "-q", strconv.Itoa(r.Outstanding),
		"-l", strconv.FormatFloat(r.Duration.Seconds(), 'f', 1, 64),
		"-t", "2"}
	if r.Rate > 0 {
		args = append(args, "-Q", strconv.Itoa(r.Rate))
	}
	if r.Verbose {
		args = append(args, "-v")
	}
	return args
}

// RunPerf runs dnsperf and parses what it printed.
func RunPerf(ctx context.Context, r PerfRun) (Perf, error) {
	// dnsperf stops by itself after the duration and then waits at most
	// its timeout for the last answers.
	ctx, cancel := context.WithTimeout(ctx, r.Duration+30*time.Second)
	defer cancel()
	args := r.Args()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return Perf{}, fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, tail(stderr.String(), 2000))
	}
	p, err := ParsePerf(out)
	if err != nil {
		return Perf{}, fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	return p, nil
}

// ParsePerf reads dnsperf's report: the statistics block, and with -v the
// "> RCODE NAME TYPE SECONDS" line of every answer.
func ParsePerf(out []byte) (Perf, error) {
	p := Perf{Rcodes: map[string]int{}}
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "> "); ok {
			f := strings.Fields(rest)
			if len(f) < 2 {
				continue
			}
			sec, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				continue
			}
			p.Latencies = append(p.Latencies, time.Duration(sec*float64(time.Second)))
			continue
		}
		key, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) == 0 {
			continue
		}
		var err error
		switch key {
		case "Queries sent":
			p.Sent, err = strconv.Atoi(fields[0])
			seen++
		case "Queries completed":
			p.Completed, err = strconv.Atoi(fields[0])
			seen++
		case "Queries lost":
			p.Lost, err = strconv.Atoi(fields[0])
		case "Queries per second":
			p.QPS, err = strconv.ParseFloat(fields[0], 64)
			seen++
		case "Average Latency (s)":
			var sec float64
			sec, err = strconv.ParseFloat(fields[0], 64)
			p.AverageLatency = time.Duration(sec * float64(time.Second))
		case "Response codes":
			// NOERROR 65661 (100.00%), NXDOMAIN 12 (0.01%)
			for _, part := range strings.Split(value, ",") {
				f := strings.Fields(part)
				if len(f) >= 2 {
					n, convErr := strconv.Atoi(f[1])
					if convErr == nil {
						p.Rcodes[f[0]] = n
					}
				}
			}
		}
		if err != nil {
			return p, fmt.Errorf("dnsperf %q: %w", line, err)
		}
	}
	if seen < 3 {
		return p, fmt.Errorf("dnsperf printed no statistics:\n%s", tail(string(out), 2000))
	}
	slices.Sort(p.Latencies)
	return p, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
