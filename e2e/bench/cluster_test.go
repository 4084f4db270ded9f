package bench

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSpecScaledIsAPrefix(t *testing.T) {
	full := DefaultSpec()
	small := full.Scaled(1000)
	if small.ClusterIP != 1000 || small.Headless != 100 || small.ExternalName != 10 {
		t.Fatalf("Scaled(1000) = %+v, want 1000/100/10", small)
	}
	// Scaling up works too: the 50,000-Service runs need it.
	if large := full.Scaled(50000); large.ClusterIP != 50000 || large.Headless != 5000 || large.ExternalName != 500 {
		t.Fatalf("Scaled(50000) = %+v, want 50000/5000/500", large)
	}
	// Every object of the small cluster is in the large one, unchanged.
	key := func(kind, ns, name string) string { return kind + "/" + ns + "/" + name }
	big := map[string]bool{}
	all := full.Objects(Spec{})
	for _, s := range all.Services {
		big[key("svc", s.Namespace, s.Name)+"/"+s.Spec.ClusterIP] = true
	}
	for _, s := range small.Objects(Spec{}).Services {
		if !big[key("svc", s.Namespace, s.Name)+"/"+s.Spec.ClusterIP] {
			t.Fatalf("service %s/%s (%s) of the small cluster is not in the large one", s.Namespace, s.Name, s.Spec.ClusterIP)
		}
	}
	// Growing from the small one adds exactly the rest.
	rest := full.Objects(small)
	if got, want := len(rest.Services), full.Services()-small.Services(); got != want {
		t.Errorf("growing adds %d services, want %d", got, want)
	}
	if got, want := len(rest.Slices)+len(small.Objects(Spec{}).Slices), len(all.Slices); got != want {
		t.Errorf("slices: %d after growing, %d at once", got, want)
	}
}

func TestObjectsAreUnique(t *testing.T) {
	spec := DefaultSpec()
	objs := spec.Objects(Spec{})
	if got, want := len(objs.Services), spec.Services(); got != want {
		t.Fatalf("%d services, want %d", got, want)
	}
	if got, want := len(objs.Slices), spec.ClusterIP+spec.Headless; got != want {
		t.Fatalf("%d slices, want %d", got, want)
	}
	names, ips, endpoints := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, s := range objs.Services {
		n := s.Namespace + "/" + s.Name
		if names[n] {
			t.Fatalf("service %s twice", n)
		}
		names[n] = true
		if ip := s.Spec.ClusterIP; ip != "" && ip != "None" {
			if ips[ip] {
				t.Fatalf("cluster IP %s twice", ip)
			}
			ips[ip] = true
			if !strings.HasPrefix(ip, "10.100.") {
				t.Fatalf("cluster IP %s outside 10.100.0.0/16", ip)
			}
		}
	}
	for _, sl := range objs.Slices {
		if len(sl.Endpoints) != spec.Endpoints {
			t.Fatalf("slice %s has %d endpoints", sl.Name, len(sl.Endpoints))
		}
		for _, ep := range sl.Endpoints {
			a := ep.Addresses[0]
			if endpoints[a] {
				t.Fatalf("endpoint %s twice", a)
			}
			endpoints[a] = true
		}
	}
	slice, fresh := spec.ChangedSlice(7, 1)
	if endpoints[fresh.String()] || slice.Endpoints[0].Addresses[0] != fresh.String() {
		t.Errorf("changed slice's new address %s is not fresh or not first: %v", fresh, slice.Endpoints[0].Addresses)
	}
}

func TestWriteManifests(t *testing.T) {
	spec := DefaultSpec().Scaled(150)
	dir := t.TempDir()
	if err := spec.Objects(Spec{}).WriteManifests(dir); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 { // ns-000 and ns-001
		t.Fatalf("%d files, want 2: %v", len(files), files)
	}
	data, err := os.ReadFile(filepath.Join(dir, "ns-000.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, want := range []string{"kind: Namespace", "name: svc-00000", "clusterIP: 10.100.0.10", "kind: EndpointSlice",
		"kubernetes.io/service-name: headless-0000", "externalName: external-000.example.com"} {
		if !strings.Contains(text, want) {
			t.Errorf("ns-000.yaml lacks %q", want)
		}
	}
}

func TestClusterMixShares(t *testing.T) {
	spec := DefaultSpec()
	mix := ClusterMix(spec, 10000)
	counts := map[string]int{}
	for _, l := range mix.Lines {
		switch {
		case strings.HasPrefix(l, "missing-"):
			counts["nxdomain"]++
		case strings.HasSuffix(l, " SRV"):
			counts["srv"]++
		case strings.HasPrefix(l, "headless-"):
			counts["headless"]++
		case strings.HasPrefix(l, "svc-"):
			counts["clusterip"]++
		default:
			t.Fatalf("unexpected line %q", l)
		}
	}
	want := map[string]int{"clusterip": 8000, "headless": 1000, "srv": 500, "nxdomain": 500}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("%s: %d lines, want %d", k, counts[k], v)
		}
	}
}
