// Package kubeapi runs a real etcd and kube-apiserver on loopback for
// end-to-end tests, so code that talks to Kubernetes is tested against the
// server it will meet in a cluster rather than a fake.
//
// There is no controller manager, scheduler or kubelet: tests create the
// Services, EndpointSlices and Pods they need themselves, and nothing else
// changes them. The harness listens on 127.0.0.1 only and removes everything it
// started when the test ends. It needs etcd in PATH (Debian: apt-get install
// etcd-server) and builds kube-apiserver with e2e/tools/build.sh when the
// binary is not in the cache yet.
package kubeapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/clusterdns/clusterdns/internal/testenv"
)

// Timeouts bounding every wait of the harness.
const (
	etcdReadyTimeout      = 30 * time.Second
	apiserverReadyTimeout = 90 * time.Second
	stopTimeout           = 15 * time.Second
	buildTimeout          = 20 * time.Minute
)

// ServiceClusterIPRange is the ranges the API server allocates ClusterIPs
// from: IPv4 first, the primary family, which a Service that asks for no
// family gets; the IPv6 one (unique local) serves dual-stack Services. No
// traffic is ever sent to them by the API server itself.
const ServiceClusterIPRange = "10.96.0.0/12,fd00:10:96::/112"

// adminUser is the static token user; system:masters bypasses RBAC.
const adminUser = "e2e-admin"

// Options adjust the API server a test starts.
type Options struct {
	// ExtraArgs are appended to kube-apiserver's command line; a later flag
	// wins, so they can override the harness's defaults (for example
	// --max-requests-inflight for a bulk load).
	ExtraArgs []string
}

// APIServer is a running etcd and kube-apiserver pair.
type APIServer struct {
	// URL is the API server's https address on 127.0.0.1.
	URL string
	// AdminConfig authenticates as a member of system:masters with a token.
	AdminConfig *rest.Config
	// CAFile verifies the API server's serving certificate.
	CAFile string
	// AdminCertFile and AdminKeyFile are a client certificate for the same
	// admin rights, for code that authenticates with TLS.
	AdminCertFile, AdminKeyFile string
	// Dir holds certificates, keys and logs; it is removed at cleanup.
	Dir string
	// ReadyAfter is how long etcd and kube-apiserver took from start to ready.
	ReadyAfter time.Duration

	adminToken string
	ca         *authority
	binary     string
	args       []string
	etcdDir    string

	mu        sync.Mutex // protects the processes
	etcd      *process
	apiserver *process
	stopOnce  sync.Once
}

// Start runs etcd and kube-apiserver with default options, waits until the API
// server is ready, and stops both when the test ends. Their logs are printed
// if the test failed. Under -short the test is skipped (internal/testenv).
func Start(t testing.TB) *APIServer {
	t.Helper()
	return StartWithOptions(t, Options{})
}

// StartWithOptions is Start with options.
func StartWithOptions(t testing.TB, opts Options) *APIServer {
	t.Helper()
	// kube-apiserver is built below when it is not in the cache yet.
	testenv.Require(t, testenv.Tools("etcd"))
	binary, err := apiserverBinary()
	if err != nil {
		t.Fatalf("kubeapi: %v", err)
	}
	s, err := start(t.TempDir(), binary, opts)
	if s != nil {
		t.Cleanup(func() {
			if t.Failed() {
				s.logTails(t)
			}
			s.Stop()
		})
	}
	if err != nil {
		t.Fatalf("kubeapi: %v", err)
	}
	return s
}

