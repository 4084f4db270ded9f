package zone

import (
	"maps"
	"net/netip"
	"slices"
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
	// Nodes holds the Node objects the source reads, by name: the API source
	// reads only the node agent's own node, the manifests source every Node
	// in the folder.
	Nodes map[string]*Node

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

	// since is the Generation of the previous snapshot (zero for the first);
	// servicesChanged lists the Services whose object or slices changed
	// since then.
	since           uint64
	servicesChanged []Key
}

// ChangedServices lists the Services whose object or EndpointSlices changed
// (or went away) since the snapshot of generation since, which is the one cut
// before this one. ok is false for a first snapshot, when anything may have
// changed. A consumer that kept a view of snapshot since can update it from
// these Services alone.
func (c *Cluster) ChangedServices() (since uint64, keys []Key, ok bool) {
	return c.since, c.servicesChanged, c.since != 0
}

// SlicesFor returns the EndpointSlices that belong to the Service, sorted by name.
func (c *Cluster) SlicesFor(svc Key) []*EndpointSlice { return c.byService[svc] }

// PodByIP returns the Pod holding an address, or nil. Pods are only known
// when the source watches them (manifests, or the API with pods verified).
func (c *Cluster) PodByIP(a netip.Addr) *Pod { return c.podsByIP[a.Unmap()] }

// NodeZone returns the zone of the named node, empty when the node or its
// zone label is unknown.
func (c *Cluster) NodeZone(name string) string {
	if n := c.Nodes[name]; n != nil {
		return n.Zone
	}
	return ""
}

// NamespaceExists reports whether the namespace is known, either as a Namespace
// object or because an object lives in it.
func (c *Cluster) NamespaceExists(ns string) bool {
	if _, ok := c.Namespaces[ns]; ok {
		return true
	}
	_, ok := c.inUse[ns]
	return ok
}

func keyLess(a, b Key) bool { return CompareKeys(a, b) < 0 }

// CompareKeys orders keys by namespace, then name.
func CompareKeys(a, b Key) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// Builder accumulates upserts and deletes from a source and cuts immutable
// snapshots from them. It is not safe for concurrent use; a source serialises
// its calls.
//
// A snapshot shares with the previous one every map that did not change, and
// rebuilds the slices-by-Service lookup only for the Services whose slices
// changed, so cutting one after an endpoint change costs a copy of the slice
// maps rather than a pass over every object.
type Builder struct {
	services   map[Key]*Service
	slices     map[Key]*EndpointSlice
	pods       map[Key]*Pod
	namespaces map[string]*Namespace
	nodes      map[string]*Node
	generation uint64
	changed    time.Time
	dirty      bool

	// last is the previous snapshot; changedMaps says which of the maps
	// above differ from its. sharedMaps says which of them the last
	// snapshot holds itself: the builder copies such a map before its next
	// write to it, so that between changes one copy of each map exists, not
	// two (at 10,000 Services each is about a megabyte).
	last        *Cluster
	changedMaps uint8
	sharedMaps  uint8
	// sliceKeys lists each Service's slices (most have one, so a list, not
	// a set); touched holds the Services
	// whose list or slices changed since the last snapshot.
	sliceKeys map[Key][]Key
	touched   map[Key]struct{}
	// edited holds the Services set or deleted since the last snapshot.
	edited map[Key]struct{}
	// objectsIn counts the Services, slices and Pods in each namespace.
	objectsIn map[string]int
}

// The maps a Builder tracks changes of.
const (
	changedServices uint8 = 1 << iota
	changedSlices
	changedPods
	changedNamespaces
	changedNodes
)

// NewBuilder returns an empty builder.
func NewBuilder() *Builder {
	return &Builder{
		services:   make(map[Key]*Service),
		slices:     make(map[Key]*EndpointSlice),
		pods:       make(map[Key]*Pod),
		namespaces: make(map[string]*Namespace),
		nodes:      make(map[string]*Node),
		sliceKeys:  make(map[Key][]Key),
		touched:    make(map[Key]struct{}),
		edited:     make(map[Key]struct{}),
		objectsIn:  make(map[string]int),
	}
}

