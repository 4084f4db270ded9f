package zone

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// cachedObject is what the API source's informer caches hold instead of the
// full API objects: the slim model value and the resource version, which
// tells a real update from a relist of the same object. The namespace and
// name the cache keys objects by are read from the value, which has them
// already: tens of thousands of cached objects then cost 32 bytes each
// beside their values. A full Service or EndpointSlice costs kilobytes once
// managed fields and annotations are counted.
//
// It satisfies metav1.Object and runtime.Object because client-go reads keys
// and versions through those interfaces. Everything else reads as empty and
// every setter is ignored: the cache never needs them.
type cachedObject struct {
	resourceVersion string
	// value is one of *Service, *EndpointSlice, *Pod, *Namespace or *Node,
	// and is never changed after the object is cached.
	value any
}

// key is the namespace and name of the cached object.
func (o *cachedObject) key() Key {
	switch v := o.value.(type) {
	case *Service:
		return v.Key
	case *EndpointSlice:
		return v.Key
	case *Pod:
		return v.Key
	case *Namespace:
		return Key{Name: v.Name}
	case *Node:
		return Key{Name: v.Name}
	}
	return Key{}
}

var (
	_ metav1.Object  = (*cachedObject)(nil)
	_ runtime.Object = (*cachedObject)(nil)
)

func (o *cachedObject) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject copies the wrapper; the value is immutable and is shared.
func (o *cachedObject) DeepCopyObject() runtime.Object { c := *o; return &c }

func (o *cachedObject) GetNamespace() string                                       { return o.key().Namespace }
func (o *cachedObject) SetNamespace(string)                                        {}
func (o *cachedObject) GetName() string                                            { return o.key().Name }
func (o *cachedObject) SetName(string)                                             {}
func (o *cachedObject) GetGenerateName() string                                    { return "" }
func (o *cachedObject) SetGenerateName(string)                                     {}
func (o *cachedObject) GetUID() types.UID                                          { return "" }
func (o *cachedObject) SetUID(types.UID)                                           {}
func (o *cachedObject) GetResourceVersion() string                                 { return o.resourceVersion }
func (o *cachedObject) SetResourceVersion(string)                                  {}
func (o *cachedObject) GetGeneration() int64                                       { return 0 }
func (o *cachedObject) SetGeneration(int64)                                        {}
func (o *cachedObject) GetSelfLink() string                                        { return "" }
func (o *cachedObject) SetSelfLink(string)                                         {}
func (o *cachedObject) GetCreationTimestamp() metav1.Time                          { return metav1.Time{} }
func (o *cachedObject) SetCreationTimestamp(metav1.Time)                           {}
func (o *cachedObject) GetDeletionTimestamp() *metav1.Time                         { return nil }
func (o *cachedObject) SetDeletionTimestamp(*metav1.Time)                          {}
func (o *cachedObject) GetDeletionGracePeriodSeconds() *int64                      { return nil }
func (o *cachedObject) SetDeletionGracePeriodSeconds(*int64)                       {}
func (o *cachedObject) GetLabels() map[string]string                               { return nil }
func (o *cachedObject) SetLabels(map[string]string)                                {}
func (o *cachedObject) GetAnnotations() map[string]string                          { return nil }
func (o *cachedObject) SetAnnotations(map[string]string)                           {}
func (o *cachedObject) GetFinalizers() []string                                    { return nil }
func (o *cachedObject) SetFinalizers([]string)                                     {}
func (o *cachedObject) GetOwnerReferences() []metav1.OwnerReference                { return nil }
func (o *cachedObject) SetOwnerReferences([]metav1.OwnerReference)                 {}
func (o *cachedObject) GetManagedFields() []metav1.ManagedFieldsEntry              { return nil }
func (o *cachedObject) SetManagedFields(managedFields []metav1.ManagedFieldsEntry) {}
