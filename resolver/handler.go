package resolver

import (
	"context"
	"net/netip"
	"strings"

	"github.com/miekg/dns"
)

// Request is one query as the chain sees it.
type Request struct {
	Msg *dns.Msg
	// Name is the question's name in lower case; Type and Class its type and class.
	Name  string
	Type  uint16
	Class uint16
	// Client is the address the query came from.
	Client netip.AddrPort
	// TCP is true when the query came over TCP.
	TCP bool
}

// NewRequest wraps a message with exactly one question.
func NewRequest(m *dns.Msg, client netip.AddrPort, tcp bool) *Request {
	q := m.Question[0]
	return &Request{Msg: m, Name: lower(q.Name), Type: q.Qtype, Class: q.Qclass, Client: client, TCP: tcp}
}

// QName is the question's name as the client spelled it.
func (r *Request) QName() string { return r.Msg.Question[0].Name }

// lower returns s in lower case without allocating when it already is.
func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// Handler answers a query, or passes it on. The reply it returns is sent as it
// is; a nil reply with a nil error means "not mine" and reaches the end of the
// chain. An error becomes SERVFAIL.
//
// Replies may share record slices with indexes and caches: a handler that
// reorders or edits a reply's sections copies them first.
type Handler interface {
	Resolve(ctx context.Context, req *Request) (*dns.Msg, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) (*dns.Msg, error)

// Resolve calls f.
func (f HandlerFunc) Resolve(ctx context.Context, req *Request) (*dns.Msg, error) { return f(ctx, req) }

// Reply starts a reply to req with the given rcode.
func Reply(req *Request, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(req.Msg, rcode)
	return m
}

// Refused ends a chain: a name no handler serves is refused.
var Refused Handler = HandlerFunc(func(_ context.Context, req *Request) (*dns.Msg, error) {
	return Reply(req, dns.RcodeRefused), nil
})

// MatchZone returns the longest zone that contains name, or "" if none does.
// Both name and zones are lower case and fully qualified.
func MatchZone(name string, zones []string) string {
	best := ""
	for _, z := range zones {
		if len(z) > len(best) && InZone(name, z) {
			best = z
		}
	}
	return best
}

// InZone reports whether name is zone or below it; both lower case and fully
// qualified.
func InZone(name, zone string) bool {
	if zone == "." {
		return true
	}
	if !strings.HasSuffix(name, zone) {
		return false
	}
	return len(name) == len(zone) || name[len(name)-len(zone)-1] == '.'
}
