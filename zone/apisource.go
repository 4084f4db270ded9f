package zone

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// DefaultMinInterval is the least time between two snapshots of an APISource.
// A change after a quiet spell is published at once; a burst of changes is
// gathered into one snapshot per interval, so that rebuilding views downstream
// never falls behind a stream of writes.
const DefaultMinInterval = 50 * time.Millisecond

// apiPodFieldSelector leaves out Pods that have finished: their addresses may
// already belong to another Pod, so they must not verify pod records.
const apiPodFieldSelector = "status.phase!=Succeeded,status.phase!=Failed"

// APISource is a Source that watches the Kubernetes API with client-go
// informers: Services, EndpointSlices and Namespaces, and Pods when the config
// asks for them. The informer caches hold slim model objects, never full API
// objects.
//
// The first snapshot is published once every informer has delivered its
// initial list; until then the source publishes nothing, which consumers treat
// as "not ready". After that, a broken watch or an API server restart is
// repaired by the informers' own re-list, which reconciles the cache in place,
// so the last state keeps being served and no empty snapshot is published in
// between.
type APISource struct {
	listWatch         ListWatchFunc
	startupTimeout    time.Duration
	serviceSelector   labels.Selector // nil selects everything
	namespaceSelector labels.Selector // nil selects everything
	watchPods         bool
	nodeName          string

	// Logger receives the source's own messages; nil means slog.Default().
	Logger *slog.Logger
	// MinInterval overrides DefaultMinInterval when positive.
	MinInterval time.Duration
}

var _ Source = (*APISource)(nil)

// NewAPISource returns a source for the API server that cfg describes. It
// only reads configuration: nothing is contacted until Run.
func NewAPISource(cfg APIConfig) (*APISource, error) {
	restConfig, err := RESTConfig(cfg)
	if err != nil {
		return nil, err
	}
	lw, err := restListWatch(restConfig)
	if err != nil {
		return nil, err
	}
	return NewAPISourceForListWatch(lw, cfg)
}

// NewAPISourceForListWatch returns a source reading through lw; cfg's
// connection fields are ignored. Tests pass a fake clientset's here.
func NewAPISourceForListWatch(lw ListWatchFunc, cfg APIConfig) (*APISource, error) {
	s := &APISource{listWatch: lw, startupTimeout: cfg.StartupTimeout, watchPods: cfg.WatchPods, nodeName: cfg.NodeName}
	var err error
	if s.serviceSelector, err = parseSelector(cfg.Labels); err != nil {
		return nil, fmt.Errorf("labels: %w", err)
	}
	if s.namespaceSelector, err = parseSelector(cfg.NamespaceLabels); err != nil {
		return nil, fmt.Errorf("namespace_labels: %w", err)
	}
	return s, nil
}

func parseSelector(text string) (labels.Selector, error) {
	if text == "" {
		return nil, nil
	}
	sel, err := labels.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("selector %q: %w", text, err)
	}
	return sel, nil
}

// RESTConfig turns the connection part of cfg into a client configuration: a
// kubeconfig file (with an optional context, and Endpoint overriding its
// server), else an explicit endpoint with optional TLS files, else the
// in-cluster service account.
func RESTConfig(cfg APIConfig) (*rest.Config, error) {
	var rc *rest.Config
	switch {
	case cfg.Kubeconfig != "":
		rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: cfg.Kubeconfig}
		overrides := &clientcmd.ConfigOverrides{CurrentContext: cfg.Context}
		if cfg.Endpoint != "" {
			overrides.ClusterInfo.Server = cfg.Endpoint
		}
		loaded, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", cfg.Kubeconfig, err)
		}
		rc = loaded
	case cfg.Endpoint != "":
		rc = &rest.Config{
			Host: cfg.Endpoint,
			TLSClientConfig: rest.TLSClientConfig{
				CertFile: cfg.CertFile,
				KeyFile:  cfg.KeyFile,
				CAFile:   cfg.CAFile,
			},
		}
	default:
		inCluster, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no endpoint or kubeconfig given, and not running in a cluster: %w", err)
		}
		rc = inCluster
	}
	rc.UserAgent = "clusterdns"
	// Protobuf is cheaper than JSON to decode, which matters for the initial
	// list of a large cluster.
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	return rc, nil
}