func start(dir, binary string, opts Options) (*APIServer, error) {
	began := time.Now()
	s := &APIServer{Dir: dir, binary: binary, adminToken: randomToken()}
	// etcd fsyncs every write; on tmpfs that costs nothing, which matters for
	// tests that load thousands of objects.
	etcdParent := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		etcdParent = "/dev/shm"
	}
	etcdDir, err := os.MkdirTemp(etcdParent, "clusterdns-etcd-")
	if err != nil {
		return nil, fmt.Errorf("etcd data dir: %w", err)
	}
	s.etcdDir = etcdDir

	if err := s.writeCredentials(); err != nil {
		s.Stop()
		return s, err
	}
	ports, err := freePorts(3)
	if err != nil {
		s.Stop()
		return s, err
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]

	if err := s.startEtcd(etcdClient, etcdPeer); err != nil {
		s.Stop()
		return s, err
	}
	s.URL = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	s.AdminConfig = s.ConfigForToken(s.adminToken)
	s.args = append([]string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--etcd-servers=http://127.0.0.1:" + strconv.Itoa(etcdClient),
		"--cert-dir=" + filepath.Join(dir, "cert-dir"),
		"--tls-cert-file=" + filepath.Join(dir, "serving.crt"),
		"--tls-private-key-file=" + filepath.Join(dir, "serving.key"),
		"--client-ca-file=" + s.CAFile,
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=" + ServiceClusterIPRange,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		// No controller manager runs, so nothing would create the "default"
		// ServiceAccount that this admission plugin insists on for Pods.
		"--disable-admission-plugins=ServiceAccount",
		// The loopback address may not appear in an EndpointSlice, so the
		// "kubernetes" Service gets no endpoints here.
		"--endpoint-reconciler-type=none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	}, opts.ExtraArgs...)
	if err := s.startAPIServer(); err != nil {
		s.Stop()
		return s, err
	}
	if err := s.waitKubernetesService(); err != nil {
		s.Stop()
		return s, err
	}
	s.ReadyAfter = time.Since(began)
	writeLog(dir, "harness.log", fmt.Sprintf("etcd and kube-apiserver ready in %s\n", s.ReadyAfter.Round(time.Millisecond)))
	return s, nil
}

// writeCredentials creates the CA, certificates, token file and service
// account key the API server is started with.
func (s *APIServer) writeCredentials() error {
	ca, err := newAuthority()
	if err != nil {
		return err
	}
	s.ca = ca
	s.CAFile = filepath.Join(s.Dir, "ca.crt")
	files := map[string][]byte{"ca.crt": ca.certPEM}
	servingCert, servingKey, err := ca.issue("kube-apiserver", nil,
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, []string{"localhost", "kubernetes.default.svc"})
	if err != nil {
		return err
	}
	files["serving.crt"], files["serving.key"] = servingCert, servingKey
	adminCert, adminKey, err := ca.issue(adminUser, []string{"system:masters"}, nil, nil)
	if err != nil {
		return err
	}
	files["admin.crt"], files["admin.key"] = adminCert, adminKey
	s.AdminCertFile, s.AdminKeyFile = filepath.Join(s.Dir, "admin.crt"), filepath.Join(s.Dir, "admin.key")
	// token,user,uid,"group1,group2"
	files["tokens.csv"] = []byte(fmt.Sprintf("%s,%s,%s,\"system:masters\"\n", s.adminToken, adminUser, adminUser))
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(s.Dir, name), data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return writeServiceAccountKey(filepath.Join(s.Dir, "sa.key"))
}

func (s *APIServer) startEtcd(clientPort, peerPort int) error {
	client := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peer := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	p, err := startProcess("etcd", filepath.Join(s.Dir, "etcd.log"), "etcd",
		"--name=e2e",
		"--data-dir="+s.etcdDir,
		"--listen-client-urls="+client,
		"--advertise-client-urls="+client,
		"--listen-peer-urls="+peer,
		"--initial-advertise-peer-urls="+peer,
		"--initial-cluster=e2e="+peer,
		"--initial-cluster-state=new",
		"--log-level=warn",
	)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.etcd = p
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), etcdReadyTimeout)
	defer cancel()
	return waitUntil(ctx, p, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, client+"/health", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		_, _ = body.ReadFrom(resp.Body)
		if !strings.Contains(body.String(), `"health":"true"`) {
			return fmt.Errorf("etcd health: %s", body.String())
		}
		return nil
	})
}

