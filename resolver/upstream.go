package resolver

import (
	"context"
	"errors"

	"github.com/miekg/dns"
)

// maxLookupDepth bounds how often a query may re-enter a chain to resolve a
// name it depends on (an ExternalName's target, a search-path candidate), so
// that names pointing at each other cannot recurse without end.
const maxLookupDepth = 4

// ErrLookupDepth is returned when internal lookups nest too deep.
var ErrLookupDepth = errors.New("internal lookups nested too deep")

type lookupDepthKey struct{}

// Internal reports whether ctx belongs to a lookup the server made for itself
// rather than a client's query; such lookups are not counted as requests.
func Internal(ctx context.Context) bool { return ctx.Value(lookupDepthKey{}) != nil }

// Lookup resolves name through chain as if a client had asked, the way
// CoreDNS's upstream lookups re-enter the server: caches and forwarders on
// the chain apply. orig is the query that needs the answer; its client and
// DNSSEC OK bit carry over.
func Lookup(ctx context.Context, chain Handler, orig *Request, name string, qtype uint16) (*dns.Msg, error) {
	depth, _ := ctx.Value(lookupDepthKey{}).(int)
	if depth >= maxLookupDepth {
		return nil, ErrLookupDepth
	}
	ctx = context.WithValue(ctx, lookupDepthKey{}, depth+1)
	// The lookup's answerer is not the client query's answerer.
	ctx = WithResponder(ctx)
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	do := false
	if opt := orig.Msg.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	m.SetEdns0(dns.DefaultMsgSize, do)
	return chain.Resolve(ctx, NewRequest(m, orig.Client, orig.TCP))
}

// Counter is the part of a Prometheus counter the handlers use; a nil
// Counter field means "not measured".
type Counter interface{ Inc() }

// Gauge is the part of a Prometheus gauge the handlers use.
type Gauge interface{ Set(float64) }

// Responder records which handler produced a reply, for the responses
// metric's plugin label. It travels in the context so that handlers need no
// extra parameter.
type Responder struct {
	context.Context
	name string
}

type responderKey struct{}

// Value returns the Responder itself for its key, else asks the parent.
func (r *Responder) Value(key any) any {
	if key == (responderKey{}) {
		return r
	}
	return r.Context.Value(key)
}

// Name is the handler that answered, or "".
func (r *Responder) Name() string { return r.name }

// WithResponder returns a context in which handlers can name themselves as
// the one that answered; the Responder is that context, and reads the name.
func WithResponder(ctx context.Context) *Responder { return &Responder{Context: ctx} }

// Answered names the handler that produced the reply, if the context asks.
// The first handler to answer wins: an outer handler's later call does not
// overwrite an inner one.
func Answered(ctx context.Context, name string) {
	if r, ok := ctx.Value(responderKey{}).(*Responder); ok && r.name == "" {
		r.name = name
	}
}