// apiKind is one watched resource: its informer, how to slim its objects, and
// what its objects do to the builder.
type apiKind struct {
	name      string
	informer  cache.SharedIndexInformer
	transform func(any) any
	set       func(*Builder, any)
	del       func(*Builder, Key)
}

// Run watches the API until ctx ends. It returns an error only when the
// informers cannot be set up; an unreachable API server is retried forever
// (the first snapshot waits for it, and a warning is logged when that takes
// longer than the startup timeout).
func (s *APISource) Run(ctx context.Context, publish func(*Cluster)) error {
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	st := &apiState{builder: NewBuilder(), kick: make(chan struct{}, 1)}
	kinds := s.kinds()
	if s.namespaceSelector != nil {
		st.allowed = make(map[string]bool)
		for _, k := range kinds {
			if k.name != "namespaces" && k.name != "nodes" {
				st.scoped = append(st.scoped, k)
			}
		}
	}
	var synced []cache.InformerSynced
	for _, k := range kinds {
		if err := k.informer.SetTransform(slimming(k.transform)); err != nil {
			return fmt.Errorf("kubernetes %s informer: %w", k.name, err)
		}
		reg, err := k.informer.AddEventHandler(st.handler(k))
		if err != nil {
			return fmt.Errorf("kubernetes %s informer: %w", k.name, err)
		}
		synced = append(synced, reg.HasSynced)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait: stop the informers, then wait for them
	for _, k := range kinds {
		wg.Go(func() { k.informer.RunWithContext(ctx) })
	}

	started := time.Now()
	if !waitSynced(ctx, synced, s.startupTimeout, func() {
		log.Warn("kubernetes: API not synced within the startup timeout; not ready until it is",
			"startup_timeout", s.startupTimeout)
	}) {
		return nil
	}
	log.Info("kubernetes: API synced", "took", time.Since(started).Round(time.Millisecond))

	interval := s.MinInterval
	if interval <= 0 {
		interval = DefaultMinInterval
	}
	publish(st.snapshot())
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-st.kick:
		}
		if wait := time.Until(last.Add(interval)); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		if c := st.snapshotIfDirty(); c != nil {
			publish(c)
			last = time.Now()
		}
	}
}

// waitSynced polls until every informer handler has seen its initial list,
// calling onTimeout once when that takes longer than timeout. It reports
// false if ctx ended first.
func waitSynced(ctx context.Context, synced []cache.InformerSynced, timeout time.Duration, onTimeout func()) bool {
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		all := true
		for _, ok := range synced {
			if !ok() {
				all = false
				break
			}
		}
		if all {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-deadline:
			onTimeout()
			deadline = nil
		case <-tick.C:
		}
	}
}

