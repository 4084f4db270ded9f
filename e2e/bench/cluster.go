package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// Spec is the size of a generated cluster. Every object's name, namespace and
// addresses follow from its kind and index alone, so a smaller Spec is a
// prefix of a larger one: a cluster can be loaded at 1,000 Services, measured,
// and grown to 10,000 by loading the difference.
type Spec struct {
	// ClusterIP Services, each with one EndpointSlice of Endpoints ready
	// endpoints.
	ClusterIP int
	// Headless Services (clusterIP None), each with one EndpointSlice of
	// Endpoints ready endpoints.
	Headless int
	// ExternalName Services, each a CNAME to a name under ExternalDomain.
	ExternalName int
	// Endpoints is the number of ready endpoints per selecting Service.
	Endpoints int
	// PerNamespace is how many ClusterIP Services share a namespace; headless
	// and ExternalName Services are spread over the same namespaces.
	PerNamespace int
}

// DefaultSpec is the cluster the published figures are taken at.
func DefaultSpec() Spec {
	return Spec{ClusterIP: 10000, Headless: 1000, ExternalName: 100, Endpoints: 5, PerNamespace: 100}
}

// Scaled returns s with n ClusterIP Services and the other kinds in the same
// proportion (at least one of each kind s has). A smaller Spec is a prefix
// of a larger one, whichever way it was scaled.
func (s Spec) Scaled(n int) Spec {
	if s.ClusterIP == 0 || n == s.ClusterIP {
		return s
	}
	part := func(k int) int {
		if k == 0 {
			return 0
		}
		return max(1, k*n/s.ClusterIP)
	}
	out := s
	out.ClusterIP, out.Headless, out.ExternalName = n, part(s.Headless), part(s.ExternalName)
	return out
}

// Services is the total number of Services of every kind.
func (s Spec) Services() int { return s.ClusterIP + s.Headless + s.ExternalName }

// Addresses used by generated objects. ClusterIPs are inside the API
// server's service range (10.96.0.0/12); endpoint addresses are in PodCIDR.
// Nothing is ever sent to any of them.
const (
	ClusterDomain  = "cluster.local"
	ExternalDomain = "example.com"
	PodCIDR        = "10.128.0.0/10"
	PortName       = "http"
	ServicePort    = 80
	TargetPort     = 8080
	ownerLabel     = "endpointslice.kubernetes.io/managed-by"
	ownerValue     = "endpointslice-controller.k8s.io"
)

var (
	clusterIPBase = netip.MustParseAddr("10.100.0.10")
	endpointBase  = netip.MustParseAddr("10.128.0.1")
	// ChangedBase is where ChangeEndpoint takes new endpoint addresses from:
	// inside PodCIDR, apart from every generated endpoint.
	changedBase = netip.MustParseAddr("10.160.0.1")
)

// Kind is a kind of generated Service.
type Kind int

const (
	KindClusterIP Kind = iota
	KindHeadless
	KindExternalName
)

// Ref names one generated Service.
type Ref struct {
	Kind      Kind
	Index     int
	Namespace string
	Name      string
}

// FQDN is the Service's name in the cluster zone, with the trailing dot.
func (r Ref) FQDN() string {
	return fmt.Sprintf("%s.%s.svc.%s.", r.Name, r.Namespace, ClusterDomain)
}

// Ref returns the reference of the index-th Service of a kind.
func (s Spec) Ref(kind Kind, index int) Ref {
	per := max(1, s.PerNamespace)
	var ns int
	var name string
	switch kind {
	case KindClusterIP:
		ns, name = index/per, fmt.Sprintf("svc-%05d", index)
	case KindHeadless:
		ns, name = index/max(1, per/10), fmt.Sprintf("headless-%04d", index)
	case KindExternalName:
		ns, name = index/max(1, per/100), fmt.Sprintf("external-%03d", index)
	}
	return Ref{Kind: kind, Index: index, Namespace: fmt.Sprintf("ns-%03d", ns), Name: name}
}

// Refs lists every Service of a kind in s.
func (s Spec) Refs(kind Kind) []Ref {
	n := map[Kind]int{KindClusterIP: s.ClusterIP, KindHeadless: s.Headless, KindExternalName: s.ExternalName}[kind]
	out := make([]Ref, n)
	for i := range out {
		out[i] = s.Ref(kind, i)
	}
	return out
}

