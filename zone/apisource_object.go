package zone

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
)

// cachedObject is what the API source's informer caches hold instead of the
// full API objects: the slim model value and the three pieces of metadata the
// cache itself uses (namespace and name for its keys, resource version to tell
// a real update from a relist of the same object). A full Service or
// EndpointSlice costs kilobytes once managed fields and annotations are
// counted; this costs a few dozen bytes beside the model value.
//
// It satisfies metav1.Object and runtime.Object because client-go reads keys
// and versions through those interfaces. Everything else reads as empty and
// every setter is ignored: the cache never needs them.
type cachedObject struct {
	namespace, name, resourceVersion string
	// value is one of *Service, *EndpointSlice, *Pod or *Namespace, and is
	// never changed after the object is cached.
	value any
}

var (
	_ metav1.Object  = (*cachedObject)(nil)
	_ runtime.Object = (*cachedObject)(nil)
)

func (o *cachedObject) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject copies the wrapper; the value is immutable and is shared.
func (o *cachedObject) DeepCopyObject() runtime.Object { c := *o; return &c }

func (o *cachedObject) GetNamespace() string                                       { return o.namespace }
func (o *cachedObject) SetNamespace(string)                                        {}
func (o *cachedObject) GetName() string                                            { return o.name }
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