func (s *APIServer) startAPIServer() error {
	p, err := startProcess("kube-apiserver", filepath.Join(s.Dir, "kube-apiserver.log"), s.binary, s.args...)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.apiserver = p
	s.mu.Unlock()
	client, err := kubernetes.NewForConfig(s.AdminConfig)
	if err != nil {
		return fmt.Errorf("client for readyz: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), apiserverReadyTimeout)
	defer cancel()
	return waitUntil(ctx, p, func(ctx context.Context) error {
		_, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err
	})
}

// waitKubernetesService waits for the default/kubernetes Service, which the
// API server creates shortly after it reports ready; tests then start from
// the same objects every time.
func (s *APIServer) waitKubernetesService() error {
	client, err := kubernetes.NewForConfig(s.AdminConfig)
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), apiserverReadyTimeout)
	defer cancel()
	s.mu.Lock()
	p := s.apiserver
	s.mu.Unlock()
	return waitUntil(ctx, p, func(ctx context.Context) error {
		_, err := client.CoreV1().Services(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
		return err
	})
}

// Restart stops kube-apiserver and starts it again on the same port with the
// same etcd, so the stored objects survive and clients see their watches break
// and their requests fail for a while.
func (s *APIServer) Restart() error {
	if err := s.StopAPIServer(); err != nil {
		return err
	}
	return s.StartAPIServer()
}

// StopAPIServer stops kube-apiserver and leaves etcd running: clients find
// the port closed until StartAPIServer, as in a control-plane outage.
func (s *APIServer) StopAPIServer() error {
	s.mu.Lock()
	old := s.apiserver
	s.apiserver = nil
	s.mu.Unlock()
	if old == nil {
		return nil
	}
	return old.stop(syscall.SIGTERM)
}

// StartAPIServer starts kube-apiserver again on the same port with the same
// etcd, after StopAPIServer, and waits until it is ready.
func (s *APIServer) StartAPIServer() error {
	writeLog(s.Dir, "kube-apiserver.log", "\n===== restarted by the test =====\n")
	return s.startAPIServer()
}

// Stop kills kube-apiserver and etcd and removes etcd's data. It is safe to
// call more than once; Start registers it as a cleanup.
func (s *APIServer) Stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		procs := []*process{s.apiserver, s.etcd}
		s.mu.Unlock()
		for _, p := range procs {
			if p != nil {
				// Everything is thrown away, so there is nothing to shut
				// down gracefully.
				_ = p.stop(syscall.SIGKILL)
			}
		}
		if s.etcdDir != "" {
			_ = os.RemoveAll(s.etcdDir)
		}
	})
}

// ConfigForToken returns a client configuration that authenticates with a
// bearer token.
func (s *APIServer) ConfigForToken(token string) *rest.Config {
	return &rest.Config{
		Host:            s.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: s.CAFile},
		// Bulk loads in tests should not be throttled by the client.
		QPS:   1000,
		Burst: 2000,
	}
}

// AdminToken is the bearer token of the admin user.
func (s *APIServer) AdminToken() string { return s.adminToken }

// TokenFor returns a token for a ServiceAccount through the TokenRequest API,
// creating the namespace and the ServiceAccount first if they do not exist, so
// a test can run a binary with exactly that account's RBAC rights.
func (s *APIServer) TokenFor(ctx context.Context, namespace, name string) (string, error) {
	client, err := kubernetes.NewForConfig(s.AdminConfig)
	if err != nil {
		return "", fmt.Errorf("admin client: %w", err)
	}
	_, err = client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	_, err = client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create service account %s/%s: %w", namespace, name, err)
	}
	expiry := int64(time.Hour / time.Second)
	tr, err := client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}},
		metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// ClientCert issues a client certificate for a user and groups, signed by the
