package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Peer names as they appear in the results.
const (
	PeerClusterDNS = "clusterdns"
	PeerCoreDNS    = "coredns"
	PeerBareUDP    = "bare-udp"
	PeerOurProxy   = "clusterdns-proxy"
	PeerKubeProxy  = "kube-proxy"
	// The same two in IPVS mode, inside the e2e VM.
	PeerOurProxyIPVS  = "clusterdns-proxy-ipvs"
	PeerKubeProxyIPVS = "kube-proxy-ipvs"
	// The same two in nftables mode, on the host like iptables mode.
	PeerOurProxyNFT  = "clusterdns-proxy-nftables"
	PeerKubeProxyNFT = "kube-proxy-nftables"
)

// Metric names. DNS metrics are taken at the full Spec; rule metrics at each
// size in Sample.Size.
const (
	MetricQPSCluster  = "qps_cluster"
	MetricQPSExternal = "qps_external"
	MetricP50Cluster  = "p50_cluster_ms"
	MetricP99Cluster  = "p99_cluster_ms"
	MetricP50External = "p50_external_ms"
	MetricP99External = "p99_external_ms"
	MetricRSS         = "rss_mb"
	// RSS and peak RSS (VmHWM) read right after the saturation runs: what
	// the answer path's garbage makes of memory, not only the index.
	MetricRSSLoad = "rss_after_load_mb"
	MetricPeakRSS = "peak_rss_mb"
	// CPU time (utime+stime) per query answered at the fixed load.
	MetricCPUCluster  = "cpu_us_per_query_cluster"
	MetricCPUExternal = "cpu_us_per_query_external"
	MetricHeap        = "heap_inuse_mb"
	MetricReady       = "ready_s"
	MetricFullSync    = "full_sync_s"
	MetricSynced      = "start_to_synced_s"
	MetricChange      = "change_ms"
	MetricRules       = "rules"
	// IPVS virtual and real servers in `ipvsadm -Ln`.
	MetricVirtualServers = "ipvs_virtual_servers"
	MetricRealServers    = "ipvs_real_servers"
	// In nftables mode MetricRules is the peer's own IPv4 table's rules
	// plus its set and map elements; these are the elements alone and
	// the table's chains.
	MetricNFTElements = "nft_elements"
	MetricNFTChains   = "nft_chains"
)

// Sample is one measurement of one peer.
type Sample struct {
	Peer   string  `json:"peer"`
	Metric string  `json:"metric"`
	Size   int     `json:"size"`
	Round  int     `json:"round"`
	Value  float64 `json:"value"`
}

// Results is everything one run measured, with the conditions it ran in.
type Results struct {
	Started  time.Time         `json:"started"`
	Finished time.Time         `json:"finished"`
	Machine  string            `json:"machine"`
	LoadAvg  []string          `json:"loadavg"` // at start and end
	Spec     Spec              `json:"spec"`
	Settings map[string]string `json:"settings"`
	Samples  []Sample          `json:"samples"`
	// RSSSeries is each DNS peer's RSS over its first saturation round:
	// (seconds since start, MiB).
	RSSSeries map[string][][2]float64 `json:"rss_series,omitempty"`
}

// NewResults records the machine and its load now.
func NewResults(spec Spec) *Results {
	return &Results{Started: time.Now().UTC(), Machine: MachineDescription(), LoadAvg: []string{LoadAverage()},
		Spec: spec, Settings: map[string]string{}, RSSSeries: map[string][][2]float64{}}
}

// Add records a sample.
func (r *Results) Add(peer, metric string, size, round int, value float64) {
	r.Samples = append(r.Samples, Sample{Peer: peer, Metric: metric, Size: size, Round: round, Value: value})
}

// Values returns the samples of one peer, metric and size, in order.
func (r *Results) Values(peer, metric string, size int) []float64 {
	var out []float64
	for _, s := range r.Samples {
		if s.Peer == peer && s.Metric == metric && s.Size == size {
			out = append(out, s.Value)
		}
	}
	return out
}

