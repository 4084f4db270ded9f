// Command bareudp is the ceiling of the DNS benchmarks: it reads a UDP
// datagram and sends back a fixed-size reply built from it with no parsing
// beyond flipping the query into a response, so the time per query is only
// the kernel's and the Go runtime's. Nothing a DNS server on the same core
// does can cost less.
//
//	bareudp -listen 127.0.0.1:5300 -lifetime 10m
//
// It stops by itself after -lifetime, so a benchmark that dies cannot leave
// it running.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "UDP address to answer on (loopback)")
	lifetime := flag.Duration("lifetime", 30*time.Minute, "exit after this long")
	flag.Parse()
	if err := run(*listen, *lifetime); err != nil {
		fmt.Fprintln(os.Stderr, "bareudp:", err)
		os.Exit(1)
	}
}

func run(listen string, lifetime time.Duration) error {
	conn, err := net.ListenPacket("udp", listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", listen, err)
	}
	defer conn.Close()
	// The harness reads the address from the first line of output.
	fmt.Println(conn.LocalAddr())
	time.AfterFunc(lifetime, func() { conn.Close() })
	buf := make([]byte, 4096)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read: %w", err)
		}
		if n < 12 {
			continue
		}
		// Answer with the query itself marked as a response (QR and RA
		// set, RCODE 0): the same size as the question, which is what
		// dnsperf needs to match it by ID.
		buf[2] |= 0x80
		buf[3] = 0x80
		if _, err := conn.WriteTo(buf[:n], from); err != nil && errors.Is(err, net.ErrClosed) {
			return nil
		}
	}
}
