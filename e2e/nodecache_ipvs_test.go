package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/e2e/vm"
)

// nodecacheIPVSObjects is the VM's cluster: kube-dns and kube-dns-upstream
// over the DNS pod, and the Service a client looks up.
const nodecacheIPVSObjects = `apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: default}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns-upstream, namespace: kube-system}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.80
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kube-dns-1, namespace: kube-system, labels: {kubernetes.io/service-name: kube-dns}}
addressType: IPv4
ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
endpoints: [{addresses: [10.100.1.2]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kube-dns-upstream-1, namespace: kube-system, labels: {kubernetes.io/service-name: kube-dns-upstream}}
addressType: IPv4
ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
endpoints: [{addresses: [10.100.1.2]}]
`

// TestNodecacheIPVS runs the cache beside `clusterdns proxy --proxy-mode
// ipvs` on a real kernel with IPVS (and a dummy link), as NodeLocal runs in
// IPVS mode: the cache holds only 169.254.20.10, IPVS the kube-dns
// ClusterIP. A pod is answered on both over UDP and TCP, its queries to
// the cache leave no conntrack entry, IPVS does not take the link-local
// address, the agent refuses --node-local-dns in IPVS mode, and SIGTERM
// removes the link and rules while kube-dns keeps answering.
func TestNodecacheIPVS(t *testing.T) {
	assets := ipvsAssets(t)
	bins, err := vm.BuildStatic(t.Context(), t.TempDir(),
		"github.com/clusterdns/clusterdns/cmd/clusterdns",
		"github.com/clusterdns/clusterdns/e2e/vm/vmprobe")
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join("testdata", "nodecache-ipvs.sh"))
	if err != nil {
		t.Fatal(err)
	}
	// The stock Corefile as the DaemonSet's comment says for IPVS mode: the
	// ClusterIP out of the bind lines.
	stock := stockNodecacheCorefile(t)
	base := strings.ReplaceAll(stock, "bind 169.254.20.10 10.96.0.10", "bind 169.254.20.10")
	if base == stock {
		t.Fatal("the stock Corefile has no 'bind 169.254.20.10 10.96.0.10' line")
	}
	serve := "cluster.local:53 {\n    kubernetes cluster.local {\n        manifests /run/manifests\n        ttl 30\n    }\n}\n"
	out, err := assets.Run(t.Context(), vm.Spec{
		Binaries: bins,
		Files: map[string][]byte{
			"/etc/clusterdns/objects.yaml":   []byte(nodecacheIPVSObjects),
			"/etc/clusterdns/serve.Corefile": []byte(serve),
			"/etc/clusterdns/Corefile.base":  []byte(base),
			"/etc/clusterdns/resolv.conf":    []byte("nameserver 127.0.0.1\n"),
		},
		Script:    string(script),
		Timeout:   8 * time.Minute,
		MemoryMiB: 1536,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s, boot to power-off %v", assets.Version, out.Elapsed.Round(time.Millisecond))
	if out.ExitCode != 0 || !strings.Contains(out.Result, "== done") {
		t.Fatalf("the VM script failed (exit %d):\n%s", out.ExitCode, out.Result)
	}
	sec := sections(out.Result)
	for _, want := range []string{
		"dns udp 169.254.20.10:53 web.default.svc.cluster.local.: NOERROR A 10.96.0.80",
		"dns udp 10.96.0.10:53 web.default.svc.cluster.local.: NOERROR A 10.96.0.80",
		"dns tcp 169.254.20.10:53 web.default.svc.cluster.local.: NOERROR A 10.96.0.80",
		"dns tcp 10.96.0.10:53 web.default.svc.cluster.local.: NOERROR A 10.96.0.80",
	} {
		if !strings.Contains(sec["queries"], want) {
			t.Errorf("queries lack %q:\n%s", want, sec["queries"])
		}
	}
	// The pod's queries to the cache are not tracked; its queries to
	// kube-dns are (IPVS with conntrack), which shows the table works.
	if strings.Contains(sec["conntrack"], "src=10.100.9.2 dst=169.254.20.10") || !strings.Contains(sec["conntrack"], "src=10.100.9.2 dst=10.96.0.10") {
		t.Errorf("conntrack should hold the pod's flows to kube-dns and none to the cache:\n%s", sec["conntrack"])
	}
	if !strings.Contains(sec["link"], "dummy") {
		t.Errorf("nodelocaldns is not a dummy link on a kernel that has them:\n%s", sec["link"])
	}
	if strings.Contains(sec["ipvsadm"], "169.254.20.10") || !strings.Contains(sec["ipvsadm"], "10.96.0.10:53") {
		t.Errorf("IPVS should hold kube-dns and not the cache's address:\n%s", sec["ipvsadm"])
	}
	if !strings.Contains(sec["refused"], "IPVS mode") {
		t.Errorf("the IPVS agent took --node-local-dns:\n%s", sec["refused"])
	}
	after := sec["after stop"]
	if strings.Contains(after, "link nodelocaldns present") || !strings.Contains(after, "rules: 0\n") ||
		!strings.Contains(after, "dns udp 10.96.0.10:53 web.default.svc.cluster.local.: NOERROR A 10.96.0.80") {
		t.Errorf("after SIGTERM:\n%s", after)
	}
}
