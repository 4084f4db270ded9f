// Command podserver is the workload of an end-to-end pod: it answers every
// TCP connection and every UDP datagram on its ports with its name (the pod's
// IP, by convention) and a newline, so a test can tell which pod a packet
// reached. With --peer the answer also carries the source address the pod
// saw ("NAME ADDRESS"), so a test can tell whether the client's address was
// kept or masqueraded. It stops by itself after --lifetime, so a test that dies cannot
// leave it running for long.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	name := flag.String("name", "", "what to answer (default: the host name)")
	tcpAddr := flag.String("tcp", ":80", "TCP address to serve; empty for none")
	udpAddr := flag.String("udp", ":5353", "UDP address to serve; empty for none")
	peer := flag.Bool("peer", false, "answer with the name and the source address seen, space-separated")
	lifetime := flag.Duration("lifetime", 10*time.Minute, "exit after this long")
	flag.Parse()
	if *name == "" {
		*name, _ = os.Hostname()
	}
	// answer is what to send to a client at from.
	answer := func(from net.Addr) []byte {
		if !*peer {
			return []byte(*name + "\n")
		}
		host, _, err := net.SplitHostPort(from.String())
		if err != nil {
			host = from.String()
		}
		return []byte(*name + " " + host + "\n")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *lifetime)
	defer cancel()

	if *tcpAddr != "" {
		ln, err := net.Listen("tcp", *tcpAddr)
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			<-ctx.Done()
			ln.Close()
		}()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_, _ = c.Write(answer(c.RemoteAddr()))
				c.Close()
			}
		}()
	}
	if *udpAddr != "" {
		pc, err := net.ListenPacket("udp", *udpAddr)
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			<-ctx.Done()
			pc.Close()
		}()
		go func() {
			buf := make([]byte, 2048)
			for {
				_, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(answer(from), from)
			}
		}()
	}
	fmt.Println("ready")
	<-ctx.Done()
}