// ClusterIP is the address of the index-th ClusterIP Service.
func ClusterIP(index int) netip.Addr { return addAddr(clusterIPBase, index) }

// endpointAddr is the e-th endpoint of a Service. Headless Services number
// after every possible ClusterIP one, so growing a Spec never renumbers.
func endpointAddr(kind Kind, index, e, perService int) netip.Addr {
	const headlessOffset = 1 << 20
	n := index*perService + e
	if kind == KindHeadless {
		n += headlessOffset
	}
	return addAddr(endpointBase, n)
}

func addAddr(base netip.Addr, n int) netip.Addr {
	b := base.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Objects is a generated cluster: what the API server stores.
type Objects struct {
	Namespaces []*corev1.Namespace
	Services   []*corev1.Service
	Slices     []*discoveryv1.EndpointSlice
}

// Objects builds the objects of s that are not in base (pass a zero Spec for
// all of them). base must be a prefix of s, as Scaled makes.
func (s Spec) Objects(base Spec) Objects {
	var out Objects
	seenNS := map[string]bool{}
	addNS := func(ns string) {
		if !seenNS[ns] {
			seenNS[ns] = true
			out.Namespaces = append(out.Namespaces, &corev1.Namespace{
				TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
				ObjectMeta: metav1.ObjectMeta{Name: ns},
			})
		}
	}
	// Namespaces the base already has are skipped too.
	for _, kind := range []Kind{KindClusterIP, KindHeadless, KindExternalName} {
		for _, r := range base.Refs(kind) {
			seenNS[r.Namespace] = true
		}
	}
	from := map[Kind]int{KindClusterIP: base.ClusterIP, KindHeadless: base.Headless, KindExternalName: base.ExternalName}
	for _, kind := range []Kind{KindClusterIP, KindHeadless, KindExternalName} {
		refs := s.Refs(kind)
		for _, r := range refs[min(from[kind], len(refs)):] {
			addNS(r.Namespace)
			out.Services = append(out.Services, s.service(r))
			if kind != KindExternalName {
				out.Slices = append(out.Slices, s.slice(r, nil))
			}
		}
	}
	return out
}

func (s Spec) service(r Ref) *corev1.Service {
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: r.Name, Namespace: r.Namespace},
	}
	port := []corev1.ServicePort{{Name: PortName, Protocol: corev1.ProtocolTCP, Port: ServicePort, TargetPort: intstr.FromInt32(TargetPort)}}
	switch r.Kind {
	case KindClusterIP:
		ip := ClusterIP(r.Index).String()
		svc.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip},
			Selector: map[string]string{"app": r.Name}, Ports: port}
	case KindHeadless:
		svc.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: corev1.ClusterIPNone,
			Selector: map[string]string{"app": r.Name}, Ports: port}
	case KindExternalName:
		svc.Spec = corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName,
			ExternalName: fmt.Sprintf("%s.%s", r.Name, ExternalDomain)}
	}
	return svc
}

// slice is the Service's EndpointSlice, as the EndpointSlice controller
// would write it. override, when set, replaces the endpoint addresses.
func (s Spec) slice(r Ref, override []netip.Addr) *discoveryv1.EndpointSlice {
	ready := true
	portName, proto, port := PortName, corev1.ProtocolTCP, int32(TargetPort)
	addrs := override
	if addrs == nil {
		for e := range s.Endpoints {
			addrs = append(addrs, endpointAddr(r.Kind, r.Index, e, s.Endpoints))
		}
	}
	sl := &discoveryv1.EndpointSlice{
		TypeMeta: metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      r.Name + "-bench",
			Namespace: r.Namespace,
			Labels:    map[string]string{discoveryv1.LabelServiceName: r.Name, ownerLabel: ownerValue},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Protocol: &proto, Port: &port}},
	}
	for _, a := range addrs {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{a.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		})
	}
	return sl
}

// ChangedSlice is the slice of ClusterIP Service index with its first
// endpoint moved to a fresh address (the n-th change), as when one pod is
// replaced. It returns the slice and the new address.
func (s Spec) ChangedSlice(index, n int) (*discoveryv1.EndpointSlice, netip.Addr) {
	r := s.Ref(KindClusterIP, index)
	addrs := make([]netip.Addr, s.Endpoints)
	for e := range addrs {
		addrs[e] = endpointAddr(KindClusterIP, index, e, s.Endpoints)
	}
	fresh := addAddr(changedBase, n)
	addrs[0] = fresh
	return s.slice(r, addrs), fresh
}

