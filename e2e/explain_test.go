package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// explainView is the part of `clusterdns explain -o json` the tests read.
type explainView struct {
	DNS       []string `json:"dns"`
	Endpoints []struct {
		Address string `json:"address"`
		Ready   bool   `json:"ready"`
	} `json:"endpoints"`
	Node *struct {
		Mode  string `json:"mode"`
		Ports []struct {
			Port       string   `json:"port"`
			Kind       string   `json:"kind"`
			NodePort   int      `json:"nodePort"`
			Kernel     []string `json:"kernel"`
			InSync     bool     `json:"inSync"`
			Missing    []string `json:"missing"`
			Extra      []string `json:"extra"`
			Programmed bool     `json:"programmed"`
		} `json:"ports"`
	} `json:"node"`
	Problems []string `json:"problems"`
}

// explain runs `clusterdns explain -o json` inside the node namespace, as
// an operator on the node would, and decodes its standard output.
func (f *proxyFixture) explain(t *testing.T, query string) (explainView, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", f.topo.Node.Name, f.bin, "explain", "-o", "json",
		"--manifests", f.manifests, "--iptables-variant", proxyIPTablesVariant, query)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("explain %s: %v\n%s%s", query, err, stdout.String(), stderr.String())
	}
	var v explainView
	if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
		t.Fatalf("explain %s: %v\n%s", query, err, stdout.String())
	}
	if v.Node == nil || len(v.Node.Ports) == 0 {
		t.Fatalf("explain %s shows no node ports:\n%s\n%s", query, stdout.String(), stderr.String())
	}
	return v, stdout.String()
}

// waitExplain runs explain until ok accepts its view (the agent syncs after
// its minimum sync period), bounded by proxyPatience.
func (f *proxyFixture) waitExplain(t *testing.T, query string, what string, ok func(explainView) bool) explainView {
	t.Helper()
	deadline := time.Now().Add(proxyPatience)
	for {
		v, out := f.explain(t, query)
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s explain %s still does not show %s:\n%s", proxyPatience, query, what, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestExplainIPTables(t *testing.T) { testExplain(t, "iptables") }

func TestExplainNFTables(t *testing.T) { testExplain(t, "nftables") }

// testExplain checks explain against the rules one mode programs: its kernel
// list is where traffic really goes, it follows a readiness change, and once
// the agent is gone and the cluster changes it says exactly what differs.
func testExplain(t *testing.T, mode string) {
	f := newProxyFixture(t, mode)
	node := f.topo.Node
	const svc = "service-clusterip.dev"
	gone := proxyPodIPs[2]
	kernelIPs := func(v explainView) []string {
		var ips []string
		for _, ep := range v.Node.Ports[0].Kernel {
			ip, _, _ := strings.Cut(ep, ":")
			ips = append(ips, ip)
		}
		return ips
	}

	t.Run("in sync, and the kernel list is where traffic goes", func(t *testing.T) {
		v, out := f.explain(t, svc)
		p := v.Node.Ports[0]
		if v.Node.Mode != mode || p.Port != "80/TCP" || !p.InSync || len(p.Kernel) != len(proxyPodIPs) || len(v.Problems) != 0 {
			t.Fatalf("want %s mode, 80/TCP in sync to the three pods, no problems:\n%s", mode, out)
		}
		if !slices.Contains(v.DNS, "service-clusterip.dev.svc.cluster.local.\t5\tIN\tA\t10.10.97.97") {
			t.Errorf("DNS records %q lack the cluster IP's A record", v.DNS)
		}
		reachAll(t, node, proxyClusterIP, kernelIPs(v))
	})
	t.Run("a node port is read back and compared too", func(t *testing.T) {
		v, out := f.explain(t, "service-nodeport.dev")
		if len(v.Node.Ports) != 2 || len(v.Problems) != 0 {
			t.Fatalf("want the cluster IP and the node port, no problems:\n%s", out)
		}
		for i, kind := range []string{"clusterIP", "nodePort"} {
			p := v.Node.Ports[i]
			if p.Kind != kind || p.Port != "80/TCP" || !p.InSync || len(p.Kernel) != len(proxyPodIPs) || (kind == "nodePort") != (p.NodePort == proxyNodePort) {
				t.Errorf("port %d: want %s 80/TCP in sync to the three pods:\n%s", i, kind, out)
			}
		}
	})
	t.Run("a Service without endpoints is programmed as rejected", func(t *testing.T) {
		v, out := f.explain(t, proxyNobody)
		p := v.Node.Ports[0]
		if !p.Programmed || !p.InSync || len(p.Kernel) != 0 || !slices.ContainsFunc(v.Problems, func(s string) bool { return strings.HasPrefix(s, "no endpoints") }) {
			t.Errorf("want a programmed, empty, in-sync port and a no-endpoints problem:\n%s", out)
		}
	})
	t.Run("an unready endpoint shows and leaves the kernel list", func(t *testing.T) {
		f.setPods(t, gone)
		v := f.waitExplain(t, svc, gone+" unready and out of the kernel list", func(v explainView) bool {
			p := v.Node.Ports[0]
			return p.InSync && len(p.Kernel) == 2 && !slices.Contains(kernelIPs(v), gone)
		})
		for _, ep := range v.Endpoints {
			if ep.Ready == (ep.Address == gone) {
				t.Errorf("endpoint %s ready=%v", ep.Address, ep.Ready)
			}
		}
		reachAll(t, node, proxyClusterIP, kernelIPs(v))
	})
	t.Run("with the agent killed, a change shows as a precise difference", func(t *testing.T) {
		if err := syscall.Kill(-f.agent.Cmd.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(proxyPatience)
		for exited, _ := f.agent.Exited(); !exited; exited, _ = f.agent.Exited() {
			if time.Now().After(deadline) {
				t.Fatal("the agent did not exit after SIGKILL")
			}
			time.Sleep(20 * time.Millisecond)
		}
		f.setPods(t) // every pod ready again; nobody programs it
		v, out := f.explain(t, svc)
		p := v.Node.Ports[0]
		want := "10.10.97.97:80/TCP: the kernel does not send to " + gone + ":80"
		if p.InSync || !slices.Equal(p.Missing, []string{gone + ":80"}) || len(p.Extra) != 0 || !slices.Equal(v.Problems, []string{want}) {
			t.Errorf("want exactly %q:\n%s", want, out)
		}
		// The stale rules are still what traffic follows.
		reachAll(t, node, proxyClusterIP, kernelIPs(v))
	})
}
