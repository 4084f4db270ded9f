package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProxyIPTablesDryRunOfTheExampleCluster(t *testing.T) {
	var stdout, stderr bytes.Buffer
	dir := filepath.Join("..", "..", "deploy", "examples")
	err := runProxy(context.Background(), []string{"--manifests", dir, "--dry-run", "--cluster-cidr", "172.16.0.0/16"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("dry run: %v\n%s", err, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"# iptables-restore --noflush input (IPv4)",
		"-d 10.10.97.97/32 -p tcp -m tcp --dport 80 -j CDNS-SVC-",
		"--dport 30002 -j CDNS-EXT-",
		"-j DNAT --to-destination 172.16.69.207:80",
		"! -s 172.16.0.0/16",
		"# hook: iptables -t nat -I PREROUTING 1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run output lacks %q", want)
		}
	}
	// Headless and ExternalName Services have no virtual address.
	for _, unwanted := range []string{"service-headliness", "service-externalname"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("dry-run output mentions %s", unwanted)
		}
	}
}

func TestProxyFlagErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--cluster-cidr", "10.0.0.0/8,10.1.0.0/16", "--dry-run", "--manifests", "."}, "more than one IPv4 range"},
		{[]string{"--cluster-cidr", "nonsense", "--dry-run"}, "--cluster-cidr"},
		{[]string{"--nodeport-addresses", "1.2.3.4", "--dry-run"}, "--nodeport-addresses"},
		{[]string{"--iptables-masquerade-bit", "32", "--dry-run"}, "--iptables-masquerade-bit"},
		{[]string{"--iptables-min-sync-period", "1m", "--iptables-sync-period", "30s", "--dry-run"}, "--iptables-min-sync-period"},
		{[]string{"--iptables-variant", "xt", "--dry-run"}, "--iptables-variant"},
		{[]string{"--manifests", ".", "--kubeconfig", "x", "--dry-run"}, "excludes"},
		{[]string{"--node-local-dns", "169.254.20", "--dry-run"}, "--node-local-dns"},
		{[]string{"--node-local-dns", "169.254.20.10", "--node-local-dns-service", "kube-dns", "--dry-run"}, "--node-local-dns-service"},
		{[]string{"--node-local-dns", "169.254.20.10", "--proxy-mode", "ipvs", "--dry-run"}, "IPVS mode"},
		{[]string{"stray"}, "unexpected arguments"},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		err := runProxy(context.Background(), tc.args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.args, err, tc.want)
		}
		if stdout.Len() > 0 {
			t.Errorf("%q: printed %q", tc.args, stdout.String())
		}
	}
}

// A manifests folder with this node's Node object and a load balancer of
// externalTrafficPolicy Local: the dry run of each rule mode routes the
// load balancer IP to the endpoint on this node, keeps an ipMode Proxy IP
// out, and zone hints pick this zone's endpoint.
func TestProxyDryRunRoutesForTheNode(t *testing.T) {
	dir := t.TempDir()
	manifests := `apiVersion: v1
kind: Node
metadata: {name: node-a, labels: {topology.kubernetes.io/zone: zone-a}}
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: dev}
spec:
  type: LoadBalancer
  clusterIP: 10.10.0.30
  externalTrafficPolicy: Local
  ports: [{port: 80, targetPort: 8080, nodePort: 30030}]
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.30}, {ip: 203.0.113.31, ipMode: Proxy}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: lb-1, namespace: dev, labels: {kubernetes.io/service-name: lb}}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
- {addresses: [172.16.1.30], nodeName: node-a, hints: {forZones: [{name: zone-a}]}}
- {addresses: [172.16.2.30], nodeName: node-b, hints: {forZones: [{name: zone-b}]}}
`
	if err := os.WriteFile(filepath.Join(dir, "cluster.yaml"), []byte(manifests), 0o644); err != nil {
		t.Fatal(err)
	}
	for mode, wants := range map[string][]string{
		"iptables": {
			`"dev/lb loadbalancer IP" -d 203.0.113.30/32 -p tcp -m tcp --dport 80 -j CDNS-EXT-`,
			`"pod traffic for external destinations" -s 172.16.0.0/16 -j CDNS-SVC-`,
			`-j DNAT --to-destination 172.16.1.30:8080`,
		},
		"nftables": {"fib saddr type local", "203.0.113.30 . tcp . 80 : goto external-"},
		"ipvs":     {"TCP  203.0.113.30:80 rr", "# CDNS-EXTERNAL-LOCAL:"},
	} {
		out := proxyDryRun(t, mode, dir, "--cluster-cidr", "172.16.0.0/16", "--hostname-override", "node-a")
		for _, want := range wants {
			if !strings.Contains(out, want) {
				t.Errorf("%s dry run lacks %q:\n%s", mode, want, out)
			}
		}
		if strings.Contains(out, "203.0.113.31") {
			t.Errorf("%s dry run routes the ipMode Proxy address", mode)
		}
		// Zone hints leave the other zone's endpoint to its own nodes.
		if strings.Contains(out, "172.16.2.30") {
			t.Errorf("%s dry run routes to the endpoint hinted for another zone:\n%s", mode, out)
		}
	}
}