// Median returns the median of the samples, and whether there were any.
func (r *Results) Median(peer, metric string, size int) (float64, bool) {
	v := r.Values(peer, metric, size)
	if len(v) == 0 {
		return 0, false
	}
	return Median(v), true
}

// Median of values (the mean of the middle two for an even count).
func Median(values []float64) float64 {
	if len(values) == 0 {
		return 0
	}
	v := slices.Clone(values)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Sizes lists the sizes rule metrics were taken at, ascending: every size
// with a sample of metric from any of peers, or from any peer when none are
// named.
func (r *Results) Sizes(metric string, peers ...string) []int {
	var out []int
	for _, s := range r.Samples {
		if len(peers) > 0 && !slices.Contains(peers, s.Peer) {
			continue
		}
		if s.Metric == metric && !slices.Contains(out, s.Size) {
			out = append(out, s.Size)
		}
	}
	slices.Sort(out)
	return out
}

// WriteJSON saves every sample.
func (r *Results) WriteJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// row is one line of a comparison table.
type row struct {
	label, metric string
	size          int
	// goal is the wanted ours/theirs ratio: at least it when higher is
	// better, at most it otherwise; zero for none.
	goal         float64
	higherBetter bool
	format       string
}

// Markdown renders the comparison tables.
func (r *Results) Markdown() string {
	var b strings.Builder
	total := r.Spec.Services()
	fmt.Fprintf(&b, "Measured %s to %s UTC on %s; load average %s.\n\n",
		r.Started.Format("2006-01-02 15:04"), r.Finished.Format("15:04"), r.Machine, strings.Join(r.LoadAvg, " → "))
	if r.hasPeer(PeerClusterDNS) || r.hasPeer(PeerCoreDNS) {
		fmt.Fprintf(&b, "DNS cluster: %d ClusterIP + %d headless + %d ExternalName Services, %d ready endpoints per selecting Service.\n",
			r.Spec.ClusterIP, r.Spec.Headless, r.Spec.ExternalName, r.Spec.Endpoints)
	}
	if r.hasPeer(PeerOurProxy) || r.hasPeer(PeerKubeProxy) || r.hasPeer(PeerOurProxyNFT) || r.hasPeer(PeerKubeProxyNFT) {
		fmt.Fprintf(&b, "Rule sizes count ClusterIP Services; headless and ExternalName Services come in proportion (%d and %d per %d), %d ready endpoints per selecting Service.\n",
			r.Spec.Headless, r.Spec.ExternalName, r.Spec.ClusterIP, r.Spec.Endpoints)
	}
	var keys []string
	for k := range r.Settings {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s.\n", k, r.Settings[k])
	}
	b.WriteString("\nMedians of the runs (min–max in brackets); ours/theirs < 1 is better for times and memory, > 1 for QPS.\n\n")

	dnsRows := []row{
		{"QPS at saturation, cluster names", MetricQPSCluster, total, 3, true, "%.0f"},
		{"QPS at saturation, external names (cached)", MetricQPSExternal, total, 0, true, "%.0f"},
		{"p50 latency at fixed load, cluster names (ms)", MetricP50Cluster, total, 0, false, "%.3f"},
		{"p99 latency at fixed load, cluster names (ms)", MetricP99Cluster, total, 0.5, false, "%.3f"},
		{"p50 latency at fixed load, external names (ms)", MetricP50External, total, 0, false, "%.3f"},
		{"p99 latency at fixed load, external names (ms)", MetricP99External, total, 0, false, "%.3f"},
		{"CPU per query at fixed load, cluster names (µs)", MetricCPUCluster, total, 0, false, "%.1f"},
		{"CPU per query at fixed load, external names (µs)", MetricCPUExternal, total, 0, false, "%.1f"},
		{rssAfterSyncLabel(r.Settings["rss after sync"]), MetricRSS, total, 0.5, false, "%.1f"},
		{"Go heap in use at that moment (MiB)", MetricHeap, total, 0, false, "%.1f"},
		{"RSS right after the saturation runs (MiB)", MetricRSSLoad, total, 0.5, false, "%.1f"},
		{"peak RSS (VmHWM) at that moment (MiB)", MetricPeakRSS, total, 0.5, false, "%.1f"},
		{"start to /ready 200 (s)", MetricReady, total, 0, false, "%.2f"},
	}
	if r.hasPeer(PeerClusterDNS) || r.hasPeer(PeerCoreDNS) {
		b.WriteString("### DNS: clusterdns vs CoreDNS, one core each\n\n")
		r.table(&b, "clusterdns", "CoreDNS", PeerClusterDNS, PeerCoreDNS, dnsRows)
		if _, ok := r.Median(PeerBareUDP, MetricQPSCluster, total); ok {
			b.WriteString("\n### The ceiling: a bare UDP responder on the same core\n\n")
			b.WriteString("| mix | bare UDP QPS | clusterdns QPS | clusterdns / bare | CoreDNS / bare |\n| --- | ---: | ---: | ---: | ---: |\n")
			for _, m := range []struct{ label, metric string }{{"cluster names", MetricQPSCluster}, {"external names", MetricQPSExternal}} {
				bare, _ := r.Median(PeerBareUDP, m.metric, total)
				ours, _ := r.Median(PeerClusterDNS, m.metric, total)
				theirs, _ := r.Median(PeerCoreDNS, m.metric, total)
				fmt.Fprintf(&b, "| %s | %.0f | %.0f | %s | %s |\n", m.label, bare, ours, ratio(ours, bare), ratio(theirs, bare))
			}
			if _, ok := r.Median(PeerBareUDP, MetricCPUCluster, total); ok {
				b.WriteString("\nAt the fixed load (" + r.Settings["fixed load"] + " qps for cluster names): CPU time (utime+stime) per query answered, and latency.\n\n")
				b.WriteString("| | bare UDP | clusterdns | CoreDNS | clusterdns / bare | CoreDNS / bare |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
				for _, m := range []struct{ label, metric, format string }{
					{"CPU per query, cluster names (µs)", MetricCPUCluster, "%.1f"},
					{"CPU per query, external names (µs)", MetricCPUExternal, "%.1f"},
					{"p50, cluster names (ms)", MetricP50Cluster, "%.3f"},
					{"p99, cluster names (ms)", MetricP99Cluster, "%.3f"},
				} {
					bare, _ := r.Median(PeerBareUDP, m.metric, total)
					ours, _ := r.Median(PeerClusterDNS, m.metric, total)
					theirs, _ := r.Median(PeerCoreDNS, m.metric, total)
					fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", m.label, r.cell(PeerBareUDP, m.metric, total, m.format),
						r.cell(PeerClusterDNS, m.metric, total, m.format), r.cell(PeerCoreDNS, m.metric, total, m.format),
						ratio(ours, bare), ratio(theirs, bare))
				}
			}
		}
	}
	if r.hasPeer(PeerNodecache) || r.hasPeer(PeerNodecacheCoreDNS) {
		const n = nodecacheNames
		b.WriteString("\n### Node cache: clusterdns nodecache vs CoreDNS, NodeLocal DNSCache's stock Corefile, cache hits, one core each\n\n")
		r.table(&b, "clusterdns nodecache", "CoreDNS", PeerNodecache, PeerNodecacheCoreDNS, []row{
			{"cache-hit QPS at saturation, cluster-zone names", MetricQPSCluster, n, 3, true, "%.0f"},
			{"cache-hit QPS at saturation, external names", MetricQPSExternal, n, 3, true, "%.0f"},
			{"CPU per query at fixed load, cluster-zone names (µs)", MetricCPUCluster, n, 0, false, "%.1f"},
			{"CPU per query at fixed load, external names (µs)", MetricCPUExternal, n, 0, false, "%.1f"},
			{"p50 latency at fixed load, cluster-zone names (ms)", MetricP50Cluster, n, 0, false, "%.3f"},
			{"p99 latency at fixed load, cluster-zone names (ms)", MetricP99Cluster, n, 0, false, "%.3f"},
			{"p50 latency at fixed load, external names (ms)", MetricP50External, n, 0, false, "%.3f"},
			{"p99 latency at fixed load, external names (ms)", MetricP99External, n, 0, false, "%.3f"},
			{"RSS right after the saturation runs (MiB)", MetricRSSLoad, n, 0.5, false, "%.1f"},
			{"peak RSS (VmHWM) at that moment (MiB)", MetricPeakRSS, n, 0, false, "%.1f"},
			{"start to first answer (s)", MetricReady, n, 0, false, "%.2f"},
		})
		if bare, ok := r.Median(PeerBareUDP, MetricQPSCluster, n); ok {
			ours, _ := r.Median(PeerNodecache, MetricQPSCluster, n)
			theirs, _ := r.Median(PeerNodecacheCoreDNS, MetricQPSCluster, n)
			// cmd/bareudp reads with one goroutine: a scale for dnsperf's
			// own reach, not a bound a server with several readers keeps to.
			fmt.Fprintf(&b, "\nFor scale, the bare UDP responder (`cmd/bareudp`, one reader) on the same core under the same dnsperf: %.0f qps (cluster-zone mix); "+
				"clusterdns nodecache answers %s times that, CoreDNS %s.\n", bare, ratio(ours, bare), ratio(theirs, bare))
		}
	}
	if r.hasPeer(PeerOurProxy) || r.hasPeer(PeerKubeProxy) {
		b.WriteString("\n### Rules: clusterdns proxy vs kube-proxy, iptables mode, one network namespace each\n\n")
		var rows []row
		for _, size := range r.Sizes(MetricRules, PeerOurProxy, PeerKubeProxy) {
			rows = append(rows,
				row{fmt.Sprintf("%d Services: one endpoint change, API write to rules applied (ms)", size), MetricChange, size, 0, false, "%.0f"},
				row{fmt.Sprintf("%d Services: full sync (s)", size), MetricFullSync, size, 0, false, "%.3f"},
				row{fmt.Sprintf("%d Services: start to first full sync done (s)", size), MetricSynced, size, 0, false, "%.2f"},
				row{fmt.Sprintf("%d Services: rules (iptables-save lines)", size), MetricRules, size, 0, false, "%.0f"},
			)
		}
		r.table(&b, "clusterdns proxy", "kube-proxy", PeerOurProxy, PeerKubeProxy, rows)
	}
	if r.hasPeer(PeerOurProxyNFT) || r.hasPeer(PeerKubeProxyNFT) {
		b.WriteString("\n### Rules: clusterdns proxy vs kube-proxy, nftables mode, one network namespace each\n\n")
		b.WriteString("Rules are counted in each peer's own IPv4 table (`nft -j list table ip clusterdns`, `ip kube-proxy`): " +
			"its rules plus the elements of its sets and maps, named or written inside a rule (kube-proxy's " +
			"`dnat ip addr . port to numgen random mod 5 map { 0 : … }`), since each element does the work of a rule " +
			"in iptables mode. Both peers program the same table for IPv6 too, not counted here.\n\n")
		var rows []row
		for _, size := range r.Sizes(MetricRules, PeerOurProxyNFT, PeerKubeProxyNFT) {
			rows = append(rows,
				row{fmt.Sprintf("%d Services: one endpoint change, API write to rules applied (ms)", size), MetricChange, size, 0, false, "%.0f"},
				row{fmt.Sprintf("%d Services: full sync (s)", size), MetricFullSync, size, 0, false, "%.3f"},
				row{fmt.Sprintf("%d Services: start to first full sync done (s)", size), MetricSynced, size, 0, false, "%.2f"},
				row{fmt.Sprintf("%d Services: rules + set/map elements", size), MetricRules, size, 0, false, "%.0f"},
				row{fmt.Sprintf("%d Services: of which set/map elements", size), MetricNFTElements, size, 0, false, "%.0f"},
				row{fmt.Sprintf("%d Services: chains", size), MetricNFTChains, size, 0, false, "%.0f"},
			)
		}
		r.table(&b, "clusterdns proxy", "kube-proxy", PeerOurProxyNFT, PeerKubeProxyNFT, rows)
	}
	if r.hasPeer(PeerOurProxyIPVS) || r.hasPeer(PeerKubeProxyIPVS) {
		b.WriteString("\n### Rules: clusterdns proxy vs kube-proxy, IPVS mode, one VM each\n\n")
		b.WriteString("Measured inside a qemu VM on an emulated CPU (TCG): the absolute times are many times those of real hardware; only the ratio between the peers means anything.\n\n")
		var rows []row
		for _, size := range r.Sizes(MetricVirtualServers) {
			rows = append(rows,
				row{fmt.Sprintf("%d Services: one endpoint change, API write to IPVS applied (ms)", size), MetricChange, size, 0, false, "%.0f"},
				row{fmt.Sprintf("%d Services: full sync (s)", size), MetricFullSync, size, 0, false, "%.3f"},
				row{fmt.Sprintf("%d Services: start to first full sync done (s)", size), MetricSynced, size, 0, false, "%.2f"},
				row{fmt.Sprintf("%d Services: IPVS virtual servers", size), MetricVirtualServers, size, 0, false, "%.0f"},
				row{fmt.Sprintf("%d Services: IPVS real servers", size), MetricRealServers, size, 0, false, "%.0f"},
			)
		}
		r.table(&b, "clusterdns proxy", "kube-proxy", PeerOurProxyIPVS, PeerKubeProxyIPVS, rows)
	}
	return b.String()
}

func (r *Results) hasPeer(peer string) bool {
	return slices.ContainsFunc(r.Samples, func(s Sample) bool { return s.Peer == peer })
}

func (r *Results) table(b *strings.Builder, oursLabel, theirsLabel, ours, theirs string, rows []row) {
	fmt.Fprintf(b, "| | %s | %s | ours/theirs | goal |\n| --- | ---: | ---: | ---: | --- |\n", oursLabel, theirsLabel)
	for _, rw := range rows {
		o, okO := r.Median(ours, rw.metric, rw.size)
		t, okT := r.Median(theirs, rw.metric, rw.size)
		if !okO && !okT {
			continue
		}
		goal := ""
		if rw.goal > 0 && okO && okT && t > 0 {
			met := o/t >= rw.goal
			sign := "≥"
			if !rw.higherBetter {
				met, sign = o/t <= rw.goal, "≤"
			}
			goal = fmt.Sprintf("%s %.1f× %s", sign, rw.goal, map[bool]string{true: "met", false: "**not met**"}[met])
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", rw.label,
			r.cell(ours, rw.metric, rw.size, rw.format), r.cell(theirs, rw.metric, rw.size, rw.format), ratio(o, t), goal)
	}
}

func (r *Results) cell(peer, metric string, size int, format string) string {
	v := r.Values(peer, metric, size)
	if len(v) == 0 {
		return "–"
	}
	s := fmt.Sprintf(format, Median(v))
	if len(v) > 1 {
		s += fmt.Sprintf(" ["+format+"–"+format+"]", slices.Min(v), slices.Max(v))
	}
	return s
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// MachineDescription names the CPU, the core count and the kernel.
func MachineDescription() string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown kernel"
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = "Linux " + strings.TrimSpace(string(data))
	}
	return fmt.Sprintf("%s, %d cores, %s, %s", cpu, runtime.NumCPU(), kernel, runtime.Version())
}

// LoadAverage is the first three fields of /proc/loadavg.
func LoadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// rssAfterSyncLabel names the RSS row with when it was sampled, when the
// run says so.
func rssAfterSyncLabel(when string) string {
	if when == "" {
		return "RSS after sync (MiB)"
	}
	return "RSS after sync, " + when + " (MiB)"
}

// Peer names of the node cache comparison.
const (
	PeerNodecache        = "clusterdns-nodecache"
	PeerNodecacheCoreDNS = "coredns-nodecache"
)

// nodecacheNames is how many distinct names each node cache mix asks:
// well inside the stock cache's 9,984 entries, so that after the warm-up
// every query is a hit.
const nodecacheNames = 1000
