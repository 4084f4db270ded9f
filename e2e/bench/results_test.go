package bench

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestMarkdownAndCharts(t *testing.T) {
	spec := DefaultSpec().Scaled(100)
	r := NewResults(spec)
	total := spec.Services()
	for round, v := range []float64{70000, 75000, 72000} {
		r.Add(PeerClusterDNS, MetricQPSCluster, total, round, v)
		r.Add(PeerCoreDNS, MetricQPSCluster, total, round, v/3.5)
		r.Add(PeerBareUDP, MetricQPSCluster, total, round, v*1.5)
		r.Add(PeerClusterDNS, MetricRSS, total, round, 40)
		r.Add(PeerCoreDNS, MetricRSS, total, round, 60)
		r.Add(PeerOurProxy, MetricChange, 1000, round, 20)
		r.Add(PeerKubeProxy, MetricChange, 1000, round, 400)
		r.Add(PeerOurProxy, MetricRules, 1000, round, 9000)
		r.Add(PeerKubeProxy, MetricRules, 1000, round, 12000)
		r.Add(PeerOurProxyNFT, MetricChange, 1000, round, 30)
		r.Add(PeerKubeProxyNFT, MetricChange, 1000, round, 60)
		r.Add(PeerOurProxyNFT, MetricRules, 1000, round, 8000)
		r.Add(PeerKubeProxyNFT, MetricRules, 1000, round, 9000)
		r.Add(PeerKubeProxyNFT, MetricNFTElements, 1000, round, 7000)
	}
	r.Settings["fixed load"] = "10000"
	md := r.Markdown()
	r.Settings["rss after sync"] = "2s after /ready"
	if md2 := r.Markdown(); !strings.Contains(md2, "| RSS after sync, 2s after /ready (MiB) | 40.0") {
		t.Errorf("the RSS row does not say when it was sampled:\n%s", md2)
	}
	for _, want := range []string{
		"| QPS at saturation, cluster names | 72000 [70000–75000] | 20571 [20000–21429] | 3.50 | ≥ 3.0× met |",
		"| RSS after sync (MiB) | 40.0 [40.0–40.0] | 60.0 [60.0–60.0] | 0.67 | ≤ 0.5× **not met** |",
		"| cluster names | 108000 | 72000 | 0.67 | 0.19 |",
		"1000 Services: one endpoint change",
		"### Rules: clusterdns proxy vs kube-proxy, nftables mode",
		"| 1000 Services: rules + set/map elements | 8000 [8000–8000] | 9000 [9000–9000] | 0.89 |  |",
		"| 1000 Services: of which set/map elements | – | 7000 [7000–7000] | 0.00 |  |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	dir := t.TempDir()
	charts, err := r.WriteCharts(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(charts) != 7 {
		t.Errorf("charts %v, want 7", charts)
	}
	for _, c := range charts {
		if m, _ := filepath.Glob(filepath.Join(dir, c)); len(m) != 1 {
			t.Errorf("%s not written", c)
		}
	}
}
