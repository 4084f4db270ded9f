package zone

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Resource names the API source lists and watches.
const (
	ResourceServices       = "services"
	ResourceEndpointSlices = "endpointslices"
	ResourceNamespaces     = "namespaces"
	ResourcePods           = "pods"
	ResourceNodes          = "nodes"
)

// ListWatchFunc returns the list-and-watch of one resource (one of the
// Resource constants) across all namespaces, with tweak applied to every
// request's options.
type ListWatchFunc func(resource string, tweak func(*metav1.ListOptions)) cache.ListerWatcher

// newAPIScheme knows only the kinds the sources read. client-go's shared
// scheme registers every API group, and linking and initialising all of them
// costs each process about 9 MB of memory for types it never sees.
func newAPIScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, discoveryv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(fmt.Sprintf("registering API types: %v", err))
		}
	}
	return s
}

// restListWatch reads through REST clients for core/v1 and discovery/v1 that
// share one HTTP client (so one connection pool, one HTTP/2 connection).
func restListWatch(rc *rest.Config) (ListWatchFunc, error) {
	httpClient, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	codecs := serializer.NewCodecFactory(newAPIScheme()).WithoutConversion()
	client := func(apiPath string, gv schema.GroupVersion) (*rest.RESTClient, error) {
		c := rest.CopyConfig(rc)
		c.APIPath = apiPath
		c.GroupVersion = &gv
		c.NegotiatedSerializer = codecs
		return rest.RESTClientForConfigAndClient(c, httpClient)
	}
	core, err := client("/api", corev1.SchemeGroupVersion)
	if err != nil {
		return nil, fmt.Errorf("kubernetes core/v1 client: %w", err)
	}
	discovery, err := client("/apis", discoveryv1.SchemeGroupVersion)
	if err != nil {
		return nil, fmt.Errorf("kubernetes discovery/v1 client: %w", err)
	}
	return func(resource string, tweak func(*metav1.ListOptions)) cache.ListerWatcher {
		c := core
		if resource == ResourceEndpointSlices {
			c = discovery
		}
		return cache.NewFilteredListWatchFromClient(c, resource, metav1.NamespaceAll, tweak)
	}, nil
}
