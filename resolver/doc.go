// Package resolver answers one DNS query. It holds the chain of handlers a
// Corefile server block configures (the cluster zone, forwarding, caching and
// the small ones around them) behind one interface, Handler, which takes a
// parsed query and returns the reply to send.
//
// Nothing here listens on a socket or reads a Corefile: the server package does
// both and hands each query to a chain built from this package's parts.
package resolver
