package zone

import "time"

// APIConfig says how to reach the Kubernetes API. With no Endpoint and no
// Kubeconfig the in-cluster configuration is used.
type APIConfig struct {
	// Endpoint is the API server's URL.
	Endpoint string
	// CertFile, KeyFile and CAFile are the client TLS files for Endpoint.
	CertFile, KeyFile, CAFile string
	// Kubeconfig is a kubeconfig file, and Context an optional context in it.
	Kubeconfig string
	Context    string
	// StartupTimeout bounds the wait for the first full sync.
	StartupTimeout time.Duration
	// Labels and NamespaceLabels are label selectors limiting the Services
	// (and their slices) and the namespaces served.
	Labels          string
	NamespaceLabels string
	// WatchPods is set for "pods verified", which needs the Pods themselves.
	WatchPods bool
	// NodeName, when set, has the source watch that one Node (the node
	// agent's own, for its topology zone).
	NodeName string
}
