package zone

import (
	"maps"
	"net/netip"
	"sort"
	"strings"
	"time"
)

// Cluster is an immutable snapshot of the cluster's objects. Every map and every
// object reachable from it is read-only once published: consumers may keep
// pointers into it for as long as they like.
type Cluster struct {
	Services   map[Key]*Service
	Slices     map[Key]*EndpointSlice
	Pods       map[Key]*Pod
	Namespaces map[string]*Namespace

	// byService lists each Service's slices, sorted by slice name.
	byService map[Key][]*EndpointSlice
	// inUse holds every namespace some Service, slice or Pod lives in.
	inUse map[string]struct{}
	// podsByIP finds the Pod that owns an address.
	podsByIP map[netip.Addr]*Pod

	// Generation counts snapshots from one source; it only grows.
	Generation uint64
	// Changed is the newest Updated time among the objects that changed since the
	// previous snapshot; zero when unknown. Consumers report the time from it to
	// when their view reflects the snapshot as programming latency.
	Changed time.Time
}

// SlicesFor returns the EndpointSlices that belong to the Service, sorted by name.
func (c *Cluster) SlicesFor(svc Key) []*EndpointSlice { return c.byService[svc] }

// PodByIP returns the Pod holding an address, or nil. Pods are only known
// when the source watches them (manifests, or the API with pods verified).
func (c *Cluster) PodByIP(a netip.Addr) *Pod { return c.podsByIP[a.Unmap()] }

// NamespaceExists reports whether the namespace is known, either as a Namespace
// object or because an object lives in it.
func (c *Cluster) NamespaceExists(ns string) bool {
	if _, ok := c.Namespaces[ns]; ok {
		return true
	}
	_, ok := c.inUse[ns]
	return ok
}

func keyLess(a, b Key) bool { return compareKeys(a, b) < 0 }

// compareKeys orders keys by namespace, then name.
func compareKeys(a, b Key) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// Builder accumulates upserts and deletes from a source and cuts immutable
// snapshots from them. It is not safe for concurrent use; a source serialises
// its calls.
type Builder struct {
	services   map[Key]*Service
	slices     map[Key]*EndpointSlice
	pods       map[Key]*Pod
	namespaces map[string]*Namespace
	generation uint64
	changed    time.Time
	dirty      bool
}

// NewBuilder returns an empty builder.
func NewBuilder() *Builder {
	return &Builder{
		services:   make(map[Key]*Service),
		slices:     make(map[Key]*EndpointSlice),
		pods:       make(map[Key]*Pod),
		namespaces: make(map[string]*Namespace),
	}
}

func (b *Builder) touch(t time.Time) {
	b.dirty = true
	if t.After(b.changed) {
		b.changed = t
	}
}

// Dirty reports whether anything changed since the last Snapshot.
func (b *Builder) Dirty() bool { return b.dirty }

// SetService adds or replaces a Service. The builder keeps the pointer: the
// caller must not change the object afterwards.
func (b *Builder) SetService(s *Service) { b.services[s.Key] = s; b.touch(s.Updated) }

// DeleteService removes a Service; removing an unknown one is not an error.
func (b *Builder) DeleteService(k Key) {
	if _, ok := b.services[k]; ok {
		delete(b.services, k)
		b.touch(time.Now())
	}
}

// SetSlice adds or replaces an EndpointSlice.
func (b *Builder) SetSlice(s *EndpointSlice) { b.slices[s.Key] = s; b.touch(s.Updated) }

// DeleteSlice removes an EndpointSlice.
func (b *Builder) DeleteSlice(k Key) {
	if _, ok := b.slices[k]; ok {
		delete(b.slices, k)
		b.touch(time.Now())
	}
}

// SetPod adds or replaces a Pod.
func (b *Builder) SetPod(p *Pod) { b.pods[p.Key] = p; b.touch(time.Time{}) }

// DeletePod removes a Pod.
func (b *Builder) DeletePod(k Key) {
	if _, ok := b.pods[k]; ok {
		delete(b.pods, k)
		b.touch(time.Time{})
	}
}

// SetNamespace adds or replaces a Namespace.
func (b *Builder) SetNamespace(n *Namespace) { b.namespaces[n.Name] = n; b.touch(time.Time{}) }

// DeleteNamespace removes a Namespace.
func (b *Builder) DeleteNamespace(name string) {
	if _, ok := b.namespaces[name]; ok {
		delete(b.namespaces, name)
		b.touch(time.Time{})
	}
}

// Snapshot cuts an immutable Cluster from the current state and clears the
// dirty mark. Its cost is a copy of the top-level maps, not of the objects.
func (b *Builder) Snapshot() *Cluster {
	b.generation++
	c := &Cluster{
		Services:   maps.Clone(b.services),
		Slices:     maps.Clone(b.slices),
		Pods:       maps.Clone(b.pods),
		Namespaces: maps.Clone(b.namespaces),
		Generation: b.generation,
		Changed:    b.changed,
	}
	c.index()
	b.dirty = false
	b.changed = time.Time{}
	return c
}

// index fills the derived lookups of a snapshot.
func (c *Cluster) index() {
	c.byService = make(map[Key][]*EndpointSlice, len(c.Services))
	c.inUse = make(map[string]struct{})
	for k := range c.Services {
		c.inUse[k.Namespace] = struct{}{}
	}
	c.podsByIP = make(map[netip.Addr]*Pod, len(c.Pods))
	for k, p := range c.Pods {
		c.inUse[k.Namespace] = struct{}{}
		for _, ip := range p.IPs {
			c.podsByIP[ip] = p
		}
	}
	for _, s := range c.Slices {
		c.inUse[s.Namespace] = struct{}{}
		if s.Service == "" {
			continue
		}
		k := Key{Namespace: s.Namespace, Name: s.Service}
		c.byService[k] = append(c.byService[k], s)
	}
	for _, list := range c.byService {
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	}
}
