package e2e

import (
	"context"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/e2e/internal/kubeapi"
	"github.com/clusterdns/clusterdns/zone"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// published records every snapshot an API source publishes, with the time it
// was published, and lets a test wait for one that satisfies a condition.
type published struct {
	// keep, when positive, bounds how many snapshots are retained (the
	// newest), so that a benchmark at scale does not measure old snapshots
	// as the source's memory. Indices stay absolute.
	keep int

	mu    sync.Mutex
	base  int // absolute index of all[0]
	all   []*zone.Cluster
	times []time.Time
	more  chan struct{}
}

func newPublished() *published { return &published{more: make(chan struct{}, 1)} }

func (p *published) publish(c *zone.Cluster) {
	now := time.Now()
	p.mu.Lock()
	p.all = append(p.all, c)
	p.times = append(p.times, now)
	if p.keep > 0 && len(p.all) > p.keep {
		drop := len(p.all) - p.keep
		p.all = append([]*zone.Cluster(nil), p.all[drop:]...)
		p.times = append([]time.Time(nil), p.times[drop:]...)
		p.base += drop
	}
	p.mu.Unlock()
	select {
	case p.more <- struct{}{}:
	default:
	}
}

// snapshot returns the retained snapshots, their publication times, and the
// absolute index of the first.
func (p *published) snapshot() ([]*zone.Cluster, []time.Time, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*zone.Cluster(nil), p.all...), append([]time.Time(nil), p.times...), p.base
}

// waitFor returns the first snapshot from index `from` on that satisfies ok,
// when it was published, and the index to continue from.
func (p *published) waitFor(t testing.TB, what string, from int, timeout time.Duration, ok func(*zone.Cluster) bool) (*zone.Cluster, time.Time, int) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		all, times, base := p.snapshot()
		for i := max(from-base, 0); i < len(all); i++ {
			if ok(all[i]) {
				return all[i], times[i], base + i + 1
			}
		}
		select {
		case <-p.more:
		case <-deadline:
			t.Fatalf("no snapshot showed %s within %s (%d published)", what, timeout, base+len(all))
		}
	}
}

// runAPISource runs the source until the test ends.
func runAPISource(t testing.TB, src *zone.APISource) *published {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rec := newPublished()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, rec.publish) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("APISource.Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("APISource.Run did not return after cancel")
		}
	})
	return rec
}

// grantDNSReader gives a ServiceAccount exactly the read rights the API
// source needs and returns a kubeconfig that authenticates as it.
func grantDNSReader(t testing.TB, ctx context.Context, api *kubeapi.APIServer, admin kubernetes.Interface) string {
	t.Helper()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "clusterdns-e2e"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services", "namespaces", "pods"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create cluster role: %v", err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "clusterdns-e2e"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "kube-system", Name: "clusterdns"}},
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create cluster role binding: %v", err)
	}
	token, err := api.TokenFor(ctx, "kube-system", "clusterdns")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := api.WriteKubeconfig(path, token); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustAdmin(t testing.TB, api *kubeapi.APIServer) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(api.AdminConfig)
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	return c
}

func createNamespace(t testing.TB, ctx context.Context, c kubernetes.Interface, name string, lbls map[string]string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
}

func newService(ns, name string, lbls map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
}

func newSlice(ns, service, name string, lbls map[string]string, ips ...string) *discoveryv1.EndpointSlice {
	l := map[string]string{discoveryv1.LabelServiceName: service}
	for k, v := range lbls {
		l[k] = v
	}
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: l},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		})
	}
	return s
}

