package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestIPVSFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{args: nil},
		{args: []string{"--ipvs-scheduler", "mh", "--ipvs-strict-arp", "--ipvs-tcp-timeout", "15m", "--ipvs-udp-timeout", "30s"}},
		{args: []string{"--ipvs-scheduler", "wlc"}, wantErr: "--ipvs-scheduler"},
		{args: []string{"--ipvs-min-sync-period", "1m", "--ipvs-sync-period", "30s"}, wantErr: "--ipvs-min-sync-period"},
		{args: []string{"--ipvs-min-sync-period", "0s"}, wantErr: "--ipvs-min-sync-period"},
		{args: []string{"--ipvs-tcpfin-timeout", "1500ms"}, wantErr: "whole seconds"},
		{args: []string{"--ipvs-udp-timeout", "-1s"}, wantErr: "whole seconds"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs, o := proxyFlags(&bytes.Buffer{})
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := o.ipvs.validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one naming %q", err, tt.wantErr)
			}
		})
	}
	// kube-proxy's defaults.
	fs, o := proxyFlags(&bytes.Buffer{})
	_ = fs.Parse(nil)
	if o.ipvs.scheduler != "rr" || o.ipvs.syncPeriod != 30*time.Second || o.ipvs.strictARP {
		t.Errorf("defaults: %+v", o.ipvs)
	}
}

func TestProxyModeIsChecked(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := runProxy(t.Context(), []string{"--proxy-mode", "userspace", "--dry-run", "--manifests", "../../deploy/examples"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "want iptables, nftables or ipvs") {
		t.Fatalf("error %v, want an unknown mode refused", err)
	}
}

func TestNFTablesDryRunOfTheExampleCluster(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := runProxy(t.Context(), []string{"--proxy-mode", "nftables", "--dry-run", "--manifests", "../../deploy/examples",
		"--cluster-cidr", "172.16.0.0/16"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	for _, want := range []string{
		"add table ip clusterdns\n",
		"add table ip6 clusterdns\n",
		"add element ip clusterdns service-ips { 10.10.97.97 . tcp . 80 : goto service-",
		" meta l4proto tcp dnat ip to numgen random mod 3 map @endpoints-tcp-0\n",
		" : 172.16.79.83 . 80 }\n",
		" ip saddr != 172.16.0.0/16 jump mark-for-masquerade\n",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("dry run lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestIPVSDryRunOfTheExampleCluster(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := runProxy(t.Context(), []string{"--proxy-mode", "ipvs", "--dry-run", "--manifests", "../../deploy/examples",
		"--nodeport-addresses", "192.0.2.0/24"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	for _, want := range []string{
		"Prot LocalAddress:Port Scheduler Flags\n",
		"TCP  10.10.97.97:80 rr\n",
		"TCP  10.10.25.194:80 rr\n",
		"  -> 172.16.79.83:80              Masq    1      0          0         \n",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("dry run lacks %q:\n%s", want, stdout.String())
		}
	}
}
