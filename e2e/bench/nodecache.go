package bench

import (
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// NodeLocal's stock addresses in deploy/nodecache's Corefile, which the
// benchmark moves to loopback.
const (
	stockLocalIP   = "169.254.20.10"
	stockClusterIP = "10.96.0.10"
)

// StockNodecacheCorefile reads the Corefile of deploy/nodecache's ConfigMap:
// NodeLocal DNSCache's stock file after its documented substitutions, with
// __PILLAR__CLUSTER__DNS__ and __PILLAR__UPSTREAM__SERVERS__ left for
// node-cache to fill at start.
func StockNodecacheCorefile(configMap string) (string, error) {
	data, err := os.ReadFile(configMap)
	if err != nil {
		return "", fmt.Errorf("stock corefile: %w", err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(data, &cm); err != nil {
		return "", fmt.Errorf("stock corefile %s: %w", configMap, err)
	}
	cf, ok := cm.Data["Corefile"]
	if !ok {
		return "", fmt.Errorf("stock corefile %s: no data.Corefile", configMap)
	}
	return cf, nil
}

// NodecacheCorefile fills the stock Corefile for a run on loopback: both
// placeholders name upstream (node-cache would put the kube-dns-upstream
// ClusterIP in one and the node's resolv.conf in the other), and the two
// local addresses, in bind, health and the metrics listener, become
// localIP and secondIP, so that nothing listens beyond loopback. Both peers
// serve this same text.
func NodecacheCorefile(stock, localIP, secondIP, upstream string) (string, error) {
	r := strings.NewReplacer(
		"__PILLAR__CLUSTER__DNS__", upstream,
		"__PILLAR__UPSTREAM__SERVERS__", upstream,
		stockLocalIP, localIP,
		stockClusterIP, secondIP,
		"prometheus :", "prometheus "+localIP+":",
	)
	cf := r.Replace(stock)
	if i := strings.Index(cf, "__PILLAR__"); i >= 0 {
		return "", fmt.Errorf("the node cache Corefile still has a placeholder: %q", cf[i:min(len(cf), i+40)])
	}
	if strings.Contains(cf, "prometheus :") || strings.Contains(cf, stockLocalIP) || strings.Contains(cf, stockClusterIP) {
		return "", fmt.Errorf("the node cache Corefile still listens beyond loopback:\n%s", cf)
	}
	return cf, nil
}
