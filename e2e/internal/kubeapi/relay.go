package kubeapi

import (
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/clusterdns/clusterdns/e2e/netns"
)

// RelayKubeconfig lets a process in the namespace reach the API server: a
// listener on the namespace's loopback whose connections the test carries
// to the API server on the machine's loopback, so the namespace needs no
// link out. While the API server is down the relay refuses as it would. It
// writes, in dir, NAMESPACE.kubeconfig naming the relay (the API server's
// certificate is valid for 127.0.0.1 on any port) and returns its path.
// Everything stops when the test ends.
func (a *APIServer) RelayKubeconfig(t testing.TB, ns *netns.NS, dir string) string {
	t.Helper()
	return RelayKubeconfigTo(t, ns, dir, Remote{Addr: strings.TrimPrefix(a.URL, "https://"), CAFile: a.CAFile, Token: a.AdminToken()})
}

// Remote is an API server as a process elsewhere reaches it: from inside
// the e2e VM, through the VM's one forwarded port.
type Remote struct {
	// Addr is the host:port to dial.
	Addr string
	// CAFile verifies the server's certificate; ServerName, when set, is
	// the name it is checked against (the e2e API server's certificate is
	// for 127.0.0.1, whatever address reaches it).
	CAFile, ServerName string
	// Token authenticates the agent.
	Token string
}

// RelayKubeconfigTo is RelayKubeconfig for an API server this process
// reaches at r.Addr.
func RelayKubeconfigTo(t testing.TB, ns *netns.NS, dir string, r Remote) string {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatalf("relay listener in %s: %v", ns.Name, err)
	}
	target := r.Addr
	var wg sync.WaitGroup
	var mu sync.Mutex // protects conns
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				down.Close() // the API server is down: so is the relay
				continue
			}
			mu.Lock()
			conns = append(conns, down, up)
			mu.Unlock()
			for _, pair := range [][2]net.Conn{{up, down}, {down, up}} {
				wg.Go(func() {
					// An error only means one side went away.
					_, _ = io.Copy(pair[0], pair[1])
					pair[0].Close()
					pair[1].Close()
				})
			}
		}
	})
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: "https://" + ln.Addr().String(), CertificateAuthority: r.CAFile, TLSServerName: r.ServerName}
	cfg.AuthInfos["e2e"] = &clientcmdapi.AuthInfo{Token: r.Token}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "e2e"}
	cfg.CurrentContext = "e2e"
	path := filepath.Join(dir, ns.Name+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
