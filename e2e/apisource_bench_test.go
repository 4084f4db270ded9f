package e2e

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/e2e/internal/kubeapi"
	"github.com/clusterdns/clusterdns/zone"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// BenchmarkAPISourceLatency measures, against a real API server holding a
// handful of objects, the time from an API write to the publication of the
// snapshot that reflects it. Run with a fixed count, e.g.
//
//	go test ./e2e -run '^$' -bench APISourceLatency -benchtime 50x
func BenchmarkAPISourceLatency(b *testing.B) {
	api := kubeapi.Start(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	admin := mustAdmin(b, api)
	createNamespace(b, ctx, admin, "bench", nil)
	src, err := zone.NewAPISource(zone.APIConfig{Endpoint: api.URL, CertFile: api.AdminCertFile, KeyFile: api.AdminKeyFile, CAFile: api.CAFile})
	if err != nil {
		b.Fatal(err)
	}
	rec := runAPISource(b, src)
	_, _, next := rec.waitFor(b, "the first sync", 0, time.Minute, func(*zone.Cluster) bool { return true })
	measureChanges(b, ctx, admin, rec, next, "bench")
}

// BenchmarkAPISourceScale loads 10,000 Services and 10,000 EndpointSlices
// with 5 endpoints each (50,000 endpoints) into a real API server, then
// reports how long the source takes to sync them, the heap the source holds
// for them, and the write-to-publish latency of changes at that size. It
// takes a few minutes:
//
//	go test ./e2e -run '^$' -bench APISourceScale -benchtime 50x -timeout 30m
func BenchmarkAPISourceScale(b *testing.B) {
	const (
		namespaces   = 100
		perNamespace = 100 // services, each with one slice
		endpoints    = 5   // per slice
		workers      = 16
	)
	api := kubeapi.StartWithOptions(b, kubeapi.Options{ExtraArgs: []string{
		"--max-requests-inflight=2000",
		"--max-mutating-requests-inflight=1000",
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	admin := mustAdmin(b, api)

	began := time.Now()
	for n := range namespaces {
		createNamespace(b, ctx, admin, fmt.Sprintf("ns-%03d", n), nil)
	}
	type job struct{ ns, svc int }
	jobs := make(chan job)
	var failed atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				if err := createServiceWithSlice(ctx, admin, j.ns, j.svc, endpoints); err != nil {
					failed.CompareAndSwap(nil, err)
				}
			}
		})
	}
	for n := range namespaces {
		for s := range perNamespace {
			jobs <- job{n, s}
		}
	}
	close(jobs)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatalf("load: %v", err)
	}
	b.Logf("loaded %d services and %d endpoints in %s",
		namespaces*perNamespace, namespaces*perNamespace*endpoints, time.Since(began).Round(time.Second))

	runtime.GC()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	src, err := zone.NewAPISource(zone.APIConfig{Endpoint: api.URL, CertFile: api.AdminCertFile, KeyFile: api.AdminKeyFile, CAFile: api.CAFile})
	if err != nil {
		b.Fatal(err)
	}
	rec := runAPISource(b, src)
	rec.keep = 1
	started := time.Now()
	first, at, next := rec.waitFor(b, "the first sync", 0, 5*time.Minute, func(*zone.Cluster) bool { return true })
	want := namespaces * perNamespace
	if len(first.Services) < want || len(first.Slices) < want {
		b.Fatalf("first snapshot has %d services and %d slices, want at least %d of each", len(first.Services), len(first.Slices), want)
	}
	first = nil
	runtime.GC()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heapMB := float64(after.HeapInuse-before.HeapInuse) / (1 << 20)
	b.ReportMetric(at.Sub(started).Seconds(), "initial-sync-s")
	b.ReportMetric(heapMB, "source-heap-MB")
	b.Logf("initial sync %s; source heap in use after GC %.1f MB (process %.1f MB)",
		at.Sub(started).Round(time.Millisecond), heapMB, float64(after.HeapInuse)/(1<<20))

	measureChanges(b, ctx, admin, rec, next, "ns-000")
}

