// Command vmprobe is the static helper the e2e VM smoke test runs inside the
// VM. It programs the kernel the way a kube-proxy-like agent does (a dummy
// link holding virtual IPs, IPVS services in NAT mode) and plays the two ends
// of a TCP connection, so a shell script can check that a packet sent to a
// virtual IP reaches a pod in another network namespace and comes back.
//
// It must only ever run inside the VM: it changes the network configuration
// of the namespace it runs in.
//
//	vmprobe ipvs  -link kube-ipvs0 -vip 10.96.0.10 -port 80 -real 10.100.2.2:8080 [-real ...]
//	vmprobe serve -listen 10.100.2.2:8080 -name pod-a -for 60s
//	vmprobe dial  -addr 10.96.0.10:80 -timeout 20s
//	vmprobe spread -net udp -addr 10.96.0.10:53 -n 30
//	vmprobe dns -net tcp -addr 169.254.20.10:53 -name web.default.svc.cluster.local
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"
	"github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: vmprobe ipvs|serve|dial|spread|dns [flags]")
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "ipvs":
		err = runIPVS(args)
	case "serve":
		err = runServe(args)
	case "dial":
		err = runDial(args)
	case "spread":
		err = runSpread(args)
	case "dns":
		err = runDNS(args)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmprobe:", err)
		os.Exit(1)
	}
}

type addrList []netip.AddrPort

func (l *addrList) String() string { return fmt.Sprint(*l) }
func (l *addrList) Set(v string) error {
	ap, err := netip.ParseAddrPort(v)
	if err != nil {
		return err
	}
	*l = append(*l, ap)
	return nil
}

// runIPVS creates the dummy link with the virtual IP and an IPVS service with
// the given real servers, then reads the service back from the kernel and
// prints it, so the script shows what the kernel holds rather than what was
// asked for.
func runIPVS(args []string) error {
	fs := flag.NewFlagSet("ipvs", flag.ExitOnError)
	linkName := fs.String("link", "kube-ipvs0", "dummy link that holds the virtual IP")
	vip := fs.String("vip", "", "virtual IP")
	port := fs.Uint("port", 80, "virtual port (TCP)")
	scheduler := fs.String("scheduler", "rr", "IPVS scheduler")
	var reals addrList
	fs.Var(&reals, "real", "real server ip:port (repeatable)")
	fs.Parse(args)
	addr, err := netip.ParseAddr(*vip)
	if err != nil || !addr.Is4() {
		return fmt.Errorf("ipvs: -vip %q: need an IPv4 address", *vip)
	}

	link := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: *linkName}}
	if err := netlink.LinkAdd(link); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("ipvs: adding link %s: %w", *linkName, err)
	}
	created, err := netlink.LinkByName(*linkName)
	if err != nil {
		return fmt.Errorf("ipvs: finding link %s: %w", *linkName, err)
	}
	if err := netlink.LinkSetUp(created); err != nil {
		return fmt.Errorf("ipvs: setting %s up: %w", *linkName, err)
	}
	nlAddr := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrReplace(created, nlAddr); err != nil {
		return fmt.Errorf("ipvs: adding %s to %s: %w", addr, *linkName, err)
	}

	handle, err := ipvs.New("")
	if err != nil {
		return fmt.Errorf("ipvs: opening netlink: %w", err)
	}
	defer handle.Close()
	svc := &ipvs.Service{
		AddressFamily: syscall.AF_INET,
		Protocol:      syscall.IPPROTO_TCP,
		Address:       addr.AsSlice(),
		Port:          uint16(*port),
		SchedName:     *scheduler,
		Netmask:       0xffffffff,
	}
	if err := handle.NewService(svc); err != nil {
		return fmt.Errorf("ipvs: adding service %s:%d: %w", addr, *port, err)
	}
	for _, real := range reals {
		dst := &ipvs.Destination{
			AddressFamily:   syscall.AF_INET,
			Address:         real.Addr().AsSlice(),
			Port:            real.Port(),
			Weight:          1,
			ConnectionFlags: ipvs.ConnectionFlagMasq,
		}
		if err := handle.NewDestination(svc, dst); err != nil {
			return fmt.Errorf("ipvs: adding real server %s: %w", real, err)
		}
	}

	services, err := handle.GetServices()
	if err != nil {
		return fmt.Errorf("ipvs: listing services: %w", err)
	}
	for _, s := range services {
		fmt.Printf("ipvs service %s:%d %s\n", s.Address, s.Port, s.SchedName)
		dsts, err := handle.GetDestinations(s)
		if err != nil {
			return fmt.Errorf("ipvs: listing real servers of %s:%d: %w", s.Address, s.Port, err)
		}
		for _, d := range dsts {
			fmt.Printf("ipvs real %s:%d weight %d\n", d.Address, d.Port, d.Weight)
		}
	}
	return nil
}

