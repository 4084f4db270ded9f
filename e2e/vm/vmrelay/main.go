// Command vmrelay carries one connection between its standard input and
// output and a TCP address on the host's loopback. qemu starts one per
// connection the guest makes to its forwarded address (Spec.Forward), with
// the guest's side of the connection as stdin and stdout.
//
// It refuses any address that is not loopback, so a VM can never be carried
// beyond the host. It writes nothing but the relayed bytes to stdout and
// nothing to stderr, which qemu also connects to the guest.
//
//	vmrelay 127.0.0.1:6443
package main

import (
	"io"
	"net"
	"net/netip"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		os.Exit(2)
	}
	target, err := netip.ParseAddrPort(os.Args[1])
	if err != nil || !target.Addr().IsLoopback() {
		os.Exit(2)
	}
	up, err := net.DialTimeout("tcp", target.String(), 5*time.Second)
	if err != nil {
		os.Exit(1)
	}
	tcp := up.(*net.TCPConn)
	go func() {
		// The guest closing its side is passed on as a half close, so the
		// host side can still answer what was sent.
		_, _ = io.Copy(tcp, os.Stdin)
		_ = tcp.CloseWrite()
	}()
	// The host side closing ends the relay; qemu then closes the guest's.
	_, _ = io.Copy(os.Stdout, tcp)
}