func (s *APISource) kinds() []apiKind {
	// Only namespace_labels needs to find a namespace's objects; the index
	// costs a key per object, so it is left out otherwise.
	byNamespace := cache.Indexers{}
	if s.namespaceSelector != nil {
		byNamespace[cache.NamespaceIndex] = cache.MetaNamespaceIndexFunc
	}
	selectServices := func(o *metav1.ListOptions) {
		if s.serviceSelector != nil {
			o.LabelSelector = s.serviceSelector.String()
		}
	}
	kinds := []apiKind{
		{
			name:     "services",
			informer: cache.NewSharedIndexInformer(s.listWatch(ResourceServices, selectServices), &corev1.Service{}, 0, byNamespace),
			transform: func(obj any) any {
				if in, ok := obj.(*corev1.Service); ok {
					svc := ServiceFromAPI(in)
					// A selector only serves deriving endpoints from
					// manifests; the API has the real slices. At 10k
					// Services the maps are 4 MB.
					svc.Selector = nil
					svc.Updated = observedUpdate(svc.Updated, time.Now())
					return newCached(&in.ObjectMeta, svc)
				}
				return obj
			},
			set: func(b *Builder, v any) { b.SetService(v.(*Service)) },
			del: (*Builder).DeleteService,
		},
		{
			name:     "endpointslices",
			informer: cache.NewSharedIndexInformer(s.listWatch(ResourceEndpointSlices, selectServices), &discoveryv1.EndpointSlice{}, 0, byNamespace),
			transform: func(obj any) any {
				if in, ok := obj.(*discoveryv1.EndpointSlice); ok {
					slice := SliceFromAPI(in)
					slice.Updated = observedUpdate(slice.Updated, time.Now())
					return newCached(&in.ObjectMeta, slice)
				}
				return obj
			},
			set: func(b *Builder, v any) { b.SetSlice(v.(*EndpointSlice)) },
			del: (*Builder).DeleteSlice,
		},
		{
			name: "namespaces",
			informer: cache.NewSharedIndexInformer(s.listWatch(ResourceNamespaces, func(o *metav1.ListOptions) {
				if s.namespaceSelector != nil {
					o.LabelSelector = s.namespaceSelector.String()
				}
			}), &corev1.Namespace{}, 0, cache.Indexers{}),
			transform: func(obj any) any {
				if in, ok := obj.(*corev1.Namespace); ok {
					return newCached(&in.ObjectMeta, NamespaceFromAPI(in))
				}
				return obj
			},
			set: func(b *Builder, v any) { b.SetNamespace(v.(*Namespace)) },
			del: func(b *Builder, k Key) { b.DeleteNamespace(k.Name) },
		},
	}
	if s.watchPods {
		kinds = append(kinds, apiKind{
			name: "pods",
			informer: cache.NewSharedIndexInformer(s.listWatch(ResourcePods, func(o *metav1.ListOptions) {
				o.FieldSelector = apiPodFieldSelector
			}), &corev1.Pod{}, 0, byNamespace),
			transform: func(obj any) any {
				if in, ok := obj.(*corev1.Pod); ok {
					pod := PodFromAPI(in)
					// Labels and container ports only serve deriving
					// endpoints from manifests; the API has real slices.
					pod.Labels, pod.Ports = nil, nil
					return newCached(&in.ObjectMeta, pod)
				}
				return obj
			},
			set: func(b *Builder, v any) { b.SetPod(v.(*Pod)) },
			del: (*Builder).DeletePod,
		})
	}
	if s.nodeName != "" {
		// One Node, by a field selector: a node agent watching every Node
		// would get every node's status heartbeats, thousands a minute in a
		// large cluster, for a label that rarely changes.
		kinds = append(kinds, apiKind{
			name: "nodes",
			informer: cache.NewSharedIndexInformer(s.listWatch(ResourceNodes, func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", s.nodeName).String()
			}), &corev1.Node{}, 0, cache.Indexers{}),
			transform: func(obj any) any {
				if in, ok := obj.(*corev1.Node); ok {
					return newCached(&in.ObjectMeta, NodeFromAPI(in))
				}
				return obj
			},
			set: func(b *Builder, v any) {
				if n := v.(*Node); n.Name == s.nodeName {
					b.SetNode(n)
				}
			},
			del: func(b *Builder, k Key) { b.DeleteNode(k.Name) },
		})
	}
	return kinds
}

// slimming adapts a kind's transform to client-go's signature. Objects that
// are already slim (or tombstones) pass through unchanged, which keeps the
// transform idempotent as client-go asks.
func slimming(f func(any) any) cache.TransformFunc {
	return func(obj any) (any, error) { return f(obj), nil }
}

func newCached(m *metav1.ObjectMeta, value any) *cachedObject {
	return &cachedObject{resourceVersion: m.ResourceVersion, value: value}
}

