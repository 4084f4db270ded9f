// Command ipvsnode drives one IPVS peer run of the benchmark from inside the
// e2e VM, where IPVS exists: it starts the peer (the command after --), waits
// for its first full sync, counts what it programmed with ipvsadm, then
// writes endpoint changes to the API server through the VM's one forwarded
// port and times each from the write to the end of the sync that applied it.
// Every time comes from the VM's own clock, on both sides of a difference.
//
// It prints one line per figure, "RESULT <metric> <value>", for the host to
// read from the console, and progress lines for people. It must only run
// inside the VM: the peer programs the network of the namespace it runs in.
//
//	ipvsnode -server https://10.0.2.100:6443 -ca ca.crt -token-file token \
//	    -full-sync NAME -sync-label 'kind="full"' -last-sync NAME \
//	    -changes changes.json -- clusterdns proxy --proxy-mode ipvs ...
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clusterdns/clusterdns/e2e/internal/promtext"
)

// change is one endpoint change, as the benchmark writes them to the file
// -changes names: a JSON array of these.
type change struct {
	// Path is the EndpointSlice's API path, Slice its new body.
	Path  string          `json:"path"`
	Slice json.RawMessage `json:"slice"`
	// Service is the virtual server (address:port) whose real servers
	// change; Fresh the new real server's address.
	Service string `json:"service"`
	Fresh   string `json:"fresh"`
}

type options struct {
	server, serverName, caFile, tokenFile string
	metricsURL, peerLog, changesFile      string
	fullSync, lastSync                    string
	syncLabels, lastLabels                labels
	gap, poll, syncTimeout, changeTimeout time.Duration
	minVirtual                            int
	argv                                  []string
}

type labels []string

func (l *labels) String() string     { return strings.Join(*l, ",") }
func (l *labels) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	o := options{}
	fs := flag.NewFlagSet("ipvsnode", flag.ExitOnError)
	fs.StringVar(&o.server, "server", "https://10.0.2.100:6443", "API server URL")
	fs.StringVar(&o.serverName, "server-name", "127.0.0.1", "name the API server's certificate is checked against")
	fs.StringVar(&o.caFile, "ca", "", "CA certificate of the API server")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the bearer token")
	fs.StringVar(&o.metricsURL, "metrics", "http://127.0.0.1:10249/metrics", "the peer's metrics")
	fs.StringVar(&o.peerLog, "peer-log", "/tmp/peer.log", "where the peer's output goes")
	fs.StringVar(&o.changesFile, "changes", "", "JSON array of endpoint changes to time")
	fs.StringVar(&o.fullSync, "full-sync", "", "histogram of the peer's full syncs")
	fs.Var(&o.syncLabels, "sync-label", "label (key=\"value\") selecting the full syncs' series; repeatable")
	fs.StringVar(&o.lastSync, "last-sync", "", "gauge with the Unix time the last successful sync ended")
	fs.Var(&o.lastLabels, "last-label", "label selecting the gauge's series; repeatable")
	fs.DurationVar(&o.gap, "gap", 2*time.Second, "pause before each change")
	// Reading the metrics costs the peer CPU under emulation, and the
	// times come from the metrics, not from when they were read.
	fs.DurationVar(&o.poll, "poll", 500*time.Millisecond, "how often the metrics are read")
	fs.DurationVar(&o.syncTimeout, "sync-timeout", 10*time.Minute, "longest wait for the first full sync")
	fs.DurationVar(&o.changeTimeout, "change-timeout", 2*time.Minute, "longest wait for one change")
	fs.IntVar(&o.minVirtual, "min-virtual-servers", 1, "fewer virtual servers after the first sync is a failure")
	_ = fs.Parse(os.Args[1:])
	o.argv = fs.Args()
	if len(o.argv) == 0 || o.fullSync == "" || o.lastSync == "" {
		fmt.Fprintln(os.Stderr, "ipvsnode: want -full-sync, -last-sync and the peer's command after --")
		os.Exit(2)
	}
	err := run(o)
	if err != nil {
		fmt.Println("ipvsnode:", err)
	}
	if tail, err := os.ReadFile(o.peerLog); err == nil {
		fmt.Printf("peer log (end):\n%s\n", lastBytes(string(tail), 3000))
	}
	if err != nil {
		os.Exit(1)
	}
}

