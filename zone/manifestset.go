package zone

import (
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// manifestSet is the state of a manifests source between changes: every
// file's last good objects, which file wins each object, and the slices
// derived for selector Services. A changed file is applied alone: only the
// objects it held or holds are looked at again, only the Services they touch
// are derived again, and the builder is given only what really differs, so
// the next snapshot lists just the changed Services and consumers do a
// partial sync, as they do for the API source.
//
// Its result is the one a fresh load of the same files gives: an object
// defined in several files comes from the file whose name sorts last (the
// last copy within that file); a selector Service with no hand-written slice
// gets the slices the EndpointSlice controller would write, named so that
// they never replace a hand-written one.
type manifestSet struct {
	log *slog.Logger
	b   *Builder

	files map[string]*fileObjects
	// The files defining each object, sorted: the last one wins.
	serviceDefs   map[Key][]string
	sliceDefs     map[Key][]string
	podDefs       map[Key][]string
	namespaceDefs map[string][]string
	nodeDefs      map[string][]string

	// written holds the winning hand-written slices; owners counts, per
	// Service, the hand-written slices naming it in any file (a Service
	// with one has nothing derived, even if another file's copy of that
	// slice wins).
	written map[Key]*EndpointSlice
	owners  map[Key]int
	// podsIn and selecting index the winning Pods and the selector
	// Services by namespace, to find what a Pod change derives again.
	podsIn    map[string]map[Key]*Pod
	selecting map[string]map[Key]*Service
	// derived holds each Service's derived slices; derivedBy names the
	// Service of each derived slice.
	derived   map[Key][]*EndpointSlice
	derivedBy map[Key]Key

	// Work of the change being applied: Services to derive again and slice
	// keys whose builder entry may differ.
	rederive   map[Key]struct{}
	sliceDirty map[Key]struct{}
	sortedPods map[string][]*Pod
}

// fileObjects is one file's objects by key; the last copy in the file wins.
type fileObjects struct {
	services   map[Key]*Service
	slices     map[Key]*EndpointSlice
	pods       map[Key]*Pod
	namespaces map[string]*Namespace
	nodes      map[string]*Node
	// owns names the Service of every slice in the file, copies included.
	owns []Key
}

func indexObjects(objs manifestObjects) *fileObjects {
	f := &fileObjects{
		services:   make(map[Key]*Service, len(objs.services)),
		slices:     make(map[Key]*EndpointSlice, len(objs.slices)),
		pods:       make(map[Key]*Pod, len(objs.pods)),
		namespaces: make(map[string]*Namespace, len(objs.namespaces)),
		nodes:      make(map[string]*Node, len(objs.nodes)),
	}
	for _, s := range objs.services {
		f.services[s.Key] = s
	}
	for _, s := range objs.slices {
		f.slices[s.Key] = s
		f.owns = append(f.owns, Key{Namespace: s.Namespace, Name: s.Service})
	}
	for _, p := range objs.pods {
		f.pods[p.Key] = p
	}
	for _, n := range objs.namespaces {
		f.namespaces[n.Name] = n
	}
	for _, n := range objs.nodes {
		f.nodes[n.Name] = n
	}
	return f
}

var noObjects = &fileObjects{}

func newManifestSet(log *slog.Logger) *manifestSet {
	return &manifestSet{
		log:           log,
		b:             NewBuilder(),
		files:         make(map[string]*fileObjects),
		serviceDefs:   make(map[Key][]string),
		sliceDefs:     make(map[Key][]string),
		podDefs:       make(map[Key][]string),
		namespaceDefs: make(map[string][]string),
		nodeDefs:      make(map[string][]string),
		written:       make(map[Key]*EndpointSlice),
		owners:        make(map[Key]int),
		podsIn:        make(map[string]map[Key]*Pod),
		selecting:     make(map[string]map[Key]*Service),
		derived:       make(map[Key][]*EndpointSlice),
		derivedBy:     make(map[Key]Key),
		rederive:      make(map[Key]struct{}),
		sliceDirty:    make(map[Key]struct{}),
		sortedPods:    make(map[string][]*Pod),
	}
}

// Files lists the files whose objects are held.
func (m *manifestSet) Files() []string {
	names := make([]string, 0, len(m.files))
	for f := range m.files {
		names = append(names, f)
	}
	sort.Strings(names)
	return names
}

// Has reports whether a file's objects are held.
func (m *manifestSet) Has(file string) bool { _, ok := m.files[file]; return ok }

// Apply replaces the objects of the given files: a nil entry removes the
// file. The builder is left with the difference; the caller cuts the
// snapshot.
func (m *manifestSet) Apply(changes map[string]*manifestObjects) {
	names := make([]string, 0, len(changes))
	for f := range changes {
		names = append(names, f)
	}
	sort.Strings(names) // so duplicate warnings come out in a stable order
	w := &settling{services: make(map[Key]struct{}), slices: make(map[Key]struct{}), pods: make(map[Key]struct{}), namespaces: make(map[string]struct{}), nodes: make(map[string]struct{})}
	for _, f := range names {
		old := m.files[f]
		if old == nil {
			old = noObjects
		}
		cur := noObjects
		if objs := changes[f]; objs != nil {
			cur = indexObjects(*objs)
			m.files[f] = cur
		} else {
			delete(m.files, f)
		}
		m.applyFile(f, old, cur, w)
	}
	for k := range w.services {
		m.settleService(k)
	}
	for k := range w.slices {
		m.settleWritten(k)
	}
	for k := range w.pods {
		m.settlePod(k)
	}
	for name := range w.namespaces {
		m.settleNamespace(name)
	}
	for name := range w.nodes {
		m.settleNode(name)
	}
	m.deriveAgain()
	for k := range m.sliceDirty {
		m.settleSlice(k)
	}
	clear(m.rederive)
	clear(m.sliceDirty)
	clear(m.sortedPods)
}

// applyFile records which files define the objects file f held (old) and
// holds (cur); the objects are settled once every file of the change is in,
// so one moving between two files is never deleted and set again.
func (m *manifestSet) applyFile(f string, old, cur *fileObjects, w *settling) {
	for _, k := range redefine(m.serviceDefs, f, old.services, cur.services) {
		if defs := m.serviceDefs[k]; len(defs) > 1 && cur.services[k] != nil && old.services[k] == nil {
			m.log.Warn("Service defined twice; the file named last wins", "service", k.String(), "files", defs)
		}
		w.services[k] = struct{}{}
	}
	// A hand-written slice takes its Service out of deriving while any file
	// holds it.
	for _, k := range old.owns {
		m.own(k, -1)
	}
	for _, k := range cur.owns {
		m.own(k, 1)
	}
	for _, k := range redefine(m.sliceDefs, f, old.slices, cur.slices) {
		w.slices[k] = struct{}{}
	}
	for _, k := range redefine(m.podDefs, f, old.pods, cur.pods) {
		w.pods[k] = struct{}{}
	}
	for _, name := range redefine(m.namespaceDefs, f, old.namespaces, cur.namespaces) {
		w.namespaces[name] = struct{}{}
	}
	for _, name := range redefine(m.nodeDefs, f, old.nodes, cur.nodes) {
		w.nodes[name] = struct{}{}
	}
}

// settling is the objects of a change whose winners are to be settled.
type settling struct {
	services, slices, pods map[Key]struct{}
	namespaces, nodes      map[string]struct{}
}

func (m *manifestSet) settleNamespace(name string) {
	want := winner(m.namespaceDefs[name], name, func(f string) map[string]*Namespace { return m.files[f].namespaces })
	have := m.b.namespaces[name]
	switch {
	case want == nil:
		m.b.DeleteNamespace(name)
	case have == nil || !reflect.DeepEqual(have, want):
		m.b.SetNamespace(want)
	}
}

func (m *manifestSet) settleNode(name string) {
	want := winner(m.nodeDefs[name], name, func(f string) map[string]*Node { return m.files[f].nodes })
	have := m.b.nodes[name]
	switch {
	case want == nil:
		m.b.DeleteNode(name)
	case have == nil || !reflect.DeepEqual(have, want):
		m.b.SetNode(want)
	}
}

// redefine updates the files defining each key that file f held (old) or
// holds (cur), and returns those keys.
func redefine[K comparable, V any](defs map[K][]string, f string, old, cur map[K]V) []K {
	keys := make([]K, 0, len(old)+len(cur))
	for k := range old {
		if _, still := cur[k]; !still {
			list := slices.DeleteFunc(defs[k], func(g string) bool { return g == f })
			if len(list) == 0 {
				delete(defs, k)
			} else {
				defs[k] = list
			}
		}
		keys = append(keys, k)
	}
	for k := range cur {
		if _, had := old[k]; !had {
			list := defs[k]
			i, _ := slices.BinarySearch(list, f)
			defs[k] = slices.Insert(list, i, f)
			keys = append(keys, k)
		}
	}
	return keys
}

// winner is the copy of an object in the file named last among defs.
func winner[K comparable, V any](defs []string, k K, of func(file string) map[K]*V) *V {
	if len(defs) == 0 {
		return nil
	}
	return of(defs[len(defs)-1])[k]
}

func (m *manifestSet) settleService(k Key) {
	want := winner(m.serviceDefs[k], k, func(f string) map[Key]*Service { return m.files[f].services })
	have := m.b.services[k]
	if want == nil && have == nil || want != nil && have != nil && reflect.DeepEqual(have, want) {
		return
	}
	if have != nil {
		delete(m.selecting[k.Namespace], k)
	}
	if want == nil {
		m.b.DeleteService(k)
	} else {
		m.b.SetService(want)
		if want.Selector != nil && want.Type != TypeExternalName {
			if m.selecting[k.Namespace] == nil {
				m.selecting[k.Namespace] = make(map[Key]*Service)
			}
			m.selecting[k.Namespace][k] = want
		}
	}
	m.rederive[k] = struct{}{}
}

func (m *manifestSet) own(svc Key, d int) {
	if m.owners[svc] += d; m.owners[svc] == 0 {
		delete(m.owners, svc)
	}
	m.rederive[svc] = struct{}{}
}

func (m *manifestSet) settleWritten(k Key) {
	want := winner(m.sliceDefs[k], k, func(f string) map[Key]*EndpointSlice { return m.files[f].slices })
	have := m.written[k]
	if want == nil && have == nil || want != nil && have != nil && reflect.DeepEqual(have, want) {
		return
	}
	if want == nil {
		delete(m.written, k)
	} else {
		m.written[k] = want
	}
	m.sliceDirty[k] = struct{}{}
	// A derived slice avoids the names of hand-written ones: the Services
	// whose derived slices are or were to be called so derive again.
	for i := strings.Index(k.Name, "-derived"); i > 0; {
		m.rederive[Key{Namespace: k.Namespace, Name: k.Name[:i]}] = struct{}{}
		j := strings.Index(k.Name[i+1:], "-derived")
		if j < 0 {
			break
		}
		i += 1 + j
	}
}

func (m *manifestSet) settlePod(k Key) {
	want := winner(m.podDefs[k], k, func(f string) map[Key]*Pod { return m.files[f].pods })
	have := m.b.pods[k]
	if want == nil && have == nil || want != nil && have != nil && reflect.DeepEqual(have, want) {
		return
	}
	in := m.podsIn[k.Namespace]
	if want == nil {
		m.b.DeletePod(k)
		delete(in, k)
	} else {
		m.b.SetPod(want)
		if in == nil {
			in = make(map[Key]*Pod)
			m.podsIn[k.Namespace] = in
		}
		in[k] = want
	}
	// The Services selecting the Pod before or after derive again.
	for sk, svc := range m.selecting[k.Namespace] {
		if have != nil && selectorMatches(svc.Selector, have.Labels) || want != nil && selectorMatches(svc.Selector, want.Labels) {
			m.rederive[sk] = struct{}{}
		}
	}
}

// deriveAgain derives the slices of the Services marked, in key order (the
// order a fresh load names them in), keeping the previous objects of slices
// that come out the same.
func (m *manifestSet) deriveAgain() {
	keys := make([]Key, 0, len(m.rederive))
	for k := range m.rederive {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keyLess(keys[i], keys[j]) })
	for _, k := range keys {
		var want []*EndpointSlice
		if svc := m.b.services[k]; svc != nil && svc.Selector != nil && svc.Type != TypeExternalName && m.owners[k] == 0 {
			want = deriveForService(svc, m.podsOf(k.Namespace))
			taken := make(map[string]bool, len(want))
			for _, s := range want {
				base := s.Name
				for i := 1; m.nameTaken(k, s.Key) || taken[s.Name]; i++ {
					s.Name = base + "-" + itoa(i)
				}
				taken[s.Name] = true
			}
		}
		have := m.derived[k]
		if len(want) == len(have) {
			same := true
			for i := range want {
				same = same && reflect.DeepEqual(want[i], have[i])
			}
			if same {
				continue
			}
		}
		for _, s := range have {
			delete(m.derivedBy, s.Key)
			m.sliceDirty[s.Key] = struct{}{}
		}
		if len(want) == 0 {
			delete(m.derived, k)
			continue
		}
		m.derived[k] = want
		for _, s := range want {
			m.derivedBy[s.Key] = k
			m.sliceDirty[s.Key] = struct{}{}
		}
	}
}

// nameTaken reports whether a slice key is held by a hand-written slice or
// by another Service's derived one.
func (m *manifestSet) nameTaken(svc, k Key) bool {
	if m.written[k] != nil {
		return true
	}
	owner, ok := m.derivedBy[k]
	return ok && owner != svc
}

// podsOf lists a namespace's Pods sorted by name, once per change.
func (m *manifestSet) podsOf(ns string) []*Pod {
	if list, ok := m.sortedPods[ns]; ok {
		return list
	}
	list := make([]*Pod, 0, len(m.podsIn[ns]))
	for _, p := range m.podsIn[ns] {
		list = append(list, p)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	m.sortedPods[ns] = list
	return list
}

// settleSlice gives the builder what a slice key holds now: the
// hand-written slice, else a derived one, else nothing.
func (m *manifestSet) settleSlice(k Key) {
	want := m.written[k]
	if want == nil {
		if svc, ok := m.derivedBy[k]; ok {
			for _, s := range m.derived[svc] {
				if s.Key == k {
					want = s
				}
			}
		}
	}
	have := m.b.slices[k]
	switch {
	case want == nil && have != nil:
		m.b.DeleteSlice(k)
	case want != nil && have != want:
		m.b.SetSlice(want)
	}
}
