package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a peer started by the benchmark, with its output in a log file.
type Process struct {
	Name    string
	Cmd     *exec.Cmd
	Started time.Time
	LogPath string
	done    chan struct{}
	err     error
}

// Start runs argv (which may begin with taskset or `ip netns exec`, both of
// which exec the real program, so the PID is the peer's own) with its output
// appended to logPath. The process is killed if the benchmark dies.
func Start(name, logPath string, argv ...string) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	p := &Process{Name: name, Cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	p.Started = time.Now()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM to the process group, SIGKILL after grace, and waits.
func (p *Process) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// RSS is the process's resident set size (VmRSS) in bytes.
func (p *Process) RSS() (int64, error) {
	return RSSOf(p.Cmd.Process.Pid)
}

// RSSOf reads VmRSS from /proc/PID/status.
func RSSOf(pid int) (int64, error) { return statusBytes(pid, "VmRSS") }

// PeakRSS is the process's peak resident set size so far (VmHWM) in bytes.
func (p *Process) PeakRSS() (int64, error) { return statusBytes(p.Cmd.Process.Pid, "VmHWM") }

// statusBytes reads a "NAME: N kB" line of /proc/PID/status.
func statusBytes(pid int, name string) (int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("%s of %d: %w", name, pid, err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, name+":"); ok {
			f := strings.Fields(rest)
			if len(f) < 2 || f[1] != "kB" {
				return 0, fmt.Errorf("%s of %d: bad line %q", name, pid, line)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s of %d: bad line %q", name, pid, line)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("%s of %d: no such line", name, pid)
}

// userHZ is the unit of the times in /proc/PID/stat: USER_HZ, 100 on every
// Linux architecture the benchmark runs on.
const userHZ = 100

// CPUTime is the CPU time the process has used, user and system
// (utime+stime of /proc/PID/stat), to 10 ms.
func (p *Process) CPUTime() (time.Duration, error) {
	pid := p.Cmd.Process.Pid
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu time of %d: %w", pid, err)
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// after its closing parenthesis, where state is field 3.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0, fmt.Errorf("cpu time of %d: bad stat %q", pid, data)
	}
	f := strings.Fields(string(data[i+1:]))
	const utime, stime = 14 - 3, 15 - 3
	if len(f) <= stime {
		return 0, fmt.Errorf("cpu time of %d: bad stat %q", pid, data)
	}
	u, err1 := strconv.ParseInt(f[utime], 10, 64)
	s, err2 := strconv.ParseInt(f[stime], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cpu time of %d: bad stat %q", pid, data)
	}
	return time.Duration(u+s) * time.Second / userHZ, nil
}

// RSSSampler reads a process's RSS at a fixed interval until stopped or
// the process ends: memory over a run, not at one moment.
type RSSSampler struct {
	stop chan struct{}
	done chan struct{}
	// Points are (seconds since the process started, MiB), in order.
	Points [][2]float64
}

// SampleRSS starts sampling p every interval.
func SampleRSS(p *Process, interval time.Duration) *RSSSampler {
	s := &RSSSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			rss, err := p.RSS()
			if err != nil || p.Exited() {
				return
			}
			s.Points = append(s.Points, [2]float64{time.Since(p.Started).Seconds(), float64(rss) / (1 << 20)})
			select {
			case <-s.stop:
				return
			case <-p.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends the sampling and returns the points.
func (s *RSSSampler) Stop() [][2]float64 {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	return s.Points
}

// LogTail returns the end of the process's log, for error messages.
func (p *Process) LogTail() string {
	data, _ := os.ReadFile(p.LogPath)
	return tail(string(data), 4000)
}

// Dialer opens connections; the default dials from this process's network
// namespace, a namespace's dialer from inside it.
type Dialer func(ctx context.Context, network, address string) (net.Conn, error)

// HTTPGetter fetches URLs over a dialer, with a short timeout per request.
func HTTPGetter(dial Dialer) *http.Client {
	tr := &http.Transport{DisableKeepAlives: false, MaxIdleConnsPerHost: 2}
	if dial != nil {
		tr.DialContext = dial
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: tr}
}

// Get returns the status and body of url.
func Get(ctx context.Context, c *http.Client, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, body, err
}

// WaitHTTP polls url every interval until it answers 200, the process
// exits, or timeout passes, and returns when it first answered 200.
func WaitHTTP(ctx context.Context, p *Process, c *http.Client, url string, interval, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		code, _, err := Get(ctx, c, url)
		if err == nil && code == http.StatusOK {
			return time.Now(), nil
		}
		if err == nil {
			err = fmt.Errorf("status %d", code)
		}
		last = err
		if p.Exited() {
			return time.Time{}, fmt.Errorf("%s exited before %s answered (%v):\n%s", p.Name, url, p.err, p.LogTail())
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("%s: %s not 200 within %s (last: %v):\n%s", p.Name, url, timeout, last, p.LogTail())
		case <-time.After(interval):
		}
	}
}

// FreePort returns a port free on 127.0.0.1 for both TCP and UDP.
func FreePort() (int, error) {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("free port: %w", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("free port: none found in 50 tries")
}