func (b *Builder) touch(t time.Time, m uint8) {
	b.dirty = true
	b.changedMaps |= m
	if t.After(b.changed) {
		b.changed = t
	}
}

// own makes the builder's maps of the given kinds its own again, copying
// those the last snapshot holds, before it writes to them.
func (b *Builder) own(m uint8) {
	if b.sharedMaps&m == 0 {
		return
	}
	switch m {
	case changedServices:
		b.services = maps.Clone(b.services)
	case changedSlices:
		b.slices = maps.Clone(b.slices)
	case changedPods:
		b.pods = maps.Clone(b.pods)
	case changedNamespaces:
		b.namespaces = maps.Clone(b.namespaces)
	case changedNodes:
		b.nodes = maps.Clone(b.nodes)
	}
	b.sharedMaps &^= m
}

// count adds d to the objects of a namespace.
func (b *Builder) count(ns string, d int) {
	if b.objectsIn[ns] += d; b.objectsIn[ns] == 0 {
		delete(b.objectsIn, ns)
	}
}

// Dirty reports whether anything changed since the last Snapshot.
func (b *Builder) Dirty() bool { return b.dirty }

// SetService adds or replaces a Service. The builder keeps the pointer: the
// caller must not change the object afterwards.
func (b *Builder) SetService(s *Service) {
	if _, ok := b.services[s.Key]; !ok {
		b.count(s.Namespace, 1)
	}
	b.own(changedServices)
	b.services[s.Key] = s
	b.edited[s.Key] = struct{}{}
	b.touch(s.Updated, changedServices)
}

// DeleteService removes a Service; removing an unknown one is not an error.
func (b *Builder) DeleteService(k Key) {
	if _, ok := b.services[k]; ok {
		b.own(changedServices)
		delete(b.services, k)
		b.edited[k] = struct{}{}
		b.count(k.Namespace, -1)
		b.touch(time.Now(), changedServices)
	}
}

// SetSlice adds or replaces an EndpointSlice.
func (b *Builder) SetSlice(s *EndpointSlice) {
	if old, ok := b.slices[s.Key]; ok {
		b.unlist(old)
	} else {
		b.count(s.Namespace, 1)
	}
	b.own(changedSlices)
	b.slices[s.Key] = s
	if s.Service != "" {
		svc := Key{Namespace: s.Namespace, Name: s.Service}
		b.sliceKeys[svc] = append(b.sliceKeys[svc], s.Key)
		b.touched[svc] = struct{}{}
	}
	b.touch(s.Updated, changedSlices)
}

// DeleteSlice removes an EndpointSlice.
func (b *Builder) DeleteSlice(k Key) {
	if old, ok := b.slices[k]; ok {
		b.own(changedSlices)
		delete(b.slices, k)
		b.unlist(old)
		b.count(k.Namespace, -1)
		b.touch(time.Now(), changedSlices)
	}
}

// unlist takes a slice off its Service's list.
func (b *Builder) unlist(s *EndpointSlice) {
	if s.Service == "" {
		return
	}
	svc := Key{Namespace: s.Namespace, Name: s.Service}
	keys := slices.DeleteFunc(b.sliceKeys[svc], func(k Key) bool { return k == s.Key })
	if len(keys) == 0 {
		delete(b.sliceKeys, svc)
	} else {
		b.sliceKeys[svc] = keys
	}
	b.touched[svc] = struct{}{}
}

// SetPod adds or replaces a Pod.
func (b *Builder) SetPod(p *Pod) {
	if _, ok := b.pods[p.Key]; !ok {
		b.count(p.Namespace, 1)
	}
	b.own(changedPods)
	b.pods[p.Key] = p
	b.touch(time.Time{}, changedPods)
}

