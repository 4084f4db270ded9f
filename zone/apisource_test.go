package zone

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// snapshots records what a source publishes and lets a test wait for a
// snapshot that satisfies a condition.
type snapshots struct {
	mu   sync.Mutex
	all  []*Cluster
	more chan struct{}
}

func newSnapshots() *snapshots { return &snapshots{more: make(chan struct{}, 1)} }

func (s *snapshots) publish(c *Cluster) {
	s.mu.Lock()
	s.all = append(s.all, c)
	s.mu.Unlock()
	select {
	case s.more <- struct{}{}:
	default:
	}
}

func (s *snapshots) list() []*Cluster {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Cluster(nil), s.all...)
}

// waitFor returns the first snapshot (from index `from` on) for which ok
// holds, failing the test after a generous bound.
func (s *snapshots) waitFor(t *testing.T, what string, from int, ok func(*Cluster) bool) (*Cluster, int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		all := s.list()
		for i := from; i < len(all); i++ {
			if ok(all[i]) {
				return all[i], i + 1
			}
		}
		select {
		case <-s.more:
		case <-deadline:
			t.Fatalf("no published snapshot shows %s (%d snapshots)", what, len(all))
		}
	}
}

func runSource(t *testing.T, src *APISource) *snapshots {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	rec := newSnapshots()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, rec.publish) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return rec
}

func apiService(ns, name, clusterIP string, lbls map[string]string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls, ResourceVersion: "1"},
		Spec: corev1.ServiceSpec{
			ClusterIP:  clusterIP,
			ClusterIPs: []string{clusterIP},
			Ports:      []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
}

func apiSlice(ns, name, service string, ips ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: name, ResourceVersion: "1",
			Labels: map[string]string{discoveryv1.LabelServiceName: service},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080)}},
	}
	for _, ip := range ips {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}})
	}
	return s
}

func apiNamespace(name string, lbls map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls, ResourceVersion: "1"}}
}

