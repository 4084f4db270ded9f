package bench

import (
	"strconv"
	"strings"
)

// MetricValue finds a sample in Prometheus text exposition: the line for
// name whose labels include every one of labels (each `key="value"`), and
// returns its value. Several matching lines are summed, so a histogram's
// _count without labels adds up every series.
func MetricValue(body, name string, labels ...string) (float64, bool) {
	total, found := 0.0, false
	for line := range strings.SplitSeq(body, "\n") {
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		var labelText string
		switch {
		case strings.HasPrefix(rest, "{"):
			end := strings.Index(rest, "}")
			if end < 0 {
				continue
			}
			labelText, rest = rest[1:end], rest[end+1:]
		case strings.HasPrefix(rest, " "):
		default:
			continue // a longer name with this prefix
		}
		ok := true
		for _, l := range labels {
			if !containsLabel(labelText, l) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		total += v
		found = true
	}
	return total, found
}

func containsLabel(labelText, want string) bool {
	for part := range strings.SplitSeq(labelText, ",") {
		if strings.TrimSpace(part) == want {
			return true
		}
	}
	return false
}
