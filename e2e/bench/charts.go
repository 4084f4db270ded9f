package bench

import (
	"fmt"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// series is one bar per group.
type series struct {
	name   string
	values []float64
}

// barChart writes grouped bars as a PNG.
func barChart(path, title, yLabel string, groups []string, all []series) error {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = yLabel
	p.Legend.Top = true
	width := vg.Points(18)
	for i, s := range all {
		bars, err := plotter.NewBarChart(plotter.Values(s.values), width)
		if err != nil {
			return fmt.Errorf("chart %s: %w", title, err)
		}
		bars.Color = plotutil.Color(i)
		bars.LineStyle.Width = 0
		bars.Offset = width * vg.Length(float64(i)-float64(len(all)-1)/2)
		p.Add(bars)
		p.Legend.Add(s.name, bars)
	}
	p.NominalX(groups...)
	// Room above the bars for the legend.
	top := 0.0
	for _, s := range all {
		for _, v := range s.values {
			top = max(top, v)
		}
	}
	p.Y.Min, p.Y.Max = 0, top*1.3
	if err := p.Save(vg.Points(float64(160+150*len(groups))), 4*vg.Inch, path); err != nil {
		return fmt.Errorf("save chart %s: %w", path, err)
	}
	return nil
}

// lineChart draws each named series of (x, y) points as a line.
func lineChart(path, title, xLabel, yLabel string, all map[string][][2]float64, order []string) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	p.Legend.Top = true
	p.Y.Min = 0
	for i, name := range order {
		pts := all[name]
		if len(pts) == 0 {
			continue
		}
		xys := make(plotter.XYs, len(pts))
		for j, pt := range pts {
			xys[j].X, xys[j].Y = pt[0], pt[1]
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("chart %s: %w", title, err)
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(name, l)
	}
	if err := p.Save(8*vg.Inch, 4*vg.Inch, path); err != nil {
		return fmt.Errorf("save chart %s: %w", path, err)
	}
	return nil
}

// WriteCharts draws the results as PNGs in dir and returns their names.
func (r *Results) WriteCharts(dir string) ([]string, error) {
	total := r.Spec.Services()
	med := func(peer, metric string, size int) float64 {
		v, _ := r.Median(peer, metric, size)
		return v
	}
	var written []string
	draw := func(name, title, yLabel string, groups []string, all []series) error {
		if err := barChart(filepath.Join(dir, name), title, yLabel, groups, all); err != nil {
			return err
		}
		written = append(written, name)
		return nil
	}
	if r.hasPeer(PeerClusterDNS) || r.hasPeer(PeerCoreDNS) {
		qps := func(peer string) series {
			return series{peer, []float64{med(peer, MetricQPSCluster, total), med(peer, MetricQPSExternal, total)}}
		}
		if err := draw("dns-qps.png", "DNS queries per second at saturation, one core", "queries/s",
			[]string{"cluster names", "external names (cached)"},
			[]series{qps(PeerClusterDNS), qps(PeerCoreDNS), qps(PeerBareUDP)}); err != nil {
			return written, err
		}
		lat := func(peer string) series {
			return series{peer, []float64{med(peer, MetricP50Cluster, total), med(peer, MetricP99Cluster, total),
				med(peer, MetricP50External, total), med(peer, MetricP99External, total)}}
		}
		if err := draw("dns-latency.png", fmt.Sprintf("DNS latency at %s queries/s", r.Settings["fixed load"]), "ms",
			[]string{"p50 cluster", "p99 cluster", "p50 external", "p99 external"},
			[]series{lat(PeerClusterDNS), lat(PeerCoreDNS)}); err != nil {
			return written, err
		}
		mem := func(peer string) series {
			return series{peer, []float64{med(peer, MetricRSS, total), med(peer, MetricHeap, total),
				med(peer, MetricRSSLoad, total), med(peer, MetricPeakRSS, total)}}
		}
		if err := draw("dns-memory.png", fmt.Sprintf("Memory at %d Services", total), "MiB",
			[]string{"RSS after sync", "Go heap then", "RSS after load", "peak RSS (VmHWM)"},
			[]series{mem(PeerClusterDNS), mem(PeerCoreDNS)}); err != nil {
			return written, err
		}
		if _, ok := r.Median(PeerBareUDP, MetricCPUCluster, total); ok {
			cpu := func(peer string) series {
				return series{peer, []float64{med(peer, MetricCPUCluster, total), med(peer, MetricCPUExternal, total)}}
			}
			if err := draw("dns-cpu.png", fmt.Sprintf("CPU time per query at %s queries/s", r.Settings["fixed load"]), "µs",
				[]string{"cluster names", "external names"},
				[]series{cpu(PeerClusterDNS), cpu(PeerCoreDNS), cpu(PeerBareUDP)}); err != nil {
				return written, err
			}
		}
		if len(r.RSSSeries) > 0 {
			if err := lineChart(filepath.Join(dir, "dns-rss.png"), "RSS over the first saturation round (sync, then the load)",
				"seconds since start", "MiB", r.RSSSeries, []string{PeerClusterDNS, PeerCoreDNS, PeerBareUDP}); err != nil {
				return written, err
			}
			written = append(written, "dns-rss.png")
		}
	}
	if r.hasPeer(PeerNodecache) || r.hasPeer(PeerNodecacheCoreDNS) {
		const n = nodecacheNames
		per := func(peer string, metrics ...string) series {
			s := series{name: peer}
			for _, m := range metrics {
				s.values = append(s.values, med(peer, m, n))
			}
			return s
		}
		peers := []string{PeerNodecache, PeerNodecacheCoreDNS}
		var qps, mem []series
		for _, p := range peers {
			qps = append(qps, per(p, MetricQPSCluster, MetricQPSExternal))
			mem = append(mem, per(p, MetricRSSLoad, MetricPeakRSS))
		}
		if err := draw("nodecache-qps.png", "Node cache: cache-hit queries per second at saturation, one core", "queries/s",
			[]string{"cluster-zone names", "external names"}, qps); err != nil {
			return written, err
		}
		if err := draw("nodecache-memory.png", "Node cache: memory after the saturation runs", "MiB",
			[]string{"RSS after load", "peak RSS (VmHWM)"}, mem); err != nil {
			return written, err
		}
		series := map[string][][2]float64{}
		for _, p := range peers {
			series[p] = r.RSSSeries[p]
		}
		if len(series[PeerNodecache])+len(series[PeerNodecacheCoreDNS]) > 0 {
			if err := lineChart(filepath.Join(dir, "nodecache-rss.png"), "Node cache: RSS over the first saturation round (warm-up, then the load)",
				"seconds since start", "MiB", series, peers); err != nil {
				return written, err
			}
			written = append(written, "nodecache-rss.png")
		}
	}
	// Rule charts: one group per cluster size, a bar per peer.
	rules := func(sizeMetric, ours, theirs, prefix, what string) error {
		sizes := r.Sizes(sizeMetric, ours, theirs)
		var groups []string
		for _, s := range sizes {
			groups = append(groups, fmt.Sprintf("%d Services", s))
		}
		per := func(peer, metric string) series {
			var v []float64
			for _, s := range sizes {
				v = append(v, med(peer, metric, s))
			}
			return series{peer, v}
		}
		if err := draw(prefix+"-change.png", what+"one endpoint change, API write to rules applied", "ms", groups,
			[]series{per(ours, MetricChange), per(theirs, MetricChange)}); err != nil {
			return err
		}
		return draw(prefix+"-sync.png", what+"full sync of all rules", "s", groups,
			[]series{per(ours, MetricFullSync), per(theirs, MetricFullSync)})
	}
	if r.hasPeer(PeerOurProxy) || r.hasPeer(PeerKubeProxy) {
		if err := rules(MetricRules, PeerOurProxy, PeerKubeProxy, "rules", "Rules: "); err != nil {
			return written, err
		}
	}
	if r.hasPeer(PeerOurProxyNFT) || r.hasPeer(PeerKubeProxyNFT) {
		if err := rules(MetricRules, PeerOurProxyNFT, PeerKubeProxyNFT, "nftables", "Rules, nftables mode: "); err != nil {
			return written, err
		}
	}
	if r.hasPeer(PeerOurProxyIPVS) || r.hasPeer(PeerKubeProxyIPVS) {
		if err := rules(MetricVirtualServers, PeerOurProxyIPVS, PeerKubeProxyIPVS, "ipvs", "IPVS rules (emulated CPU): "); err != nil {
			return written, err
		}
	}
	return written, nil
}

// ChangeBySizeChart draws, for each labelled run, the median time of one
// endpoint change of each rule peer against the cluster size, as lines:
// what a flat change cost looks like next to one that grows. Runs are
// drawn in order's order.
func ChangeBySizeChart(path, title string, runs map[string]*Results, order []string) error {
	lines := map[string][][2]float64{}
	var names []string
	for _, label := range order {
		r := runs[label]
		peers := map[string]bool{}
		for _, s := range r.Samples {
			if s.Metric == MetricChange && !peers[s.Peer] {
				peers[s.Peer] = true
				name := s.Peer + ", " + label
				names = append(names, name)
				for _, size := range r.Sizes(MetricChange, s.Peer) {
					if m, ok := r.Median(s.Peer, MetricChange, size); ok {
						lines[name] = append(lines[name], [2]float64{float64(size), m})
					}
				}
			}
		}
	}
	return lineChart(path, title, "ClusterIP Services", "one endpoint change (ms, median)", lines, names)
}