func TestAPISourcePublishesOnlyAfterSyncAndFollowsChanges(t *testing.T) {
	client := fake.NewClientset(
		apiNamespace("shop", nil),
		apiService("shop", "web", "10.96.0.10", nil),
		apiSlice("shop", "web-1", "web", "10.1.0.1"),
	)
	src, err := NewAPISourceForListWatch(fakeListWatch(client), APIConfig{StartupTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	src.MinInterval = time.Millisecond
	rec := runSource(t, src)

	first, next := rec.waitFor(t, "the initial objects", 0, func(c *Cluster) bool { return true })
	if first.Generation != 1 {
		t.Errorf("first snapshot has generation %d, want 1", first.Generation)
	}
	web := Key{Namespace: "shop", Name: "web"}
	if svc := first.Services[web]; svc == nil || svc.ClusterIPs[0].String() != "10.96.0.10" {
		t.Fatalf("first snapshot: service %v = %+v, want ClusterIP 10.96.0.10", web, svc)
	}
	if got := first.SlicesFor(web); len(got) != 1 || got[0].Endpoints[0].Addresses[0].String() != "10.1.0.1" {
		t.Fatalf("first snapshot: slices of web = %+v, want one with 10.1.0.1", got)
	}
	if !first.NamespaceExists("shop") {
		t.Errorf("first snapshot does not know namespace shop")
	}

	ctx := context.Background()
	// A new Service appears.
	if _, err := client.CoreV1().Services("shop").Create(ctx, apiService("shop", "db", "10.96.0.11", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, next = rec.waitFor(t, "the created service", next, func(c *Cluster) bool {
		return c.Services[Key{Namespace: "shop", Name: "db"}] != nil
	})
	// A slice changes.
	changed := apiSlice("shop", "web-1", "web", "10.1.0.2")
	changed.ResourceVersion = "2"
	if _, err := client.DiscoveryV1().EndpointSlices("shop").Update(ctx, changed, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, next = rec.waitFor(t, "the changed slice", next, func(c *Cluster) bool {
		s := c.SlicesFor(web)
		return len(s) == 1 && s[0].Endpoints[0].Addresses[0].String() == "10.1.0.2"
	})
	// The Service goes away.
	if err := client.CoreV1().Services("shop").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	last, _ := rec.waitFor(t, "the deleted service gone", next, func(c *Cluster) bool { return c.Services[web] == nil })
	if last.Services[Key{Namespace: "shop", Name: "db"}] == nil {
		t.Errorf("deleting web also lost db")
	}

	for i, c := range rec.list() {
		if i > 0 && c.Generation <= rec.list()[i-1].Generation {
			t.Errorf("snapshot %d has generation %d, not above the previous one", i, c.Generation)
		}
	}
}

func TestAPISourceWatchesPodsOnlyWhenAsked(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-0", ResourceVersion: "1", Labels: map[string]string{"app": "web"}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.1.0.1", PodIPs: []corev1.PodIP{{IP: "10.1.0.1"}}},
	}
	for _, watch := range []bool{false, true} {
		client := fake.NewClientset(pod.DeepCopy())
		src, err := NewAPISourceForListWatch(fakeListWatch(client), APIConfig{WatchPods: watch})
		if err != nil {
			t.Fatal(err)
		}
		first, _ := runSource(t, src).waitFor(t, "the first snapshot", 0, func(*Cluster) bool { return true })
		got := first.PodByIP(addrs("10.1.0.1")[0])
		if watch && (got == nil || got.Name != "web-0") {
			t.Errorf("WatchPods: pod by 10.1.0.1 = %+v, want web-0", got)
		}
		if watch && got != nil && (got.Labels != nil || got.Ports != nil) {
			t.Errorf("WatchPods: cached pod keeps labels or ports: %+v", got)
		}
		if !watch && got != nil {
			t.Errorf("without WatchPods the snapshot still has pod %v", got.Key)
		}
	}
}

func TestAPISourceWatchesItsOwnNode(t *testing.T) {
	node := func(name, zone string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: "1", Labels: map[string]string{corev1.LabelTopologyZone: zone}}}
	}
	client := fake.NewClientset(node("n1", "z1"), node("n2", "z2"))
	// A namespace filter must not hide the Node, which has no namespace.
	src, err := NewAPISourceForListWatch(fakeListWatch(client), APIConfig{NodeName: "n1", NamespaceLabels: "dns=on"})
	if err != nil {
		t.Fatal(err)
	}
	src.MinInterval = time.Millisecond
	rec := runSource(t, src)
	first, next := rec.waitFor(t, "the first snapshot", 0, func(*Cluster) bool { return true })
	if got := first.NodeZone("n1"); got != "z1" {
		t.Errorf("zone of n1 = %q, want z1", got)
	}
	// The fake API ignores field selectors; the source keeps only its node.
	if first.Nodes["n2"] != nil {
		t.Errorf("the snapshot holds another node: %+v", first.Nodes["n2"])
	}
	moved := node("n1", "z3")
	moved.ResourceVersion = "2"
	if _, err := client.CoreV1().Nodes().Update(context.Background(), moved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "the relabelled node", next, func(c *Cluster) bool { return c.NodeZone("n1") == "z3" })

	plain, err := NewAPISourceForListWatch(fakeListWatch(client), APIConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := runSource(t, plain).waitFor(t, "the first snapshot", 0, func(*Cluster) bool { return true }); len(c.Nodes) != 0 {
		t.Errorf("without NodeName the source read nodes: %v", c.Nodes)
	}
}

func TestAPISourceRejectsBadSelectors(t *testing.T) {
	for _, cfg := range []APIConfig{{Labels: "app in (web"}, {NamespaceLabels: "=x"}} {
		if _, err := NewAPISourceForListWatch(fakeListWatch(fake.NewClientset()), cfg); err == nil {
			t.Errorf("%+v: no error for a malformed selector", cfg)
		}
	}
}

// The handlers are tested directly for what the fake API cannot show: a
// re-list, tombstones, and namespaces moving in and out of namespace_labels.
func TestAPIStateHandlers(t *testing.T) {
	src, err := NewAPISourceForListWatch(fakeListWatch(fake.NewClientset()), APIConfig{NamespaceLabels: "dns=on"})
	if err != nil {
		t.Fatal(err)
	}
	kinds := src.kinds()
	services, namespaces := kinds[0], kinds[2]
	st := &apiState{builder: NewBuilder(), kick: make(chan struct{}, 1), allowed: map[string]bool{}, scoped: []apiKind{kinds[0], kinds[1]}}
	svcHandler, nsHandler := st.handler(services), st.handler(namespaces)
	cached := func(k apiKind, obj runtime.Object) *cachedObject {
		out, err := slimming(k.transform)(obj)
		if err != nil {
			t.Fatal(err)
		}
		return out.(*cachedObject)
	}
	web := cached(services, apiService("shop", "web", "10.96.0.10", nil))
	// The informer stores before it notifies; replaying a namespace reads
	// the store, so the test fills it the same way.
	if err := services.informer.GetIndexer().Add(web); err != nil {
		t.Fatal(err)
	}

	svcHandler.OnAdd(web, true)
	if st.builder.Dirty() {
		t.Fatalf("a service in a namespace that does not match namespace_labels changed the zone")
	}
	shop := cached(namespaces, apiNamespace("shop", map[string]string{"dns": "on"}))
	nsHandler.OnAdd(shop, true)
	if c := st.snapshot(); c.Services[web.value.(*Service).Key] == nil {
		t.Fatalf("the namespace started matching but its service was not added")
	}

	svcHandler.OnUpdate(web, cached(services, apiService("shop", "web", "10.96.0.10", nil)))
	if st.builder.Dirty() {
		t.Errorf("re-listing an unchanged object (same resourceVersion) marked the zone changed")
	}
	moved := apiService("shop", "web", "10.96.0.12", nil)
	moved.ResourceVersion = "2"
	svcHandler.OnUpdate(web, cached(services, moved))
	if c := st.snapshot(); c.Services[Key{Namespace: "shop", Name: "web"}].ClusterIPs[0].String() != "10.96.0.12" {
		t.Errorf("an update with a new resourceVersion was not applied")
	}

	nsHandler.OnDelete(cache.DeletedFinalStateUnknown{Key: "shop", Obj: shop})
	if c := st.snapshot(); len(c.Services) != 0 || c.NamespaceExists("shop") {
		t.Errorf("after the namespace stopped matching: services %v, namespace known %v", c.Services, c.NamespaceExists("shop"))
	}

	svcHandler.OnDelete(cache.DeletedFinalStateUnknown{Key: "shop/web", Obj: web})
	if st.builder.Dirty() {
		t.Errorf("deleting a service that was not served changed the zone")
	}
}

func TestTransformSlimsAndIsIdempotent(t *testing.T) {
	src, err := NewAPISourceForListWatch(fakeListWatch(fake.NewClientset()), APIConfig{})
	if err != nil {
		t.Fatal(err)
	}
	services := src.kinds()[0]
	in := apiService("shop", "web", "10.96.0.10", map[string]string{"team": "a"})
	in.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{...}"}
	in.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Time: &metav1.Time{Time: time.Now().Add(-time.Hour)}}}
	transform := slimming(services.transform)
	out, err := transform(in)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := out.(*cachedObject)
	if !ok {
		t.Fatalf("transform returned %T, want *cachedObject", out)
	}
	if o.GetNamespace() != "shop" || o.GetName() != "web" || o.GetResourceVersion() != "1" {
		t.Errorf("cached metadata = %q/%q@%q, want shop/web@1", o.GetNamespace(), o.GetName(), o.GetResourceVersion())
	}
	if key, err := cache.MetaNamespaceKeyFunc(o); err != nil || key != "shop/web" {
		t.Errorf("cache key = %q, %v; want shop/web", key, err)
	}
	if again, _ := transform(o); again != o {
		t.Errorf("transforming a cached object again gave a new object")
	}
	tomb := cache.DeletedFinalStateUnknown{Key: "shop/web", Obj: o}
	if again, _ := transform(tomb); again != tomb {
		t.Errorf("a tombstone did not pass through the transform")
	}
}

