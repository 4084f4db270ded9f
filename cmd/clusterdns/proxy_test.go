package main

import (
	"bytes"
	"context"
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