func run(o options) error {
	ctx := context.Background()
	var changes []change
	if o.changesFile != "" {
		data, err := os.ReadFile(o.changesFile)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(data, &changes); err != nil {
			return fmt.Errorf("changes: %w", err)
		}
	}
	api, token, err := apiClient(o)
	if err != nil {
		return err
	}
	logFile, err := os.Create(o.peerLog)
	if err != nil {
		return err
	}
	defer logFile.Close()
	peer := exec.Command(o.argv[0], o.argv[1:]...)
	peer.Stdout, peer.Stderr = logFile, logFile
	exited := make(chan error, 1)
	started := time.Now()
	if err := peer.Start(); err != nil {
		return fmt.Errorf("start peer: %w", err)
	}
	go func() { exited <- peer.Wait() }()
	defer func() {
		_ = peer.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = peer.Process.Kill()
		}
	}()
	metricsClient := &http.Client{Timeout: 5 * time.Second}
	metrics := func() (string, error) {
		resp, err := metricsClient.Get(o.metricsURL)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("metrics: status %d", resp.StatusCode)
		}
		return string(body), err
	}
	checkExited := func() error {
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("the peer exited: %v", err)
		default:
			return nil
		}
	}

	// The first full sync: both metrics, since a sync's duration is
	// recorded before its end time.
	deadline := time.Now().Add(o.syncTimeout)
	var body string
	for {
		body, err = metrics()
		if err == nil {
			n, _ := promtext.Value(body, o.fullSync+"_count", o.syncLabels...)
			if last, _ := promtext.Value(body, o.lastSync, o.lastLabels...); n >= 1 && last > 0 {
				break
			}
		}
		if err := checkExited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no full sync within %s (last error: %v)", o.syncTimeout, err)
		}
		time.Sleep(o.poll)
	}
	last, _ := promtext.Value(body, o.lastSync, o.lastLabels...)
	sum, _ := promtext.Value(body, o.fullSync+"_sum", o.syncLabels...)
	count, _ := promtext.Value(body, o.fullSync+"_count", o.syncLabels...)
	synced := unixTime(last).Sub(started)
	fmt.Printf("first full sync done %s after start, %.3fs per full sync (%v)\n", synced.Round(time.Millisecond), sum/count, count)
	result("start_to_synced_s", synced.Seconds())
	result("full_sync_s", sum/count)

	table, err := ipvsadm(ctx)
	if err != nil {
		return err
	}
	virtual, real := countIPVS(table)
	fmt.Printf("ipvsadm -Ln: %d virtual servers, %d real servers\n", virtual, real)
	result("ipvs_virtual_servers", float64(virtual))
	result("ipvs_real_servers", float64(real))
	if virtual < o.minVirtual {
		return fmt.Errorf("%d virtual servers, want at least %d", virtual, o.minVirtual)
	}

	for k, c := range changes {
		time.Sleep(o.gap)
		began := time.Now()
		if err := put(ctx, api, token, o.server+c.Path, c.Slice); err != nil {
			return fmt.Errorf("change %d: %w", k, err)
		}
		applied, err := waitApplied(ctx, o, metrics, checkExited, began, c)
		if err != nil {
			return fmt.Errorf("change %d: %w", k, err)
		}
		took := applied.Sub(began)
		fmt.Printf("change %d (%s on %s) applied after %s\n", k, c.Fresh, c.Service, took.Round(100*time.Microsecond))
		result("change_ms", float64(took)/float64(time.Millisecond))
	}
	return checkExited()
}

// waitApplied waits until a sync that ended after began has programmed the
// new real server, and returns when that sync ended.
func waitApplied(ctx context.Context, o options, metrics func() (string, error), checkExited func() error, began time.Time, c change) (time.Time, error) {
	deadline := time.Now().Add(o.changeTimeout)
	checked := 0.0
	for {
		body, err := metrics()
		if err == nil {
			last, _ := promtext.Value(body, o.lastSync, o.lastLabels...)
			if end := unixTime(last); end.After(began) && last != checked {
				checked = last
				out, err := exec.CommandContext(ctx, "ipvsadm", "-Ln", "-t", c.Service).CombinedOutput()
				if err != nil {
					return time.Time{}, fmt.Errorf("ipvsadm -Ln -t %s: %v\n%s", c.Service, err, out)
				}
				if strings.Contains(string(out), "-> "+c.Fresh+":") {
					return end, nil
				}
			}
		}
		if err := checkExited(); err != nil {
			return time.Time{}, err
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%s not a real server of %s within %s (last sync checked %s, error %v)",
				c.Fresh, c.Service, o.changeTimeout, unixTime(checked).Format(time.RFC3339Nano), err)
		}
		time.Sleep(o.poll)
	}
}

func result(metric string, value float64) {
	fmt.Printf("RESULT %s %s\n", metric, strconv.FormatFloat(value, 'g', -1, 64))
}

func apiClient(o options) (*http.Client, string, error) {
	ca, err := os.ReadFile(o.caFile)
	if err != nil {
		return nil, "", fmt.Errorf("API CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, "", errors.New("API CA: no certificate in " + o.caFile)
	}
	token, err := os.ReadFile(o.tokenFile)
	if err != nil {
		return nil, "", fmt.Errorf("API token: %w", err)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: o.serverName},
	}}
	return client, strings.TrimSpace(string(token)), nil
}

// put replaces an object, as the EndpointSlice controller would.
func put(ctx context.Context, client *http.Client, token, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("PUT %s: %w", url, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("PUT %s: status %d: %s", url, resp.StatusCode, msg)
	}
	return nil
}

func ipvsadm(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "ipvsadm", "-Ln").Output()
	if err != nil {
		return "", fmt.Errorf("ipvsadm -Ln: %w", err)
	}
	return string(out), nil
}

// countIPVS counts the virtual and real servers in `ipvsadm -Ln` output.
func countIPVS(table string) (virtual, real int) {
	for line := range strings.SplitSeq(table, "\n") {
		switch {
		case strings.HasPrefix(line, "  -> RemoteAddress"):
		case strings.HasPrefix(line, "  -> "):
			real++
		case strings.HasPrefix(line, "TCP "), strings.HasPrefix(line, "UDP "),
			strings.HasPrefix(line, "SCTP "), strings.HasPrefix(line, "FWM "):
			virtual++
		}
	}
	return virtual, real
}

func unixTime(sec float64) time.Time {
	return time.Unix(0, int64(sec*float64(time.Second)))
}

func lastBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
