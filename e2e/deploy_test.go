package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/clusterdns/clusterdns/e2e/internal/kubeapi"
)

// manifestDocs reads every YAML document under deploy/, except kustomize's
// own file, which is not an API object.
func manifestDocs(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	root := filepath.Join(repoRoot(), "deploy")
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Base(path) == "kustomization.yaml" || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, doc := range bytes.Split(data, []byte("\n---")) {
			var u unstructured.Unstructured
			if err := yaml.Unmarshal(doc, &u.Object); err != nil {
				return fmt.Errorf("%s document %d: %w", path, i, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			if u.GetKind() == "List" {
				items, _, _ := unstructured.NestedSlice(u.Object, "items")
				for _, it := range items {
					objs = append(objs, &unstructured.Unstructured{Object: it.(map[string]any)})
				}
				continue
			}
			objs = append(objs, &u)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Namespaces first, so that what lives in them can be created.
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int {
		return boolInt(b.GetKind() == "Namespace") - boolInt(a.GetKind() == "Namespace")
	})
	return objs
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestDeployManifestsAndRBAC creates every manifest in deploy/ in a real API
// server, then runs clusterdns with the stock Corefile from the ConfigMap as
// the ServiceAccount of deploy/dns, proving the ClusterRole is enough.
func TestDeployManifestsAndRBAC(t *testing.T) {
	api := kubeapi.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	admin := mustAdmin(t, api)

	// The walkthrough's example ClusterIPs (10.10.x.x) lie outside the
	// harness's service range; a second ServiceCIDR admits them.
	cidr := &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "examples"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.10.0.0/16"}}}
	created, err := admin.NetworkingV1().ServiceCIDRs().Create(ctx, cidr, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("service cidr: %v", err)
	}
	// kube-controller-manager would mark it ready; it does not run here.
	created.Status.Conditions = []metav1.Condition{{Type: networkingv1.ServiceCIDRConditionReady, Status: metav1.ConditionTrue,
		Reason: "E2E", LastTransitionTime: metav1.Now()}}
	if _, err := admin.NetworkingV1().ServiceCIDRs().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("service cidr status: %v", err)
	}
	waitServiceCIDRReady(t, ctx, api)

	dyn, err := dynamic.NewForConfig(api.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(api.AdminConfig)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	var configMap *unstructured.Unstructured
	for _, obj := range manifestDocs(t) {
		gvk := obj.GroupVersionKind()
		mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s %s: %v", gvk, obj.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(mapping.Resource)
		if mapping.Scope.Name() == "namespace" {
			ns := obj.GetNamespace()
			if ns == "" {
				ns = "default"
			}
			ri = dyn.Resource(mapping.Resource).Namespace(ns)
		}
		if _, err := ri.Create(ctx, obj, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
			t.Errorf("the API server rejected %s %s/%s: %v", gvk.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
		if gvk.Kind == "ConfigMap" && obj.GetName() == "clusterdns" {
			configMap = obj
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if configMap == nil {
		t.Fatal("deploy/ has no clusterdns ConfigMap")
	}

	// No controller-manager runs here: write the slices its EndpointSlice
	// controller would, for the example's two Services over the three pods.
	for _, svc := range []string{"service-clusterip", "service-headliness"} {
		slice := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: svc + "-abc", Namespace: "dev", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(80)), Protocol: ptr.To(corev1.ProtocolTCP)}},
		}
		for _, ip := range []string{"172.16.79.83", "172.16.69.206", "172.16.69.207"} {
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
		}
		if _, err := admin.DiscoveryV1().EndpointSlices("dev").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// Run the ConfigMap's Corefile as the deploy/dns ServiceAccount. Only the
	// ports move to free loopback ones, the upstream to a test server on
	// loopback, and the kubernetes block gains the kubeconfig that stands in
	// for the in-cluster credentials a pod would have.
	up := startUpstream(t, "127.0.0.1:0", func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: netip.MustParseAddr("192.0.2.1").AsSlice()})
		}
		_ = w.WriteMsg(m)
	})
	token, err := api.TokenFor(ctx, "kube-system", "clusterdns")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := api.WriteKubeconfig(kubeconfig, token); err != nil {
		t.Fatal(err)
	}
	corefile, _, _ := unstructured.NestedString(configMap.Object, "data", "Corefile")
	dnsPort, healthPort, readyPort, metricsPort := freePort(t), freePort(t), freePort(t), freePort(t)
	for _, r := range []struct{ old, new string }{
		{".:53 {", fmt.Sprintf(".:%d {\n    bind 127.0.0.1", dnsPort)},
		{"health {", fmt.Sprintf("health 127.0.0.1:%d {", healthPort)},
		{"    ready\n", fmt.Sprintf("    ready 127.0.0.1:%d\n", readyPort)},
		{"prometheus :9153", fmt.Sprintf("prometheus 127.0.0.1:%d", metricsPort)},
		{"forward . /etc/resolv.conf", "forward . " + up.addr},
		{"ttl 30\n", "ttl 30\n       kubeconfig " + kubeconfig + "\n"},
	} {
		if !strings.Contains(corefile, r.old) {
			t.Fatalf("the ConfigMap's Corefile has no %q", r.old)
		}
		corefile = strings.Replace(corefile, r.old, r.new, 1)
	}
	path := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(path, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, "serve", "--conf", path)
	readyURL := fmt.Sprintf("http://127.0.0.1:%d/ready", readyPort)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(readyURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready within 30s (last: %v)", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	server := fmt.Sprintf("127.0.0.1:%d", dnsPort)
	for _, tc := range []struct {
		name  string
		qtype uint16
		want  []string
	}{
		{"kube-dns.kube-system.svc.cluster.local", dns.TypeA, []string{"A 10.96.0.10"}},
		{"service-clusterip.dev.svc.cluster.local", dns.TypeA, []string{"A 10.10.97.97"}},
		{"service-headliness.dev.svc.cluster.local", dns.TypeA, []string{"A 172.16.69.206", "A 172.16.69.207", "A 172.16.79.83"}},
		{"service-externalname.dev.svc.cluster.local", dns.TypeA, []string{"A 192.0.2.1", "CNAME www.baidu.com."}},
		{"172-16-79-83.dev.pod.cluster.local", dns.TypeA, []string{"A 172.16.79.83"}},
	} {
		for _, network := range []string{"udp", "tcp"} {
			m, err := query(server, network, tc.name, tc.qtype)
			if err != nil {
				t.Fatalf("%s over %s: %v", tc.name, network, err)
			}
			got := answers(m)
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s over %s: %q, want %q", tc.name, network, got, tc.want)
			}
		}
	}
	if out := p.output(); strings.Contains(out, "forbidden") {
		t.Errorf("the ServiceAccount lacked a permission:\n%s", out)
	}
}

func waitServiceCIDRReady(t *testing.T, ctx context.Context, api *kubeapi.APIServer) {
	t.Helper()
	admin := mustAdmin(t, api)
	for ctx.Err() == nil {
		c, err := admin.NetworkingV1().ServiceCIDRs().Get(ctx, "examples", metav1.GetOptions{})
		if err == nil {
			for _, cond := range c.Status.Conditions {
				if cond.Type == networkingv1.ServiceCIDRConditionReady && cond.Status == metav1.ConditionTrue {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the examples ServiceCIDR never became ready")
}
