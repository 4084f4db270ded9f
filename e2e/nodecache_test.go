package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"sigs.k8s.io/yaml"

	"github.com/clusterdns/clusterdns/e2e/netns"
)

// TestNodecacheNodeSide runs clusterdns nodecache with the stock Corefile
// from deploy/nodecache on a node namespace and asks it from a pod
// namespace, for each rule set: the pod is answered on 169.254.20.10 and
// on the kube-dns ClusterIP over UDP and TCP, none of those queries leaves
// a conntrack entry on the node (while a control flow does), a deleted
// address and rule come back, after SIGKILL the pod is answered through the
// Service's DNAT (kube-proxy's part is one nft rule here) until a new cache
// takes over, and SIGTERM removes the link and the rules.
func TestNodecacheNodeSide(t *testing.T) {
	netns.Require(t, "conntrack", "nft", "iptables", "iptables-restore")
	bin := clusterdnsBinary(t)
	for _, rules := range []string{"iptables", "nftables"} {
		t.Run(rules, func(t *testing.T) { testNodecacheNodeSide(t, bin, rules) })
	}
}

func testNodecacheNodeSide(t *testing.T, bin, rules string) {
	node, pod := netns.New(t, "ncnode"), netns.New(t, "ncpod")
	netns.Veth(t, node, "vpod", pod, "eth0")
	node.MustRun("ip", "addr", "add", "10.1.0.1/24", "dev", "vpod")
	pod.MustRun("ip", "addr", "add", "10.1.0.2/24", "dev", "eth0")
	pod.MustRun("ip", "route", "add", "default", "via", "10.1.0.1")
	// Conntrack only runs in a namespace whose rules need it: this table
	// makes it track everything, as kube-proxy's rules do on a real node.
	node.MustRun("nft", "add table inet ctcontrol; add chain inet ctcontrol in { type filter hook input priority 0; ct state established accept; }")

	// The cluster DNS behind kube-dns-upstream: TCP only, in the node
	// namespace, so a cache miss forwarded over UDP would go unanswered.
	var ln net.Listener
	if err := node.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	upstream := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == dns.TypeA && strings.HasSuffix(q.Name, ".svc.cluster.local.") {
			rr, _ := dns.NewRR(q.Name + " 30 IN A 10.0.0.7")
			m.Answer = append(m.Answer, rr)
		} else {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = upstream.ActivateAndServe() }()
	t.Cleanup(func() { _ = upstream.Shutdown() })

	// The kube-dns pods behind kube-proxy's DNAT of the ClusterIP: a UDP
	// server on the node's own address that answers with another address,
	// so the test sees who answered.
	var clusterPC net.PacketConn
	if err := node.Do(func() error {
		var err error
		clusterPC, err = net.ListenPacket("udp", "10.1.0.1:5300")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// As large a receive buffer as the real server's: a test process
	// descheduled for a moment must not drop the queries of a restart.
	forceReadBuffer(clusterPC.(*net.UDPConn))
	clusterDNS := &dns.Server{PacketConn: clusterPC, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		rr, _ := dns.NewRR(r.Question[0].Name + " 30 IN A 10.0.0.8")
		m.Answer = append(m.Answer, rr)
		_ = w.WriteMsg(m)
	})}
	go func() { _ = clusterDNS.ActivateAndServe() }()
	t.Cleanup(func() { _ = clusterDNS.Shutdown() })
	node.MustRun("nft", "add table ip kubeproxy; add chain ip kubeproxy pre { type nat hook prerouting priority -100; }; add rule ip kubeproxy pre ip daddr 10.96.0.10 udp dport 53 dnat to 10.1.0.1:5300")

	dir := t.TempDir()
	base := writeFile(t, dir, "Corefile.base", stockNodecacheCorefile(t))
	resolv := writeFile(t, dir, "resolv.conf", "nameserver 127.0.0.1\n")
	conf := filepath.Join(dir, "Corefile")
	startCache := func() *netns.Process {
		return node.Start("env", "KUBE_DNS_UPSTREAM_SERVICE_HOST="+ln.Addr().String(), bin, "nodecache",
			"-localip", "169.254.20.10,10.96.0.10", "-basecorefile", base, "-conf", conf,
			"-upstreamsvc", "kube-dns-upstream", "-resolv-conf", resolv, "-rules", rules, "-syncinterval", "1")
	}
	cache := startCache()

	name := "web.default.svc.cluster.local."
	ask := func(server, network string) (*dns.Msg, error) {
		var m *dns.Msg
		err := pod.Do(func() error {
			c := &dns.Client{Net: network, Timeout: time.Second}
			q := new(dns.Msg)
			q.SetQuestion(name, dns.TypeA)
			var err error
			m, _, err = c.Exchange(q, server)
			return err
		})
		return m, err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		m, err := ask("169.254.20.10:53", "udp")
		if err == nil && len(m.Answer) == 1 {
			break
		}
		if exited, _ := cache.Exited(); exited || time.Now().After(deadline) {
			t.Fatalf("the node cache does not answer on 169.254.20.10 (%v, %v):\n%s", m, err, cache.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	node.MustRun("conntrack", "-F")
	for _, server := range []string{"169.254.20.10:53", "10.96.0.10:53"} {
		for _, network := range []string{"udp", "tcp"} {
			m, err := ask(server, network)
			if err != nil || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "10.0.0.7" {
				t.Errorf("%s %s: %v, %v", network, server, m, err)
			}
		}
	}
	// The control: a flow to the node's own address is tracked.
	if err := pod.Do(func() error {
		c, err := net.Dial("udp", "10.1.0.1:9")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("x"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var table string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out, _ := node.Run(t.Context(), "conntrack", "-L")
		if table = string(out); strings.Contains(table, "dport=9 ") {
			break
		}
	}
	if !strings.Contains(table, "dport=9 ") {
		t.Fatalf("the control flow is not in conntrack, so its absence proves nothing:\n%s", table)
	}
	for _, ip := range []string{"169.254.20.10", "10.96.0.10"} {
		if strings.Contains(table, "dst="+ip) || strings.Contains(table, "src="+ip) {
			t.Errorf("conntrack has an entry for %s:\n%s", ip, table)
		}
	}
	if link := node.MustRun("ip", "-d", "link", "show", "nodelocaldns"); !strings.Contains(link, "dummy") && !strings.Contains(link, "ifb") {
		t.Errorf("nodelocaldns is neither dummy nor ifb:\n%s", link)
	}

	// Drift is repaired within a few -syncinterval periods: someone deletes
	// the address and the NOTRACK rules, the agent puts them back.
	node.MustRun("ip", "addr", "del", "169.254.20.10/32", "dev", "nodelocaldns")
	if rules == "nftables" {
		node.MustRun("nft", "delete", "table", "inet", "clusterdns-nodecache")
	} else {
		node.MustRun("iptables", "-t", "raw", "-D", "PREROUTING", "-j", "CLUSTERDNS-NODECACHE-PRE")
	}
	repaired := func() bool {
		addrs, _ := node.Run(t.Context(), "ip", "addr", "show", "nodelocaldns")
		var rs []byte
		if rules == "nftables" {
			rs, _ = node.Run(t.Context(), "nft", "list", "table", "inet", "clusterdns-nodecache")
		} else {
			rs, _ = node.Run(t.Context(), "iptables", "-t", "raw", "-S", "PREROUTING")
		}
		return strings.Contains(string(addrs), "169.254.20.10/32") && (strings.Contains(string(rs), "notrack") || strings.Contains(string(rs), "CLUSTERDNS-NODECACHE-PRE"))
	}
	for deadline := time.Now().Add(10 * time.Second); !repaired(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the deleted address or rules were not put back:\n%s", cache.Output())
		}
	}
	if m, err := ask("169.254.20.10:53", "udp"); err != nil || len(m.Answer) != 1 {
		t.Errorf("after repair: %v, %v", m, err)
	}

	// SIGKILL leaves the link and the rules behind, as an OOM kill does; the
	// NOTRACK follows the cache's socket, so the pod's next queries to the
	// ClusterIP are tracked and DNATed to the cluster DNS. A new cache takes
	// the queries back as soon as it binds.
	answeredBy := func(want string, limit time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			m, err := ask("10.96.0.10:53", "udp")
			if err == nil && len(m.Answer) == 1 && m.Answer[0].(*dns.A).A.String() == want {
				return time.Since(start)
			}
			if time.Since(start) > limit {
				t.Fatalf("10.96.0.10 is not answered with %s after %v (last %v, %v):\n%s", want, limit, m, err, cache.Output())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	_ = syscall.Kill(-cache.Cmd.Process.Pid, syscall.SIGKILL)
	_, _ = cache.Exited()
	_ = cache.Stop() // waits for the killed process
	t.Logf("after SIGKILL the cluster DNS answered in %v", answeredBy("10.0.0.8", 10*time.Second))
	cache = startCache()
	t.Logf("a new cache took over in %v", answeredBy("10.0.0.7", 15*time.Second))

	// A restart under load loses no query: SIGTERM takes the rules away
	// first, so new queries take the Service path while the queued ones are
	// answered, and the new cache takes over when it binds.
	load := startLoad(t, pod, "10.96.0.10:53", name, 10000, 2000)
	time.Sleep(1500 * time.Millisecond)
	if err := cache.Stop(); err != nil {
		t.Errorf("nodecache exited with %v:\n%s", err, cache.Output())
	}
	cache = startCache()
	sent, answered := load()
	t.Logf("restart under load: %d queries sent, %d answered", sent, answered)
	if sent != 10000 || answered != sent {
		t.Errorf("restart under load: %d of %d queries sent, %d answered", sent, 10000, answered)
		for _, ns := range []*netns.NS{pod, node} {
			out, _ := ns.Run(t.Context(), "nstat", "-asz", "UdpInErrors", "UdpRcvbufErrors", "UdpNoPorts")
			t.Logf("%s:\n%s", ns.Name, out)
		}
	}

	if err := cache.Stop(); err != nil {
		t.Errorf("nodecache exited with %v:\n%s", err, cache.Output())
	}
	if out, err := node.Run(t.Context(), "ip", "link", "show", "nodelocaldns"); err == nil {
		t.Errorf("SIGTERM left the link behind:\n%s", out)
	}
	nft := node.MustRun("nft", "list", "ruleset")
	if strings.Contains(nft, "clusterdns-nodecache") || strings.Contains(nft, "CLUSTERDNS-NODECACHE") {
		t.Errorf("SIGTERM left rules behind:\n%s", nft)
	}
}

// forceReadBuffer gives a test's UDP socket a 4 MiB receive buffer, past
// rmem_max (the tests run as root).
func forceReadBuffer(c *net.UDPConn) {
	if raw, err := c.SyscallConn(); err == nil {
		_ = raw.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, 4<<20)
		})
	}
}

func stockNodecacheCorefile(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(), "deploy", "nodecache", "configmap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct{ Data map[string]string }
	if err := yaml.Unmarshal(data, &cm); err != nil {
		t.Fatal(err)
	}
	return cm.Data["Corefile"]
}

// startLoad sends n queries for name to server from one UDP socket in ns,
// at qps, and returns a function that waits for the end (the last answers
// get 2 s) and reports how many were sent and answered. The loop is bounded
// by n and by n/qps+10 s.
func startLoad(t *testing.T, ns *netns.NS, server, name string, n, qps int) func() (sent, answered int) {
	t.Helper()
	var conn net.Conn
	if err := ns.Do(func() error {
		var err error
		conn, err = net.Dial("udp", server)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// A receive buffer for a second of answers: a test process descheduled
	// for a moment on a busy machine must not drop answers itself.
	forceReadBuffer(conn.(*net.UDPConn))
	seen := make([]bool, n)
	recvDone := make(chan int)
	go func() {
		got := 0
		buf := make([]byte, 1500)
		m := new(dns.Msg)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				recvDone <- got
				return
			}
			if m.Unpack(buf[:k]) != nil || int(m.Id) >= n || len(m.Answer) != 1 || seen[m.Id] {
				continue
			}
			seen[m.Id] = true
			got++
		}
	}()
	sendDone := make(chan int)
	go func() {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		start := time.Now()
		deadline := start.Add(time.Duration(n/qps)*time.Second + 10*time.Second)
		sent := 0
		for sent < n && time.Now().Before(deadline) {
			// Pace by the clock: as many as are due by now.
			due := min(n, int(time.Since(start).Seconds()*float64(qps))+1)
			for ; sent < due; sent++ {
				q.Id = uint16(sent)
				b, _ := q.Pack()
				_, _ = conn.Write(b)
			}
			time.Sleep(time.Millisecond)
		}
		sendDone <- sent
	}()
	return func() (int, int) {
		sent := <-sendDone
		time.Sleep(2 * time.Second)
		conn.Close()
		return sent, <-recvDone
	}
}
