package bench

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
)

// Mix is a named query file for dnsperf: one "NAME TYPE" per line, read in a
// loop for the length of a run.
type Mix struct {
	Name  string
	Lines []string
}

// The shares of the cluster-names mix, in percent.
const (
	shareClusterIP = 80
	shareHeadless  = 10
	shareSRV       = 5
	shareNXDOMAIN  = 5
)

// ClusterMix is what pods ask the cluster DNS: A for ClusterIP Services
// (80%), A for headless Services (10%), SRV for a named port (5%) and names
// that do not exist (5%), in a fixed pseudo-random order over the whole
// cluster. n is the number of lines.
func ClusterMix(s Spec, n int) Mix {
	rng := rand.New(rand.NewPCG(1, 2))
	lines := make([]string, 0, n)
	pick := func(count int) int { return rng.IntN(max(1, count)) }
	for i := range n {
		// Spread the shares evenly over the file rather than in blocks.
		switch p := (i * 100 / max(1, n)) % 100; {
		case p < shareClusterIP || s.Headless == 0:
			lines = append(lines, s.Ref(KindClusterIP, pick(s.ClusterIP)).FQDN()+" A")
		case p < shareClusterIP+shareHeadless:
			lines = append(lines, s.Ref(KindHeadless, pick(s.Headless)).FQDN()+" A")
		case p < shareClusterIP+shareHeadless+shareSRV:
			lines = append(lines, fmt.Sprintf("_%s._tcp.%s SRV", PortName, s.Ref(KindClusterIP, pick(s.ClusterIP)).FQDN()))
		default:
			r := s.Ref(KindClusterIP, pick(s.ClusterIP))
			lines = append(lines, fmt.Sprintf("missing-%d.%s.svc.%s. A", i, r.Namespace, ClusterDomain))
		}
	}
	rng.Shuffle(len(lines), func(i, j int) { lines[i], lines[j] = lines[j], lines[i] })
	return Mix{Name: "cluster", Lines: lines}
}

// ExternalMix asks for names outside the cluster, which the server forwards
// to the upstream once and then answers from its cache: distinct names, n
// lines.
func ExternalMix(distinct, n int) Mix {
	lines := make([]string, n)
	for i := range lines {
		lines[i] = fmt.Sprintf("host-%04d.example.net. A", i%max(1, distinct))
	}
	return Mix{Name: "external", Lines: lines}
}

// Write saves the mix as a dnsperf data file.
func (m Mix) Write(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("query file %s: %w", m.Name, err)
	}
	w := bufio.NewWriter(f)
	for _, l := range m.Lines {
		w.WriteString(l)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return fmt.Errorf("write query file %s: %w", m.Name, err)
	}
	return f.Close()
}
