// Package server runs clusterdns's DNS service: it reads a Corefile (CoreDNS's
// syntax), builds one resolver chain per server block, listens on UDP and TCP,
// and serves the HTTP side (health, readiness, metrics). It also watches the
// Corefile and swaps in a new configuration without dropping queries.
//
// Answering a query is the resolver package's job; loading the cluster is the
// zone package's. This package wires them to sockets and to the config file.
package server