func TestObservedUpdate(t *testing.T) {
	base := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name              string
		recorded, arrived time.Time
		want              time.Time
	}{
		{"arrived within the recorded second", base, base.Add(300 * time.Millisecond), base.Add(300 * time.Millisecond)},
		{"arrived just after the second", base, base.Add(1010 * time.Millisecond), base.Add(time.Second)},
		{"arrived seconds later", base, base.Add(5 * time.Second), base.Add(time.Second)},
		{"no recorded time", time.Time{}, base, base},
	}
	for _, tt := range tests {
		if got := observedUpdate(tt.recorded, tt.arrived); !got.Equal(tt.want) {
			t.Errorf("%s: observedUpdate = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRESTConfig(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	const kubeconfigText = `apiVersion: v1
kind: Config
clusters:
- name: a
  cluster: {server: "https://a.example:6443"}
- name: b
  cluster: {server: "https://b.example:6443"}
users:
- name: u
  user: {token: secret}
contexts:
- name: first
  context: {cluster: a, user: u}
- name: second
  context: {cluster: b, user: u}
current-context: first
`
	if err := os.WriteFile(kubeconfig, []byte(kubeconfigText), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")

	tests := []struct {
		name     string
		cfg      APIConfig
		wantHost string
		wantErr  bool
	}{
		{"kubeconfig current context", APIConfig{Kubeconfig: kubeconfig}, "https://a.example:6443", false},
		{"kubeconfig named context", APIConfig{Kubeconfig: kubeconfig, Context: "second"}, "https://b.example:6443", false},
		{"endpoint overrides kubeconfig", APIConfig{Kubeconfig: kubeconfig, Endpoint: "https://c.example"}, "https://c.example", false},
		{"endpoint with tls", APIConfig{Endpoint: "https://10.0.0.1:6443", CertFile: "c", KeyFile: "k", CAFile: "ca"}, "https://10.0.0.1:6443", false},
		{"missing kubeconfig", APIConfig{Kubeconfig: filepath.Join(dir, "none")}, "", true},
		{"unknown context", APIConfig{Kubeconfig: kubeconfig, Context: "third"}, "", true},
		{"nothing outside a cluster", APIConfig{}, "", true},
	}
	for _, tt := range tests {
		got, err := RESTConfig(tt.cfg)
		if tt.wantErr {
			if err == nil {
				t.Errorf("%s: no error", tt.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if got.Host != tt.wantHost {
			t.Errorf("%s: host = %q, want %q", tt.name, got.Host, tt.wantHost)
		}
		if tt.cfg.CertFile != "" && (got.CertFile != "c" || got.KeyFile != "k" || got.CAFile != "ca") {
			t.Errorf("%s: tls files = %q %q %q", tt.name, got.CertFile, got.KeyFile, got.CAFile)
		}
	}
}

// fakeListWatch reads a fake clientset the way restListWatch reads a server.
func fakeListWatch(c kubernetes.Interface) ListWatchFunc {
	return func(resource string, tweak func(*metav1.ListOptions)) cache.ListerWatcher {
		var list func(context.Context, metav1.ListOptions) (runtime.Object, error)
		var watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)
		switch resource {
		case ResourceServices:
			cl := c.CoreV1().Services("")
			list = func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return cl.List(ctx, o) }
			watchFn = cl.Watch
		case ResourceEndpointSlices:
			cl := c.DiscoveryV1().EndpointSlices("")
			list = func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return cl.List(ctx, o) }
			watchFn = cl.Watch
		case ResourceNamespaces:
			cl := c.CoreV1().Namespaces()
			list = func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return cl.List(ctx, o) }
			watchFn = cl.Watch
		case ResourceNodes:
			cl := c.CoreV1().Nodes()
			list = func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return cl.List(ctx, o) }
			watchFn = cl.Watch
		case ResourcePods:
			cl := c.CoreV1().Pods("")
			list = func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) { return cl.List(ctx, o) }
			watchFn = cl.Watch
		default:
			panic("unknown resource " + resource)
		}
		// The fake clientset cannot stream lists; it says so, and the
		// reflector lists and watches instead.
		return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				if tweak != nil {
					tweak(&o)
				}
				return list(ctx, o)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				if tweak != nil {
					tweak(&o)
				}
				return watchFn(ctx, o)
			},
		}, c)
	}
}