// DeletePod removes a Pod.
func (b *Builder) DeletePod(k Key) {
	if _, ok := b.pods[k]; ok {
		b.own(changedPods)
		delete(b.pods, k)
		b.count(k.Namespace, -1)
		b.touch(time.Time{}, changedPods)
	}
}

// SetNamespace adds or replaces a Namespace.
func (b *Builder) SetNamespace(n *Namespace) {
	b.own(changedNamespaces)
	b.namespaces[n.Name] = n
	b.touch(time.Time{}, changedNamespaces)
}

// DeleteNamespace removes a Namespace.
func (b *Builder) DeleteNamespace(name string) {
	if _, ok := b.namespaces[name]; ok {
		b.own(changedNamespaces)
		delete(b.namespaces, name)
		b.touch(time.Time{}, changedNamespaces)
	}
}

// SetNode adds or replaces a Node.
func (b *Builder) SetNode(n *Node) {
	b.own(changedNodes)
	b.nodes[n.Name] = n
	b.touch(time.Time{}, changedNodes)
}

// DeleteNode removes a Node.
func (b *Builder) DeleteNode(name string) {
	if _, ok := b.nodes[name]; ok {
		b.own(changedNodes)
		delete(b.nodes, name)
		b.touch(time.Time{}, changedNodes)
	}
}

// Snapshot cuts an immutable Cluster from the current state and clears the
// dirty mark. The snapshot takes the maps that changed as they are; the
// builder copies each (the maps, not the objects) when it next writes to it.
func (b *Builder) Snapshot() *Cluster {
	b.generation++
	c := &Cluster{Generation: b.generation, Changed: b.changed}
	last, all := b.last, b.last == nil
	// A map that did not change is the builder's and the last snapshot's
	// alike (shared, or an equal copy): either serves.
	b.sharedMaps = changedServices | changedSlices | changedPods | changedNamespaces | changedNodes
	c.Services, c.Slices, c.Pods, c.Namespaces, c.Nodes = b.services, b.slices, b.pods, b.namespaces, b.nodes

	switch {
	case all:
		c.byService = make(map[Key][]*EndpointSlice, len(b.sliceKeys))
		for k := range b.sliceKeys {
			c.byService[k] = b.slicesOf(k)
		}
	case len(b.touched) > 0:
		c.byService = maps.Clone(last.byService)
		for k := range b.touched {
			if list := b.slicesOf(k); len(list) > 0 {
				c.byService[k] = list
			} else {
				delete(c.byService, k)
			}
		}
	default:
		c.byService = last.byService
	}
	if all || b.changedMaps&changedPods != 0 {
		c.podsByIP = make(map[netip.Addr]*Pod, len(c.Pods))
		for _, p := range c.Pods {
			for _, ip := range p.IPs {
				c.podsByIP[ip] = p
			}
		}
	} else {
		c.podsByIP = last.podsByIP
	}
	if all || b.changedMaps&(changedServices|changedSlices|changedPods) != 0 {
		c.inUse = make(map[string]struct{}, len(b.objectsIn))
		for ns := range b.objectsIn {
			c.inUse[ns] = struct{}{}
		}
	} else {
		c.inUse = last.inUse
	}

	if !all {
		c.since = last.Generation
		c.servicesChanged = make([]Key, 0, len(b.touched)+len(b.edited))
		for k := range b.touched {
			c.servicesChanged = append(c.servicesChanged, k)
		}
		for k := range b.edited {
			if _, ok := b.touched[k]; !ok {
				c.servicesChanged = append(c.servicesChanged, k)
			}
		}
	}
	b.last = c
	b.changedMaps = 0
	clear(b.touched)
	clear(b.edited)
	b.dirty = false
	b.changed = time.Time{}
	return c
}

// slicesOf is a Service's slices, sorted by name.
func (b *Builder) slicesOf(svc Key) []*EndpointSlice {
	keys := b.sliceKeys[svc]
	if len(keys) == 0 {
		return nil
	}
	list := make([]*EndpointSlice, 0, len(keys))
	for _, k := range keys {
		list = append(list, b.slices[k])
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return list
}