// runServe answers every TCP connection with one line naming this server and
// the client address it saw, until the lifetime ends.
func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "", "address to listen on")
	name := fs.String("name", "server", "name to put in replies")
	lifetime := fs.Duration("for", time.Minute, "stop after this long")
	fs.Parse(args)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	time.AfterFunc(*lifetime, func() { ln.Close() })
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("serve: %w", err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "%s saw %s\n", *name, conn.RemoteAddr())
		conn.Close()
	}
}

// runDial connects to an address, retrying while nothing listens yet, and
// prints the line the server sent. With -expect-refused it instead succeeds
// only when the connection is refused.
func runDial(args []string) error {
	fs := flag.NewFlagSet("dial", flag.ExitOnError)
	addr := fs.String("addr", "", "address to connect to")
	timeout := fs.Duration("timeout", 20*time.Second, "give up after this long")
	expectRefused := fs.Bool("expect-refused", false, "succeed only if the connection is refused")
	fs.Parse(args)

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var dialer net.Dialer
	for {
		conn, err := dialer.DialContext(ctx, "tcp", *addr)
		if *expectRefused {
			if errors.Is(err, syscall.ECONNREFUSED) {
				fmt.Printf("dial %s: refused\n", *addr)
				return nil
			}
			if err == nil {
				conn.Close()
			}
			return fmt.Errorf("dial %s: want refused, got %v", *addr, err)
		}
		if err == nil {
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				return fmt.Errorf("dial %s: reading reply: %w", *addr, err)
			}
			fmt.Printf("dial %s: reply: %s\n", *addr, strings.TrimSpace(line))
			return nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("dial %s: %w", *addr, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dial %s: still refused after %v", *addr, *timeout)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// runSpread makes n exchanges with an address, each on a new connection (TCP)
// or a new socket and so a new source port (UDP), and prints how many each
// server answered, sorted by name, on one line:
//
//	spread tcp 10.96.0.10:80: 10.100.1.2=10 10.100.2.2=10 10.100.3.2=10
//
// An exchange that fails counts as "error"; every exchange is bounded.
func runSpread(args []string) error {
	fs := flag.NewFlagSet("spread", flag.ExitOnError)
	network := fs.String("net", "tcp", "tcp or udp")
	addr := fs.String("addr", "", "address to reach")
	n := fs.Int("n", 30, "number of exchanges")
	timeout := fs.Duration("timeout", 3*time.Second, "bound on each exchange")
	fs.Parse(args)
	counts := map[string]int{}
	for range *n {
		who, err := exchange(*network, *addr, *timeout)
		if err != nil {
			who = "error"
			fmt.Fprintf(os.Stderr, "spread %s %s: %v\n", *network, *addr, err)
		}
		counts[who]++
	}
	names := make([]string, 0, len(counts))
	for name := range counts {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Printf("spread %s %s:", *network, *addr)
	for _, name := range names {
		fmt.Printf(" %s=%d", name, counts[name])
	}
	fmt.Println()
	return nil
}

// exchange sends one request and returns the first word of the reply.
func exchange(network, addr string, timeout time.Duration) (string, error) {
	conn, err := net.DialTimeout(network, addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if network == "udp" {
		if _, err := conn.Write([]byte("who\n")); err != nil {
			return "", err
		}
	}
	buf := make([]byte, 512)
	k, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	fields := strings.Fields(string(buf[:k]))
	if len(fields) == 0 {
		return "", errors.New("empty reply")
	}
	return fields[0], nil
}

// runDNS asks one A question, retrying until -timeout, and prints the
// answers on one line:
//
//	dns udp 169.254.20.10:53 web.default.svc.cluster.local.: A 10.96.0.80
func runDNS(args []string) error {
	fs := flag.NewFlagSet("dns", flag.ExitOnError)
	network := fs.String("net", "udp", "udp or tcp")
	addr := fs.String("addr", "", "server ip:port")
	name := fs.String("name", "", "name to ask for (A)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	fs.Parse(args)

	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(*name), dns.TypeA)
	c := &dns.Client{Net: *network, Timeout: time.Second}
	deadline := time.Now().Add(*timeout)
	for {
		m, _, err := c.Exchange(q, *addr)
		if err == nil {
			var out []string
			for _, rr := range m.Answer {
				if a, ok := rr.(*dns.A); ok {
					out = append(out, "A "+a.A.String())
				}
			}
			fmt.Printf("dns %s %s %s: %s %s\n", *network, *addr, q.Question[0].Name, dns.RcodeToString[m.Rcode], strings.Join(out, " "))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dns %s %s: %w", *network, *addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
