// Package promtext reads samples out of a Prometheus text exposition (a
// process's /metrics page), for tests and benchmarks that judge a process by
// its own metrics.
package promtext

import (
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Value sums the samples of the series name whose labels include every one
// of labels, each written key="value"; found is false when none matches or
// the page does not parse. A histogram or summary is asked for by its series
// names: NAME_count and NAME_sum.
func Value(body, name string, labels ...string) (total float64, found bool) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return 0, false
	}
	family, part := families[name], ""
	if family == nil {
		for _, suffix := range []string{"_count", "_sum"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && families[base] != nil {
				family, part = families[base], suffix
			}
		}
	}
	if family == nil {
		return 0, false
	}
	for _, m := range family.Metric {
		if !hasLabels(m, labels) {
			continue
		}
		if v, ok := sample(m, part); ok {
			total, found = total+v, true
		}
	}
	return total, found
}

// hasLabels reports whether a series carries every key="value" pair.
func hasLabels(m *dto.Metric, want []string) bool {
	for _, w := range want {
		k, v, _ := strings.Cut(w, "=")
		v = strings.Trim(v, `"`)
		ok := false
		for _, l := range m.Label {
			if l.GetName() == k && l.GetValue() == v {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// sample is a series' value, or with part "_count"/"_sum" its histogram or
// summary count or sum.
func sample(m *dto.Metric, part string) (float64, bool) {
	switch {
	case part == "_count" && m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount()), true
	case part == "_sum" && m.Histogram != nil:
		return m.Histogram.GetSampleSum(), true
	case part == "_count" && m.Summary != nil:
		return float64(m.Summary.GetSampleCount()), true
	case part == "_sum" && m.Summary != nil:
		return m.Summary.GetSampleSum(), true
	case part != "":
		return 0, false
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	case m.Untyped != nil:
		return m.Untyped.GetValue(), true
	}
	return 0, false
}