// Load creates the objects in the API server with workers in parallel,
// namespaces first. Objects that exist already are left as they are, so a
// load can be repeated.
func (o Objects) Load(ctx context.Context, c kubernetes.Interface, workers int) error {
	for _, ns := range o.Namespaces {
		if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", ns.Name, err)
		}
	}
	jobs := make(chan func() error)
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range max(1, workers) {
		wg.Go(func() {
			for job := range jobs {
				if err := job(); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	send := func(job func() error) bool {
		select {
		case jobs <- job:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for _, svc := range o.Services {
		if !send(func() error {
			_, err := c.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create service %s/%s: %w", svc.Namespace, svc.Name, err)
			}
			return nil
		}) {
			break
		}
	}
	for _, sl := range o.Slices {
		if !send(func() error {
			_, err := c.DiscoveryV1().EndpointSlices(sl.Namespace).Create(ctx, sl, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("create endpointslice %s/%s: %w", sl.Namespace, sl.Name, err)
			}
			return nil
		}) {
			break
		}
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		errs = append(errs, fmt.Errorf("load interrupted: %w", err))
	}
	if len(errs) > 3 {
		errs = append(errs[:3], fmt.Errorf("and %d more errors", len(errs)-3))
	}
	return errors.Join(errs...)
}

// WriteManifests writes the objects as a folder of YAML manifests, one file
// per namespace, that `kubernetes { manifests DIR }` and `clusterdns proxy
// --manifests DIR` read.
func (o Objects) WriteManifests(dir string) error {
	files := map[string]*bytes.Buffer{}
	var order []string
	add := func(ns string, obj any) error {
		b := files[ns]
		if b == nil {
			b = &bytes.Buffer{}
			files[ns] = b
			order = append(order, ns)
		}
		data, err := yaml.Marshal(obj)
		if err != nil {
			return fmt.Errorf("marshal %s object: %w", ns, err)
		}
		if b.Len() > 0 {
			b.WriteString("---\n")
		}
		b.Write(data)
		return nil
	}
	for _, ns := range o.Namespaces {
		if err := add(ns.Name, ns); err != nil {
			return err
		}
	}
	for _, svc := range o.Services {
		if err := add(svc.Namespace, svc); err != nil {
			return err
		}
	}
	for _, sl := range o.Slices {
		if err := add(sl.Namespace, sl); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("manifests folder: %w", err)
	}
	for _, ns := range order {
		if err := os.WriteFile(filepath.Join(dir, ns+".yaml"), files[ns].Bytes(), 0o644); err != nil {
			return fmt.Errorf("write manifests: %w", err)
		}
	}
	return nil
}

// WriteManifestsSlicesApart writes the objects as a manifests folder whose
// Services sit in one file per namespace, as WriteManifests does, and whose
// EndpointSlices sit in a small file each (SliceFile names it), so that an
// endpoint change rewrites one small file, as a controller writing a folder
// would.
func (o Objects) WriteManifestsSlicesApart(dir string) error {
	if err := (Objects{Namespaces: o.Namespaces, Services: o.Services}).WriteManifests(dir); err != nil {
		return err
	}
	for _, sl := range o.Slices {
		if err := WriteSliceFile(dir, sl); err != nil {
			return err
		}
	}
	return nil
}

// SliceFile is where WriteManifestsSlicesApart keeps a slice.
func SliceFile(dir string, sl *discoveryv1.EndpointSlice) string {
	return filepath.Join(dir, "slices", sl.Namespace, sl.Name+".yaml")
}

// WriteSliceFile writes one slice's file whole: to a hidden temporary file
// renamed over the old one, as editors and ConfigMap updates do, so a
// reader never sees half of it.
func WriteSliceFile(dir string, sl *discoveryv1.EndpointSlice) error {
	data, err := yaml.Marshal(sl)
	if err != nil {
		return fmt.Errorf("marshal slice %s/%s: %w", sl.Namespace, sl.Name, err)
	}
	path := SliceFile(dir, sl)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("manifests folder: %w", err)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write slice: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write slice: %w", err)
	}
	return nil
}