// CA the API server trusts, and returns the paths of its files.
func (s *APIServer) ClientCert(user string, groups ...string) (certFile, keyFile string, err error) {
	certPEM, keyPEM, err := s.ca.issue(user, groups, nil, nil)
	if err != nil {
		return "", "", err
	}
	base := filepath.Join(s.Dir, "client-"+sanitize(user)+"-"+randomToken()[:8])
	certFile, keyFile = base+".crt", base+".key"
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("write client cert: %w", err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("write client key: %w", err)
	}
	return certFile, keyFile, nil
}

// WriteKubeconfig writes a kubeconfig file with one context, "e2e", that
// reaches this API server with the token (the admin token when empty), for
// handing to a child process.
func (s *APIServer) WriteKubeconfig(path, token string) error {
	if token == "" {
		token = s.adminToken
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: s.URL, CertificateAuthority: s.CAFile}
	cfg.AuthInfos["e2e"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "e2e"}
	cfg.CurrentContext = "e2e"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// logTails prints the end of every log the harness wrote.
func (s *APIServer) logTails(t testing.TB) {
	for _, name := range []string{"harness.log", "etcd.log", "kube-apiserver.log"} {
		data, err := os.ReadFile(filepath.Join(s.Dir, name))
		if err != nil {
			continue
		}
		const keep = 16 << 10
		if len(data) > keep {
			data = data[len(data)-keep:]
		}
		t.Logf("----- last of %s -----\n%s", name, data)
	}
}

// process is a child process whose output goes to a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // exit status, valid after done
}

func startProcess(name, logPath, binary string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd := exec.Command(binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// If the test binary dies, take the child with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends the process a signal, kills it if it has not ended within
// stopTimeout, and waits for it to be gone.
func (p *process) stop(sig syscall.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// waitUntil polls check until it succeeds, the process exits, or ctx ends.
func waitUntil(ctx context.Context, p *process, check func(context.Context) error) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = check(attempt)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%v); see its log", p.name, p.err)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (last check: %v)", p.name, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// apiserverBinary finds kube-apiserver: $CLUSTERDNS_KUBE_APISERVER, else the
// build cache, else it builds it with e2e/tools/build.sh (minutes when cold).
func apiserverBinary() (string, error) {
	if p := os.Getenv("CLUSTERDNS_KUBE_APISERVER"); p != "" {
		return p, nil
	}
	return Binary("kube-apiserver")
}

// Binary finds a Kubernetes tool that e2e/tools/build.sh builds
// (kube-apiserver or kube-proxy) in the build cache
// ($CLUSTERDNS_BIN_CACHE, else ~/.cache/clusterdns/bin), and builds it when
// it is not there yet (minutes when cold).
func Binary(name string) (string, error) {
	cache := os.Getenv("CLUSTERDNS_BIN_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the binary cache: %w", err)
		}
		cache = filepath.Join(home, ".cache", "clusterdns", "bin")
	}
	bin := filepath.Join(cache, name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	script, err := findBuildScript()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script, name)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("build %s with %s: %w\n%s", name, script, err, stderr.String())
	}
	built := strings.TrimSpace(string(out))
	if built == "" {
		return "", fmt.Errorf("%s printed no binary path", script)
	}
	return built, nil
}

// findBuildScript looks for e2e/tools/build.sh above the working directory,
// which go test sets to the package being tested.
func findBuildScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		candidate := filepath.Join(dir, "e2e", "tools", "build.sh")
		if _, err := os.Stat(candidate); err == nil {
			return candidate, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("kube-apiserver is not built and e2e/tools/build.sh was not found above the working directory")
		}
		dir = parent
	}
}

// freePorts reserves n distinct loopback ports by listening on them, then
// releases them for the processes to take. Another process could take one in
// between; on a test machine that is rare enough.
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func writeLog(dir, name, text string) {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.WriteString(text)
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '_'
	}, s)
}
