package kubeapi

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

func TestAPIServerKeepsObjectsAcrossRestart(t *testing.T) {
	s := Start(t)
	t.Logf("etcd and kube-apiserver ready after %s", s.ReadyAfter.Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := mustClient(t, s.AdminConfig)
	if _, err := client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{}); err != nil {
		t.Fatalf("Start returned before default/kubernetes existed: %v", err)
	}

	const ns = "kubeapi-test"
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	svc, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service: %v", err)
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Fatalf("service got no ClusterIP: %q", svc.Spec.ClusterIP)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:   "web-abc",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.1.0.5"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create endpointslice: %v", err)
	}

	check := func(when string) {
		t.Helper()
		got, err := client.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("%s: get service: %v", when, err)
		}
		if got.Spec.ClusterIP != svc.Spec.ClusterIP {
			t.Errorf("%s: ClusterIP = %s, want %s", when, got.Spec.ClusterIP, svc.Spec.ClusterIP)
		}
		gotSlice, err := client.DiscoveryV1().EndpointSlices(ns).Get(ctx, "web-abc", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("%s: get endpointslice: %v", when, err)
		}
		if len(gotSlice.Endpoints) != 1 || gotSlice.Endpoints[0].Addresses[0] != "10.1.0.5" {
			t.Errorf("%s: endpoints = %+v, want one with 10.1.0.5", when, gotSlice.Endpoints)
		}
	}
	check("before restart")

	began := time.Now()
	if err := s.Restart(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Logf("kube-apiserver restarted in %s", time.Since(began).Round(time.Millisecond))
	check("after restart")
}

func TestServiceAccountTokenHasOnlyItsRights(t *testing.T) {
	s := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	token, err := s.TokenFor(ctx, "dns", "reader")
	if err != nil {
		t.Fatal(err)
	}
	// Through a kubeconfig file, as a child process would get it.
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := s.WriteKubeconfig(path, token); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	_, err = mustClient(t, cfg).CoreV1().Services("dns").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("listing services without an RBAC grant: err = %v, want Forbidden", err)
	}

	// The admin client certificate works as well as the admin token.
	certCfg := &rest.Config{Host: s.URL, TLSClientConfig: rest.TLSClientConfig{
		CAFile: s.CAFile, CertFile: s.AdminCertFile, KeyFile: s.AdminKeyFile,
	}}
	if _, err := mustClient(t, certCfg).CoreV1().Namespaces().Get(ctx, "dns", metav1.GetOptions{}); err != nil {
		t.Fatalf("get namespace with the admin certificate: %v", err)
	}
}

func TestStopRemovesEtcdData(t *testing.T) {
	s := Start(t)
	s.Stop()
	if _, err := os.Stat(s.etcdDir); !os.IsNotExist(err) {
		t.Fatalf("etcd data dir %s still there after Stop (err %v)", s.etcdDir, err)
	}
	s.Stop() // a second Stop is harmless
}

func mustClient(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	return c
}
