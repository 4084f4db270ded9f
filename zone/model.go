package zone

import (
	"context"
	"net/netip"
	"time"
)

// Key names a namespaced object.
type Key struct {
	Namespace string
	Name      string
}

func (k Key) String() string { return k.Namespace + "/" + k.Name }

// ServiceType mirrors core/v1 ServiceType.
type ServiceType string

// The Service types clusterdns understands.
const (
	TypeClusterIP    ServiceType = "ClusterIP"
	TypeNodePort     ServiceType = "NodePort"
	TypeLoadBalancer ServiceType = "LoadBalancer"
	TypeExternalName ServiceType = "ExternalName"
)

// Protocol is a transport protocol name as Kubernetes spells it: TCP, UDP or SCTP.
type Protocol string

// The protocols a Service port may carry.
const (
	ProtocolTCP  Protocol = "TCP"
	ProtocolUDP  Protocol = "UDP"
	ProtocolSCTP Protocol = "SCTP"
)

// Service is the part of a core/v1 Service that DNS answers and node rules need.
type Service struct {
	Key
	Type ServiceType
	// ClusterIPs holds the virtual IPs, primary family first. It is empty for
	// headless and ExternalName services.
	ClusterIPs []netip.Addr
	// Headless is true when spec.clusterIP is "None".
	Headless     bool
	ExternalName string
	ExternalIPs  []netip.Addr
	Ports        []ServicePort
	// Selector is nil when the Service has none (its endpoints are managed by
	// hand) and in Services from the API source, which never derives slices.
	Selector                 map[string]string
	PublishNotReadyAddresses bool
	// AffinityTimeout is the ClientIP session affinity timeout in seconds; zero
	// means no affinity.
	AffinityTimeout int32
	// ExternalTrafficLocal is true for externalTrafficPolicy: Local.
	ExternalTrafficLocal bool
	// InternalTrafficLocal is true for internalTrafficPolicy: Local.
	InternalTrafficLocal bool
	// LoadBalancerIngress are the IPs of status.loadBalancer.ingress (entries
	// with only a hostname have none and are left out).
	LoadBalancerIngress []LoadBalancerIngress
	// LoadBalancerSourceRanges are the only sources allowed to reach the
	// load balancer IPs; empty allows every source.
	LoadBalancerSourceRanges []netip.Prefix
	// TrafficDistribution is spec.trafficDistribution as written (PreferClose,
	// PreferSameZone, PreferSameNode), empty when unset.
	TrafficDistribution string
	// HealthCheckNodePort is the port on every node where load balancers ask
	// whether the node has local endpoints (eTP Local LoadBalancers only);
	// zero when there is none.
	HealthCheckNodePort int32
	// Updated is when the object last changed, as far as the source can tell; it
	// feeds the programming-latency measurement.
	Updated time.Time
}

// LoadBalancerIngress is one load balancer address of a Service.
type LoadBalancerIngress struct {
	IP netip.Addr
	// Proxy is set for ipMode: Proxy: the load balancer does not deliver
	// packets to this IP unchanged but proxies them, so traffic sent to it
	// from inside the cluster must go to the load balancer instead of being
	// routed to the Service on the node (KEP-1860).
	Proxy bool
}

// The Service traffic distributions that select topology hints.
const (
	TrafficPreferClose    = "PreferClose"
	TrafficPreferSameZone = "PreferSameZone"
	TrafficPreferSameNode = "PreferSameNode"
)

// ServicePort is one port of a Service.
type ServicePort struct {
	Name     string
	Protocol Protocol
	Port     int32
	// TargetPort is the numeric target port; TargetPortName is set instead when
	// the target is a named container port.
	TargetPort     int32
	TargetPortName string
	NodePort       int32
}

// AddressType mirrors discovery/v1 AddressType.
type AddressType string

// The address types of EndpointSlices.
const (
	AddressIPv4 AddressType = "IPv4"
	AddressIPv6 AddressType = "IPv6"
	AddressFQDN AddressType = "FQDN"
)

// EndpointSlice is the part of a discovery/v1 EndpointSlice that answers and
// rules need. Key names the slice itself; Service names its owner.
type EndpointSlice struct {
	Key
	Service     string
	AddressType AddressType
	Endpoints   []Endpoint
	Ports       []EndpointPort
	Updated     time.Time
}

// Endpoint is one backend of a slice.
type Endpoint struct {
	Addresses []netip.Addr
	Hostname  string
	NodeName  string
	// PodName is the name of the Pod behind the endpoint, when known.
	PodName     string
	Ready       bool
	Serving     bool
	Terminating bool
	// Zone is the endpoint's topology zone, empty when unknown.
	Zone string
	// Hints are the EndpointSlice controller's topology hints; nil when the
	// endpoint has none (nearly all, so a pointer keeps endpoints small).
	Hints *EndpointHints
}

// EndpointHints say which zones and nodes should use an endpoint.
type EndpointHints struct {
	ForZones []string
	ForNodes []string
}

// EndpointPort is one port of a slice. Name matches the Service port's name.
type EndpointPort struct {
	Name     string
	Protocol Protocol
	Port     int32
}

// Pod is the part of a core/v1 Pod needed to derive endpoints and to verify pod
// records.
type Pod struct {
	Key
	IPs         []netip.Addr
	Labels      map[string]string
	Hostname    string
	Subdomain   string
	NodeName    string
	Ready       bool
	Terminating bool
	Ports       []ContainerPort
}

// ContainerPort is a declared container port; named ones resolve named target ports.
type ContainerPort struct {
	Name     string
	Protocol Protocol
	Port     int32
}

// Node is the part of a core/v1 Node clusterdns needs: the node agent reads
// its own node's zone for topology-aware routing.
type Node struct {
	Name string
	// Zone is the topology.kubernetes.io/zone label, empty when unset.
	Zone string
}

// Namespace is the part of a core/v1 Namespace clusterdns needs.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Source loads the cluster's objects and keeps them current.
type Source interface {
	// Run publishes a complete snapshot once the source has loaded, and a new one
	// after every change, until ctx ends. A source never publishes a partial view:
	// if a later load fails, it keeps quiet and the last snapshot stands.
	Run(ctx context.Context, publish func(*Cluster)) error
}