// sliceAddresses lists the endpoint addresses of a Service's slices.
func sliceAddresses(c *zone.Cluster, svc zone.Key) []string {
	var out []string
	for _, s := range c.SlicesFor(svc) {
		for _, e := range s.Endpoints {
			for _, a := range e.Addresses {
				out = append(out, a.String())
			}
		}
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestAPISourceFollowsRealAPIServer runs the API source as a ServiceAccount
// with only list and watch rights, changes Services and EndpointSlices through
// the API, and restarts the API server in the middle: every change must show
// up in a published snapshot, and no snapshot may ever lose what was there.
func TestAPISourceFollowsRealAPIServer(t *testing.T) {
	api := kubeapi.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	admin := mustAdmin(t, api)
	createNamespace(t, ctx, admin, "shop", nil)
	kubeconfig := grantDNSReader(t, ctx, api, admin)

	src, err := zone.NewAPISource(zone.APIConfig{Kubeconfig: kubeconfig, StartupTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rec := runAPISource(t, src)
	const wait = 30 * time.Second
	kubernetesSvc := zone.Key{Namespace: "default", Name: "kubernetes"}
	first, _, next := rec.waitFor(t, "the first sync", 0, wait, func(*zone.Cluster) bool { return true })
	if first.Services[kubernetesSvc] == nil || !first.NamespaceExists("shop") {
		t.Fatalf("first snapshot lacks default/kubernetes or namespace shop: %d services", len(first.Services))
	}

	web := zone.Key{Namespace: "shop", Name: "web"}
	created, err := admin.CoreV1().Services("shop").Create(ctx, newService("shop", "web", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, next = rec.waitFor(t, "the created service", next, wait, func(c *zone.Cluster) bool {
		s := c.Services[web]
		return s != nil && len(s.ClusterIPs) == 1 && s.ClusterIPs[0] == netip.MustParseAddr(created.Spec.ClusterIP)
	})

	if _, err := admin.DiscoveryV1().EndpointSlices("shop").Create(ctx, newSlice("shop", "web", "web-1", nil, "10.1.0.1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, _, next = rec.waitFor(t, "the created slice", next, wait, func(c *zone.Cluster) bool {
		return equalStrings(sliceAddresses(c, web), []string{"10.1.0.1"})
	})

	if _, err := admin.DiscoveryV1().EndpointSlices("shop").Update(ctx, newSlice("shop", "web", "web-1", nil, "10.1.0.1", "10.1.0.2"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, _, next = rec.waitFor(t, "the changed slice", next, wait, func(c *zone.Cluster) bool {
		return equalStrings(sliceAddresses(c, web), []string{"10.1.0.1", "10.1.0.2"})
	})

	created.Spec.Ports = append(created.Spec.Ports, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP})
	if _, err := admin.CoreV1().Services("shop").Update(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, _, next = rec.waitFor(t, "the changed service", next, wait, func(c *zone.Cluster) bool {
		return c.Services[web] != nil && len(c.Services[web].Ports) == 2
	})

	// Restart the API server. The source's watches break; while it is down
	// and after it is back, every snapshot must still hold web and its slice.
	if err := api.Restart(); err != nil {
		t.Fatalf("restart kube-apiserver: %v", err)
	}
	db := zone.Key{Namespace: "shop", Name: "db"}
	if _, err := admin.CoreV1().Services("shop").Create(ctx, newService("shop", "db", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, _, next = rec.waitFor(t, "a service created after the restart", next, wait, func(c *zone.Cluster) bool {
		return c.Services[db] != nil
	})

	// Snapshots published from here on may show the deletes, in either order:
	// Services and slices come through separate watches.
	all, _, base := rec.snapshot()
	beforeDelete := base + len(all)
	if err := admin.DiscoveryV1().EndpointSlices("shop").Delete(ctx, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := admin.CoreV1().Services("shop").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	last, _, _ := rec.waitFor(t, "the deleted service and slice gone", next, wait, func(c *zone.Cluster) bool {
		return c.Services[web] == nil && len(c.SlicesFor(web)) == 0
	})
	if last.Services[db] == nil || last.Services[kubernetesSvc] == nil {
		t.Errorf("deleting web lost other services: %v", last.Services)
	}

	// No snapshot may ever lose default/kubernetes, and until the deletes,
	// none may lose web or its slice once it was there.
	all, _, base = rec.snapshot()
	sawWeb, sawSlice := false, false
	for i, c := range all {
		if c.Services[kubernetesSvc] == nil {
			t.Errorf("snapshot %d (generation %d) lost default/kubernetes: %d services", base+i, c.Generation, len(c.Services))
		}
		if base+i >= beforeDelete {
			continue
		}
		hasWeb, hasSlice := c.Services[web] != nil, len(c.SlicesFor(web)) > 0
		if sawWeb && !hasWeb || sawSlice && !hasSlice {
			t.Errorf("snapshot %d (generation %d) lost shop/web (%v) or its slice (%v) before they were deleted",
				base+i, c.Generation, hasWeb, hasSlice)
		}
		sawWeb, sawSlice = sawWeb || hasWeb, sawSlice || hasSlice
	}
	if !sawWeb || !sawSlice {
		t.Errorf("no snapshot before the deletes held web and its slice")
	}
}

// TestAPISourceSelectors checks labels and namespace_labels against the real
// API server, whose watches (unlike a fake's) apply selectors, including a
// namespace that is relabelled in and out of the selection. It connects with
// an endpoint and a client certificate rather than a kubeconfig.
func TestAPISourceSelectors(t *testing.T) {
	api := kubeapi.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin := mustAdmin(t, api)
	certFile, keyFile, err := api.ClientCert("clusterdns-e2e", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	createNamespace(t, ctx, admin, "served", map[string]string{"dns": "on"})
	createNamespace(t, ctx, admin, "hidden", nil)
	for _, ns := range []string{"served", "hidden"} {
		for _, name := range []string{"public", "private"} {
			lbls := map[string]string{"expose": "yes"}
			if name == "private" {
				lbls = nil
			}
			if _, err := admin.CoreV1().Services(ns).Create(ctx, newService(ns, name, lbls), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := admin.DiscoveryV1().EndpointSlices(ns).Create(ctx, newSlice(ns, name, name+"-1", lbls, "10.2.0.1"), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}

	src, err := zone.NewAPISource(zone.APIConfig{
		Endpoint: api.URL, CertFile: certFile, KeyFile: keyFile, CAFile: api.CAFile,
		Labels: "expose=yes", NamespaceLabels: "dns=on",
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := runAPISource(t, src)
	const wait = 30 * time.Second
	servedPublic := zone.Key{Namespace: "served", Name: "public"}
	hiddenPublic := zone.Key{Namespace: "hidden", Name: "public"}
	first, _, next := rec.waitFor(t, "the first sync", 0, wait, func(*zone.Cluster) bool { return true })
	if len(first.Services) != 1 || first.Services[servedPublic] == nil || len(first.SlicesFor(servedPublic)) != 1 {
		t.Fatalf("first snapshot: services %v, slices of served/public %d; want only served/public with its slice",
			keysOf(first.Services), len(first.SlicesFor(servedPublic)))
	}
	if len(first.Slices) != 1 {
		t.Errorf("first snapshot holds %d slices, want only served/public's", len(first.Slices))
	}

	// The hidden namespace starts matching: its labelled service appears.
	setNamespaceLabels(t, ctx, admin, "hidden", map[string]string{"dns": "on"})
	_, _, next = rec.waitFor(t, "hidden/public after its namespace matched", next, wait, func(c *zone.Cluster) bool {
		return c.Services[hiddenPublic] != nil && len(c.SlicesFor(hiddenPublic)) == 1 && len(c.Services) == 2
	})
	// And stops matching again: it goes away, served/public stays.
	setNamespaceLabels(t, ctx, admin, "hidden", nil)
	_, _, _ = rec.waitFor(t, "hidden/public gone after its namespace stopped matching", next, wait, func(c *zone.Cluster) bool {
		return c.Services[hiddenPublic] == nil && len(c.SlicesFor(hiddenPublic)) == 0 && c.Services[servedPublic] != nil
	})
}

func setNamespaceLabels(t testing.TB, ctx context.Context, c kubernetes.Interface, name string, lbls map[string]string) {
	t.Helper()
	ns, err := c.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Labels = lbls
	if _, err := c.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("relabel namespace %s: %v", name, err)
	}
}

func keysOf[V any](m map[zone.Key]V) []string {
	var out []string
	for k := range m {
		out = append(out, k.String())
	}
	return out
}

// TestAPISourceVerifiedPods checks the Pod watch of "pods verified" against
// the real API server: a running Pod is found by its address, and one that
// has finished leaves the snapshot, because its address may be reused.
func TestAPISourceVerifiedPods(t *testing.T) {
	api := kubeapi.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin := mustAdmin(t, api)
	createNamespace(t, ctx, admin, "jobs", nil)

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "jobs", Name: "worker"},
		Spec: corev1.PodSpec{
			NodeName:   "node-1",
			Containers: []corev1.Container{{Name: "main", Image: "example.invalid/worker"}},
		},
	}
	created, err := admin.CoreV1().Pods("jobs").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod: %v", err)
	}
	// No kubelet runs here, so the test writes the status a kubelet would.
	setPodStatus := func(phase corev1.PodPhase) {
		t.Helper()
		p, err := admin.CoreV1().Pods("jobs").Get(ctx, created.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status.Phase = phase
		p.Status.PodIP = "10.3.0.7"
		p.Status.PodIPs = []corev1.PodIP{{IP: "10.3.0.7"}}
		if _, err := admin.CoreV1().Pods("jobs").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("set pod phase %s: %v", phase, err)
		}
	}
	setPodStatus(corev1.PodRunning)

	src, err := zone.NewAPISource(zone.APIConfig{
		Endpoint: api.URL, CertFile: api.AdminCertFile, KeyFile: api.AdminKeyFile, CAFile: api.CAFile,
		WatchPods: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := runAPISource(t, src)
	addr := netip.MustParseAddr("10.3.0.7")
	first, _, next := rec.waitFor(t, "the first sync", 0, 30*time.Second, func(*zone.Cluster) bool { return true })
	if p := first.PodByIP(addr); p == nil || p.Name != "worker" || p.NodeName != "node-1" {
		t.Fatalf("first snapshot: pod at %s = %+v, want jobs/worker on node-1", addr, p)
	}

	setPodStatus(corev1.PodSucceeded)
	rec.waitFor(t, "the finished pod gone", next, 30*time.Second, func(c *zone.Cluster) bool {
		return c.PodByIP(addr) == nil
	})
}