func createServiceWithSlice(ctx context.Context, c kubernetes.Interface, n, s, endpoints int) error {
	ns, name := fmt.Sprintf("ns-%03d", n), fmt.Sprintf("svc-%03d", s)
	if _, err := c.CoreV1().Services(ns).Create(ctx, newService(ns, name, nil), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create service %s/%s: %w", ns, name, err)
	}
	ips := make([]string, endpoints)
	for e := range ips {
		// 10.<ns>.<svc>.<endpoint>: unique within the loaded set.
		ips[e] = fmt.Sprintf("10.%d.%d.%d", 100+n, s, 10+e)
	}
	if _, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, newSlice(ns, name, name+"-1", nil, ips...), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create slice %s/%s: %w", ns, name, err)
	}
	return nil
}

// measureChanges makes b.N changes in namespace ns, one at a time and apart
// from each other: odd ones
// create a Service, even ones rewrite an EndpointSlice. For each it takes the
// time from just before the write to the publication of the first snapshot
// reflecting it, and the latency the snapshot itself records (publication
// minus Cluster.Changed), and reports their medians and maxima.
func measureChanges(b *testing.B, ctx context.Context, admin kubernetes.Interface, rec *published, next int, ns string) {
	if _, err := admin.CoreV1().Services(ns).Create(ctx, newService(ns, "latency", nil), metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := admin.DiscoveryV1().EndpointSlices(ns).Create(ctx, newSlice(ns, "latency", "latency-1", nil, "10.250.0.1"), metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	latencyKey := zone.Key{Namespace: ns, Name: "latency"}
	_, _, next = rec.waitFor(b, "the latency service", next, time.Minute, func(c *zone.Cluster) bool {
		return len(c.SlicesFor(latencyKey)) == 1
	})

	var writeToPublish, recorded []time.Duration
	i := 0
	for b.Loop() {
		i++
		// Let the previous snapshot's coalescing interval pass, so each
		// change is measured as a single change rather than part of a burst.
		time.Sleep(2 * zone.DefaultMinInterval)
		var ok func(*zone.Cluster) bool
		begin := time.Now()
		if i%2 == 1 {
			name := fmt.Sprintf("latency-%d", i)
			if _, err := admin.CoreV1().Services(ns).Create(ctx, newService(ns, name, nil), metav1.CreateOptions{}); err != nil {
				b.Fatal(err)
			}
			key := zone.Key{Namespace: ns, Name: name}
			ok = func(c *zone.Cluster) bool { return c.Services[key] != nil }
		} else {
			ip := fmt.Sprintf("10.250.%d.%d", i/250, 1+i%250)
			if _, err := admin.DiscoveryV1().EndpointSlices(ns).Update(ctx, newSlice(ns, "latency", "latency-1", nil, ip), metav1.UpdateOptions{}); err != nil {
				b.Fatal(err)
			}
			ok = func(c *zone.Cluster) bool {
				addrs := sliceAddresses(c, latencyKey)
				return len(addrs) == 1 && addrs[0] == ip
			}
		}
		c, at, n := rec.waitFor(b, fmt.Sprintf("change %d", i), next, time.Minute, ok)
		next = n
		writeToPublish = append(writeToPublish, at.Sub(begin))
		if !c.Changed.IsZero() {
			recorded = append(recorded, at.Sub(c.Changed))
		}
	}
	report := func(name string, d []time.Duration) {
		if len(d) == 0 {
			return
		}
		slices.Sort(d)
		med, maxD := d[len(d)/2], d[len(d)-1]
		b.ReportMetric(float64(med.Microseconds())/1000, name+"-median-ms")
		b.ReportMetric(float64(maxD.Microseconds())/1000, name+"-max-ms")
		b.Logf("%s over %d changes: median %s, max %s", name, len(d), med.Round(100*time.Microsecond), maxD.Round(100*time.Microsecond))
	}
	report("write-to-publish", writeToPublish)
	report("recorded", recorded)
}
