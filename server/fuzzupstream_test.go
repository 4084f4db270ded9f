package server

import (
	"hash/fnv"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// fakeUpstream is an in-process DNS server on 127.0.0.1 (UDP and TCP on one
// port) that answers like a DNSSEC-validating recursive resolver would, but
// from rules on the name alone, so that every answer is the same each time:
//
//   - names under secure.example. are signed: RRSIGs when the query sets DO,
//     AD when it sets AD or DO (RFC 6840 section 5.8);
//   - bogus.secure.example. fails validation: SERVFAIL, unless the query sets
//     CD (then the records, without AD), as for dnssec-failed.org;
//   - names starting with "nx" do not exist (NXDOMAIN and an SOA);
//   - big.example. has 40 addresses, more than 512 bytes: truncated over UDP
//     to the query's buffer size, whole over TCP;
//   - noqr.example. gets a reply without the QR bit, as a broken or looping
//     upstream might send;
//   - every other name has one address of each family and nothing else.
//
// A reply carries an OPT record when the query did, echoing DO.
type fakeUpstream struct {
	addr     string
	udp, tcp *dns.Server
}

func startFakeUpstream(tb testing.TB) *fakeUpstream {
	tb.Helper()
	acceptAll := func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }
	// The UDP port the kernel picks may be taken for TCP: try a few.
	for i := 0; ; i++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			if i < 20 {
				continue
			}
			tb.Fatal(err)
		}
		u := &fakeUpstream{addr: pc.LocalAddr().String()}
		started := make(chan struct{}, 2)
		notify := func() { started <- struct{}{} }
		h := dns.HandlerFunc(u.serve)
		u.udp = &dns.Server{PacketConn: pc, Handler: h, MsgAcceptFunc: acceptAll, NotifyStartedFunc: notify}
		u.tcp = &dns.Server{Listener: ln, Handler: h, MsgAcceptFunc: acceptAll, NotifyStartedFunc: notify}
		go func() { _ = u.udp.ActivateAndServe() }()
		go func() { _ = u.tcp.ActivateAndServe() }()
		<-started
		<-started
		tb.Cleanup(func() {
			_ = u.udp.Shutdown()
			_ = u.tcp.Shutdown()
		})
		return u
	}
}

func (u *fakeUpstream) serve(w dns.ResponseWriter, r *dns.Msg) {
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	_ = w.WriteMsg(fakeAnswer(r, tcp))
}

// fakeAnswer is the fake upstream's reply to r.
func fakeAnswer(r *dns.Msg, tcp bool) *dns.Msg {
	m := new(dns.Msg)
	if len(r.Question) != 1 {
		m.SetRcodeFormatError(r)
		return m
	}
	m.SetReply(r)
	m.RecursionAvailable = true
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	opt := r.IsEdns0()
	do := opt != nil && opt.Do()
	signed := dns.IsSubDomain("secure.example.", name)
	switch {
	case name == "noqr.example.":
		m.Response = false
		return m
	case name == "bogus.secure.example." && !r.CheckingDisabled:
		m.Rcode = dns.RcodeServerFailure
		signed = false
	case strings.HasPrefix(name, "nx"):
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, fakeSOA(q.Name))
	case q.Qclass != dns.ClassINET:
		m.Ns = append(m.Ns, fakeSOA(q.Name))
	default:
		n := 1
		if name == "big.example." {
			n = 40
		}
		for i := range n {
			if rr := fakeAddress(q, name, i); rr != nil {
				m.Answer = append(m.Answer, rr)
			}
		}
		if len(m.Answer) == 0 {
			m.Ns = append(m.Ns, fakeSOA(q.Name))
		}
	}
	if name == "bogus.secure.example." {
		signed = false
	}
	if signed && do {
		m.Answer = withRRSIGs(m.Answer)
		m.Ns = withRRSIGs(m.Ns)
	}
	m.AuthenticatedData = signed && m.Rcode != dns.RcodeServerFailure && (r.AuthenticatedData || do)
	if opt != nil {
		m.SetEdns0(1232, do)
	}
	if !tcp {
		size := dns.MinMsgSize
		if opt != nil {
			size = max(size, int(opt.UDPSize()))
		}
		m.Truncate(size)
	}
	return m
}

// fakeAddress is the i-th address record of name, or nil for other types.
func fakeAddress(q dns.Question, name string, i int) dns.RR {
	h := fnv.New32a()
	h.Write([]byte(name))
	sum := h.Sum32()
	hdr := dns.RR_Header{Name: q.Name, Rrtype: q.Qtype, Class: dns.ClassINET, Ttl: 300}
	switch q.Qtype {
	case dns.TypeA:
		a := netip.AddrFrom4([4]byte{198, 51, byte(sum), byte(i)})
		return &dns.A{Hdr: hdr, A: a.AsSlice()}
	case dns.TypeAAAA:
		a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(sum >> 8), 13: byte(sum), 15: byte(i)})
		return &dns.AAAA{Hdr: hdr, AAAA: a.AsSlice()}
	}
	return nil
}

func fakeSOA(name string) dns.RR {
	zone := "example."
	if labels := dns.SplitDomainName(name); len(labels) >= 2 {
		zone = dns.Fqdn(strings.Join(labels[len(labels)-2:], "."))
	}
	return &dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns: "ns." + zone, Mbox: "hostmaster." + zone, Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 60}
}

// withRRSIGs adds a (meaningless but well-formed) signature after the
// records of each name and type.
func withRRSIGs(rrs []dns.RR) []dns.RR {
	if len(rrs) == 0 {
		return rrs
	}
	h := rrs[0].Header()
	sig := &dns.RRSIG{Hdr: dns.RR_Header{Name: h.Name, Rrtype: dns.TypeRRSIG, Class: dns.ClassINET, Ttl: h.Ttl},
		TypeCovered: h.Rrtype, Algorithm: dns.ECDSAP256SHA256, Labels: uint8(dns.CountLabel(h.Name)), OrigTtl: h.Ttl,
		Expiration: 2000000000, Inception: 1700000000, KeyTag: 4242, SignerName: "secure.example.", Signature: "AAAA"}
	return append(rrs[:len(rrs):len(rrs)], sig)
}
