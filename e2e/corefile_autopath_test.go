package e2e

import (
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The test's own queries come from 127.0.0.1, so a Pod with that address
// makes the test a client Pod in namespace dev.
const loopbackPod = `apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: dev
  labels: {app: test-client}
spec:
  containers:
  - name: client
    image: busybox
status:
  phase: Running
  podIP: 127.0.0.1
  podIPs: [{ip: 127.0.0.1}]
  conditions: [{type: Ready, status: "True"}]
`

func TestCorefileAutopath(t *testing.T) {
	up := startUpstream(t, "127.0.0.1:0", world)
	s := serveCorefile(t, `.:{PORT} {
    bind 127.0.0.1
    autopath @kubernetes
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        manifests {MANIFESTS}
        pods verified
    }
    forward . {UP}
}
`, "{UP}", up.addr)
	writeFile(t, s.manifests, "client-pod.yaml", loopbackPod)
	// An external name asked the way a Pod's resolver first asks it (with
	// the first search suffix) gets a CNAME to the name that exists.
	waitAnswer(t, s.dns, "udp", "example.com.dev.svc.cluster.local", dns.TypeA, 5*time.Second, func(m *dns.Msg) bool {
		return slices.Equal(answers(m), []string{"CNAME example.com.", "A 192.0.2.10"})
	})
	tests := []struct {
		qname string
		rcode int
		want  []string
	}{
		{"service-clusterip.dev.svc.cluster.local", dns.RcodeSuccess, []string{"A 10.10.97.97"}},
		{"kubernetes.default.dev.svc.cluster.local", dns.RcodeNameError, nil},
		{"service-clusterip.dev.dev.svc.cluster.local", dns.RcodeSuccess,
			[]string{"CNAME service-clusterip.dev.svc.cluster.local.", "A 10.10.97.97"}},
		// Only the first search suffix starts the walk.
		{"example.com.svc.cluster.local", dns.RcodeNameError, nil},
	}
	for _, tc := range tests {
		m, err := query(s.dns, "udp", tc.qname, dns.TypeA)
		if err != nil {
			t.Fatal(err)
		}
		if got := answers(m); m.Rcode != tc.rcode || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %s %q; want %s %q", tc.qname, dns.RcodeToString[m.Rcode], got, dns.RcodeToString[tc.rcode], tc.want)
		}
	}
}