// observedUpdate estimates when an object was written, for the latency
// record. The API keeps update times to the second only, so the write
// happened within the second after the recorded time, and before the object
// arrived here. The estimate is the latest time it can have happened, so the
// recorded latency never includes a phantom part of a second: it is exact to
// the watch delivery delay for prompt updates and short by at most a second
// for late ones.
func observedUpdate(recorded, arrived time.Time) time.Time {
	if recorded.IsZero() {
		return arrived
	}
	if latest := recorded.Add(time.Second); latest.Before(arrived) {
		return latest
	}
	return arrived
}

// apiState is the builder the informer handlers feed, and the namespace
// filter that namespace_labels imposes on it.
type apiState struct {
	kick chan struct{} // holds one token when the builder may be dirty

	mu      sync.Mutex // protects the fields below
	builder *Builder
	// allowed holds the namespaces whose labels match; nil when every
	// namespace is served.
	allowed map[string]bool
	// scoped are the namespaced kinds, whose cached objects are added or
	// removed as a whole when their namespace starts or stops matching.
	scoped []apiKind
}

func (st *apiState) handler(k apiKind) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { st.set(k, obj) },
		UpdateFunc: func(oldObj, newObj any) {
			// A re-list reports every object again as an update; an
			// unchanged version changes nothing and must not count as a
			// change for the latency record.
			if o, ok := oldObj.(*cachedObject); ok {
				if n, ok := newObj.(*cachedObject); ok && o.resourceVersion == n.resourceVersion {
					return
				}
			}
			st.set(k, newObj)
		},
		DeleteFunc: func(obj any) { st.delete(k, obj) },
	}
}

func (st *apiState) set(k apiKind, obj any) {
	o, ok := obj.(*cachedObject)
	if !ok {
		return
	}
	st.mu.Lock()
	if k.name == "nodes" {
		k.set(st.builder, o.value)
	} else if k.name == "namespaces" {
		k.set(st.builder, o.value)
		if name := o.key().Name; st.allowed != nil && !st.allowed[name] {
			st.allowed[name] = true
			st.replayNamespace(name, true)
		}
	} else if st.allowed == nil || st.allowed[o.key().Namespace] {
		k.set(st.builder, o.value)
	}
	st.mu.Unlock()
	st.poke()
}

func (st *apiState) delete(k apiKind, obj any) {
	key, ok := deletedKey(obj)
	if !ok {
		return
	}
	st.mu.Lock()
	k.del(st.builder, key)
	if k.name == "namespaces" && st.allowed != nil && st.allowed[key.Name] {
		delete(st.allowed, key.Name)
		st.replayNamespace(key.Name, false)
	}
	st.mu.Unlock()
	st.poke()
}

// replayNamespace adds (or removes) every cached object of a namespace that
// just started (or stopped) matching namespace_labels. The caller holds mu.
func (st *apiState) replayNamespace(ns string, add bool) {
	for _, k := range st.scoped {
		objs, err := k.informer.GetIndexer().ByIndex(cache.NamespaceIndex, ns)
		if err != nil {
			continue
		}
		for _, obj := range objs {
			o, ok := obj.(*cachedObject)
			if !ok {
				continue
			}
			if add {
				k.set(st.builder, o.value)
			} else {
				k.del(st.builder, o.key())
			}
		}
	}
}

// deletedKey names a deleted object, which may come wrapped in a tombstone
// when the informer missed the delete and learned of it from a re-list.
func deletedKey(obj any) (Key, bool) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		ns, name, err := cache.SplitMetaNamespaceKey(tomb.Key)
		if err != nil {
			return Key{}, false
		}
		return Key{Namespace: ns, Name: name}, true
	}
	o, ok := obj.(*cachedObject)
	if !ok {
		return Key{}, false
	}
	return o.key(), true
}

func (st *apiState) poke() {
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

func (st *apiState) snapshot() *Cluster {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.builder.Snapshot()
}

func (st *apiState) snapshotIfDirty() *Cluster {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.builder.Dirty() {
		return nil
	}
	return st.builder.Snapshot()
}