// A dual-stack load balancer with externalTrafficPolicy Local, external IPs
// and source ranges of both families: the dry run of each rule mode shows
// the IPv6 half beside the IPv4 one.
func TestProxyDryRunDualStack(t *testing.T) {
	dir := t.TempDir()
	manifests := `apiVersion: v1
kind: Service
metadata: {name: web, namespace: lab}
spec:
  type: LoadBalancer
  clusterIP: 10.96.10.3
  clusterIPs: [10.96.10.3, "fd00:10:96::3"]
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  externalTrafficPolicy: Local
  healthCheckNodePort: 32003
  externalIPs: [198.51.100.2, "fd00:198:51:100::2"]
  loadBalancerSourceRanges: [192.168.50.100/32, "fd00:50::100/128"]
  ports: [{name: http, protocol: TCP, port: 80, targetPort: 80, nodePort: 30301}]
status:
  loadBalancer:
    ingress: [{ip: 203.0.113.3}, {ip: "fd00:203:113::3"}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-ipv4, namespace: lab, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, protocol: TCP, port: 80}]
endpoints:
- {addresses: [10.244.1.10], nodeName: node-a}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-ipv6, namespace: lab, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, protocol: TCP, port: 80}]
endpoints:
- {addresses: ["fd00:10:244:1::10"], nodeName: node-a}
`
	if err := os.WriteFile(filepath.Join(dir, "cluster.yaml"), []byte(manifests), 0o644); err != nil {
		t.Fatal(err)
	}
	for mode, wants := range map[string][]string{
		"iptables": {
			"# iptables-restore --noflush input (IPv4)",
			`"lab/web:http loadbalancer source range" -s 192.168.50.100/32 -j CDNS-EXT-`,
			"# ip6tables-restore --noflush input (IPv6)",
			`"lab/web:http cluster IP" -d fd00:10:96::3/128 -p tcp -m tcp --dport 80 -j CDNS-SVC-`,
			`"lab/web:http external IP" -d fd00:198:51:100::2/128 -p tcp -m tcp --dport 80 -j CDNS-EXT-`,
			`"lab/web:http loadbalancer source range" -s fd00:50::100/128 -j CDNS-EXT-`,
			`"lab/web:http loadbalancer source not allowed" -d fd00:203:113::3/128 -p tcp -m tcp --dport 80 -j DROP`,
			`! -s fd00:10:244::/48`,
			"-j DNAT --to-destination [fd00:10:244:1::10]:80",
		},
		"nftables": {
			"add element ip clusterdns service-ips { 203.0.113.3 . tcp . 80 : goto firewall-",
			"add element ip6 clusterdns service-ips { fd00:10:96::3 . tcp . 80 : goto service-",
			"add element ip6 clusterdns service-ips { fd00:198:51:100::2 . tcp . 80 : goto external-",
			"add element ip6 clusterdns service-ips { fd00:203:113::3 . tcp . 80 : goto firewall-",
			"ip6 saddr fd00:50::100 goto external-",
			": fd00:10:244:1::10 . 80 }",
		},
		"ipvs": {
			"TCP  203.0.113.3:80 rr",
			"TCP  [fd00:203:113::3]:80 rr",
			"TCP  [fd00:198:51:100::2]:80 rr",
			"-> [fd00:10:244:1::10]:80",
			"fd00:203:113::3,tcp:80,fd00:50::100/128",
		},
	} {
		out := proxyDryRun(t, mode, dir, "--cluster-cidr", "10.244.0.0/16,fd00:10:244::/48", "--hostname-override", "node-a")
		for _, want := range wants {
			if !strings.Contains(out, want) {
				t.Errorf("%s dry run lacks %q:\n%s", mode, want, out)
			}
		}
	}
}

// With --node-local-dns, the dry run of each rule mode routes the cache's
// address to kube-dns's endpoint, as an external IP of kube-dns only.
func TestProxyDryRunNodeLocalDNS(t *testing.T) {
	dir := t.TempDir()
	manifests := `apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: dns, port: 53, protocol: UDP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kube-dns-1, namespace: kube-system, labels: {kubernetes.io/service-name: kube-dns}}
addressType: IPv4
ports: [{name: dns, port: 53, protocol: UDP}]
endpoints:
- {addresses: [172.16.1.53]}
`
	if err := os.WriteFile(filepath.Join(dir, "cluster.yaml"), []byte(manifests), 0o644); err != nil {
		t.Fatal(err)
	}
	for mode, want := range map[string]struct{ route, endpoint string }{
		"iptables": {`"kube-system/kube-dns:dns external IP" -d 169.254.20.10/32 -p udp -m udp --dport 53 -j CDNS-EXT-`, "172.16.1.53:53"},
		"nftables": {"169.254.20.10 . udp . 53 : goto external-", ": 172.16.1.53 . 53 }"},
	} {
		out := proxyDryRun(t, mode, dir, "--cluster-cidr", "172.16.0.0/16", "--node-local-dns", "169.254.20.10")
		if !strings.Contains(out, want.route) || !strings.Contains(out, want.endpoint) {
			t.Errorf("%s dry run lacks %q or %q:\n%s", mode, want.route, want.endpoint, out)
		}
	}
}

// proxyDryRun runs `clusterdns proxy --dry-run` in mode over the manifests
// in dir, with extra flags, and returns what it printed.
func proxyDryRun(t *testing.T, mode, dir string, extra ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args := append([]string{"--proxy-mode", mode, "--manifests", dir, "--dry-run"}, extra...)
	if err := runProxy(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("%s dry run: %v\n%s", mode, err, stderr.String())
	}
	return stdout.String()
}
