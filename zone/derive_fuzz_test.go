package zone

import (
	"log/slog"
	"net/netip"
	"testing"
)

// deriveInput hands out a fuzz input a byte at a time, then zeros.
type deriveInput struct{ b []byte }

func (in *deriveInput) next() byte {
	if len(in.b) == 0 {
		return 0
	}
	c := in.b[0]
	in.b = in.b[1:]
	return c
}

func pickOf[T any](in *deriveInput, choices ...T) T { return choices[int(in.next())%len(choices)] }

// FuzzDeriveSlices builds a manifests folder's objects from the input (a
// few selector Services, Pods with labels, addresses of both families and
// named ports, and hand-written EndpointSlices, with names chosen to
// collide) and checks the snapshot the manifests source would serve: a
// selector Service without slices of its own has an endpoint for every
// address of every Pod it selects, and only those; a slice written by hand
// is never replaced by a derived one; every slice's address type matches
// its addresses.
func FuzzDeriveSlices(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{2, 0, 0, 1, 1, 0, 2, 1, 1, 3, 0, 1, 1, 2, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4, 0})
	f.Add([]byte{3, 1, 1, 0, 2, 1, 3, 2, 0, 1, 1, 1, 5, 1, 1, 1, 1, 0, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1})
	quiet := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &deriveInput{b: data}
		var objs manifestObjects
		for range 1 + in.next()%4 {
			svc := &Service{
				Key:                      Key{Namespace: pickOf(in, "a", "b"), Name: pickOf(in, "web", "web-derived", "db", "web-derived-1")},
				Type:                     pickOf(in, TypeClusterIP, TypeClusterIP, TypeNodePort, TypeExternalName),
				PublishNotReadyAddresses: in.next()&1 != 0,
			}
			if c := in.next() % 3; c > 0 {
				svc.Selector = map[string]string{"app": pickOf(in, "web", "db")}
				if c == 2 {
					svc.Selector["tier"] = "front"
				}
			}
			for i := range 1 + in.next()%3 {
				sp := ServicePort{Name: pickOf(in, "", "http", "dns"), Protocol: pickOf(in, ProtocolTCP, ProtocolUDP), Port: int32(80 + i)}
				if in.next()&1 == 0 {
					sp.TargetPort = 8080 + int32(i)
				} else {
					sp.TargetPortName = pickOf(in, "http", "metrics")
				}
				svc.Ports = append(svc.Ports, sp)
			}
			objs.services = append(objs.services, svc)
		}
		for i := range in.next() % 7 {
			p := &Pod{
				Key:         Key{Namespace: pickOf(in, "a", "b"), Name: pickOf(in, "p0", "p1", "p2", "p3") + string(rune('a'+i))},
				Labels:      map[string]string{"app": pickOf(in, "web", "db")},
				Hostname:    pickOf(in, "", "h1", "h2"),
				Subdomain:   pickOf(in, "", "web", "db"),
				Ready:       in.next()&1 != 0,
				Terminating: in.next()&3 == 0,
			}
			if in.next()&1 != 0 {
				p.Labels["tier"] = "front"
			}
			for range in.next() % 3 {
				if in.next()&1 == 0 {
					p.IPs = append(p.IPs, netip.AddrFrom4([4]byte{10, 0, in.next() % 4, in.next() % 4}))
				} else {
					p.IPs = append(p.IPs, netip.AddrFrom16([16]byte{0xfd, 15: in.next() % 4}))
				}
			}
			for range in.next() % 3 {
				p.Ports = append(p.Ports, ContainerPort{Name: pickOf(in, "http", "metrics"), Protocol: pickOf(in, ProtocolTCP, ProtocolUDP), Port: 9000 + int32(in.next()%4)})
			}
			objs.pods = append(objs.pods, p)
		}
		for range in.next() % 3 {
			s := &EndpointSlice{
				Key:         Key{Namespace: pickOf(in, "a", "b"), Name: pickOf(in, "web-derived", "db-derived", "s1", "web-derived-1")},
				Service:     pickOf(in, "web", "db", "other"),
				AddressType: AddressIPv4,
				Endpoints:   []Endpoint{{Addresses: []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 2, in.next()})}, Ready: true}},
			}
			objs.slices = append(objs.slices, s)
		}

		c := buildFromManifests(map[string]manifestObjects{"f.yaml": objs}, quiet)

		owned := make(map[Key]bool)
		written := make(map[Key]*EndpointSlice)
		for _, s := range objs.slices {
			owned[Key{Namespace: s.Namespace, Name: s.Service}] = true
			written[s.Key] = s // the later one wins, as in the builder
		}
		// A slice written by hand stays its Service's, whatever a derived
		// slice is called.
		for _, s := range written {
			found := false
			for _, sl := range c.SlicesFor(Key{Namespace: s.Namespace, Name: s.Service}) {
				found = found || sl == s
			}
			if !found {
				t.Fatalf("the slice %s written for %s/%s is lost; the Service has %+v", s.Key, s.Namespace, s.Service, c.SlicesFor(Key{Namespace: s.Namespace, Name: s.Service}))
			}
		}
		services := make(map[Key]*Service)
		for _, s := range objs.services {
			services[s.Key] = s // the later one wins, as in the builder
		}
		for k, svc := range services {
			for _, sl := range c.SlicesFor(k) {
				for _, e := range sl.Endpoints {
					for _, a := range e.Addresses {
						if want := map[bool]AddressType{true: AddressIPv4, false: AddressIPv6}[a.Is4()]; sl.AddressType != want {
							t.Fatalf("slice %s of %s is %s but holds %s", sl.Key, k, sl.AddressType, a)
						}
					}
				}
			}
			if svc.Selector == nil || svc.Type == TypeExternalName || owned[k] {
				continue
			}
			got := make(map[netip.Addr]bool)
			for _, sl := range c.SlicesFor(k) {
				for _, e := range sl.Endpoints {
					for _, a := range e.Addresses {
						got[a] = true
					}
				}
			}
			want := make(map[netip.Addr]bool)
			for _, p := range c.Pods {
				if p.Namespace == k.Namespace && selectorMatches(svc.Selector, p.Labels) {
					for _, a := range p.IPs {
						want[a] = true
					}
				}
			}
			for a := range want {
				if !got[a] {
					t.Fatalf("%s selects a Pod at %s, but its derived slices lack it; slices: %+v", k, a, c.SlicesFor(k))
				}
			}
			for a := range got {
				if !want[a] {
					t.Fatalf("%s has an endpoint %s no Pod it selects has", k, a)
				}
			}
		}
	})
}
