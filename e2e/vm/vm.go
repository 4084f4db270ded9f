// Package vm runs an end-to-end test inside a throwaway Linux VM: Debian's
// cloud kernel booted under qemu (software emulation, no KVM needed) from an
// initramfs holding busybox, the real iptables, iproute2, ipset and ipvsadm,
// the kernel modules for IPVS, netfilter, veth and dummy links, plus the
// static binaries and the shell script of one test.
//
// It exists so that tests can program IPVS and iptables and send real packets
// between network namespaces without touching the host's kernel state. The VM
// has no network card, so nothing it does can leave it; a run may opt in to
// exactly one forwarded port on the host's loopback (Spec.Forward), and
// nothing else.
//
// The kernel and the base initramfs come from build.sh, which caches them;
// Run only adds the per-test files, boots, and reads the result from the
// serial console. Run never leaves qemu behind: every run is bounded by a
// timeout and the process is killed when it expires.
package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultTimeout bounds a run when Spec.Timeout is zero. Booting takes a few
// seconds under emulation; the rest is left to the test.
const DefaultTimeout = 2 * time.Minute

// maxConsole caps how much serial output is kept, so a runaway test cannot
// exhaust the host's memory.
const maxConsole = 16 << 20

// Spec describes one test run.
type Spec struct {
	// Binaries are host paths of static executables. Each is copied to
	// /usr/local/bin/<base name> in the VM, which is first in PATH.
	Binaries []string
	// Files maps absolute paths inside the VM to their contents, for
	// configuration the script reads. They are created with mode 0644.
	Files map[string][]byte
	// Script is run by busybox sh as /test.sh, with stdout and stderr both
	// reported in Output.Result. Its exit status becomes Output.ExitCode.
	Script string
	// Timeout bounds the run from qemu's start to its exit. Zero means
	// DefaultTimeout.
	Timeout time.Duration
	// MemoryMiB is the VM's memory; zero means 1024. The initramfs, binaries
	// included, lives in it.
	MemoryMiB int
	// CPUs is the number of virtual CPUs; zero means 1.
	CPUs int
	// Forward, when set, is a TCP address on the host's loopback (such as
	// 127.0.0.1:6443) that the guest reaches at ForwardAddr, for a test
	// whose agent reads an API server running on the host. The VM then has
	// one network card on qemu's user network in restricted mode: the
	// forward is its only way out, every other destination is dropped.
	// Empty (the default) means no network card at all.
	Forward string
}

// ForwardAddr is where a guest reaches Spec.Forward. The guest's card has
// 10.0.2.15/24 and no default route.
const ForwardAddr = "10.0.2.100:6443"

// guestNet is the guest's address on qemu's user network.
const guestNet = "10.0.2.15/24"

// Output is what a run reported.
type Output struct {
	// Result is everything the script printed, without kernel messages.
	Result string
	// ExitCode is the script's exit status.
	ExitCode int
	// Console is the whole serial console, for diagnosing failures.
	Console string
	// Elapsed is the time from qemu's start to its exit.
	Elapsed time.Duration
}

// Assets are the prepared kernel and base initramfs.
type Assets struct {
	Kernel  string // path of the kernel image
	Base    string // path of the base initramfs (cpio archive)
	QEMU    string // path of qemu-system-x86_64
	Version string // kernel release, for messages
}

// CacheDir is where build.sh keeps its output: $CLUSTERDNS_VM_CACHE, or
// ~/.cache/clusterdns/vm.
func CacheDir() (string, error) {
	if dir := os.Getenv("CLUSTERDNS_VM_CACHE"); dir != "" {
		return dir, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("vm: locating cache: %w", err)
	}
	return filepath.Join(home, ".cache", "clusterdns", "vm"), nil
}

// ErrNotBuilt means build.sh has not prepared the assets on this machine.
var ErrNotBuilt = errors.New("vm: kernel, initramfs or qemu missing; run e2e/vm/build.sh")

// Locate finds the assets build.sh prepared. It returns an error wrapping
// ErrNotBuilt when any of them is missing.
func Locate() (Assets, error) {
	dir, err := CacheDir()
	if err != nil {
		return Assets{}, err
	}
	a := Assets{
		Kernel: filepath.Join(dir, "vmlinuz"),
		Base:   filepath.Join(dir, "base.cpio"),
	}
	for _, p := range []string{a.Kernel, a.Base} {
		if _, err := os.Stat(p); err != nil {
			return Assets{}, fmt.Errorf("%w (%v)", ErrNotBuilt, err)
		}
	}
	if a.QEMU, err = exec.LookPath("qemu-system-x86_64"); err != nil {
		return Assets{}, fmt.Errorf("%w (%v)", ErrNotBuilt, err)
	}
	if manifest, err := os.ReadFile(filepath.Join(dir, "manifest")); err == nil {
		if m := regexp.MustCompile(`(?m)^KVER=(\S+)$`).FindSubmatch(manifest); m != nil {
			a.Version = string(m[1])
		}
	}
	return a, nil
}

// Run boots a VM with the assets build.sh prepared and runs spec in it.
func Run(ctx context.Context, spec Spec) (Output, error) {
	assets, err := Locate()
	if err != nil {
		return Output{}, err
	}
	return assets.Run(ctx, spec)
}

// Run boots a VM from a and runs spec in it. The error reports a failure of
// the harness (no result, timeout, qemu failing); a script that fails is
// reported through Output.ExitCode with a nil error.
func (a Assets) Run(ctx context.Context, spec Spec) (Output, error) {
	timeout := spec.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	memory := spec.MemoryMiB
	if memory == 0 {
		memory = 1024
	}
	cpus := spec.CPUs
	if cpus == 0 {
		cpus = 1
	}

	dir, err := os.MkdirTemp("", "clusterdns-vm-")
	if err != nil {
		return Output{}, fmt.Errorf("vm: %w", err)
	}
	defer os.RemoveAll(dir)
	initrd := filepath.Join(dir, "initrd")
	if err := a.writeInitrd(initrd, spec); err != nil {
		return Output{}, err
	}

	token, err := newToken()
	if err != nil {
		return Output{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	network := []string{"-nic", "none"} // no network card: nothing leaves the VM
	netArg := ""
	if spec.Forward != "" {
		if network, err = forwardArgs(ctx, dir, spec.Forward); err != nil {
			return Output{}, err
		}
		netArg = " clusterdns.net=" + guestNet
	}
	// Software emulation by default: KVM is unavailable or nested and
	// broken on the machines this runs on. CLUSTERDNS_VM_ACCEL=kvm opts in.
	accel := os.Getenv("CLUSTERDNS_VM_ACCEL")
	if accel == "" {
		accel = "tcg"
	}
	args := []string{
		"-accel", accel,
		"-machine", "q35",
		"-smp", strconv.Itoa(cpus),
		"-m", strconv.Itoa(memory),
		"-nodefaults", "-no-user-config", "-display", "none",
		"-serial", "stdio",
		"-no-reboot",
		"-kernel", a.Kernel,
		"-initrd", initrd,
		// Besides the console and the token: skip work that only slows an
		// emulated boot (crypto self-tests, TSC and timer checks).
		"-append", fmt.Sprintf("console=ttyS0 quiet panic=-1 mitigations=off cryptomgr.notests tsc=reliable no_timer_check "+
			"clusterdns.token=%s clusterdns.timeout=%d%s", token, int(timeout.Seconds())+1, netArg),
	}
	cmd := exec.CommandContext(ctx, a.QEMU, append(args, network...)...)
	console := &cappedBuffer{limit: maxConsole}
	cmd.Stdout = console
	cmd.Stderr = console
	cmd.WaitDelay = 5 * time.Second
	// Should this process die without cancelling (a test binary killed by
	// its own timeout), the kernel kills qemu; /init also stops the script
	// after the timeout by itself, so the VM powers off either way. The
	// signal follows the death of the forking thread, not of the process,
	// so that thread stays locked to this goroutine until qemu has exited.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	start := time.Now()
	runtime.LockOSThread()
	runErr := cmd.Run()
	runtime.UnlockOSThread()
	out := Output{Console: console.String(), Elapsed: time.Since(start)}

	result, code, parseErr := parseConsole(out.Console, token)
	out.Result, out.ExitCode = result, code
	switch {
	case parseErr == nil:
		// qemu exits with status 0 after poweroff; any other outcome after a
		// complete result does not make the result less true.
		return out, nil
	case ctx.Err() != nil:
		return out, fmt.Errorf("vm: no result after %v (%w); console:\n%s", out.Elapsed.Round(time.Millisecond), ctx.Err(), tail(out.Console, 4000))
	case runErr != nil:
		return out, fmt.Errorf("vm: qemu: %w; console:\n%s", runErr, tail(out.Console, 4000))
	default:
		return out, fmt.Errorf("vm: %w; console:\n%s", parseErr, tail(out.Console, 4000))
	}
}

// forwardArgs returns qemu's network arguments for Spec.Forward: one virtio
// card on the user network with restrict=on, which drops everything the
// guest sends except to its explicit forwards, and one guestfwd whose
// connections qemu hands, one process each, to vmrelay (built into dir),
// which carries them to the host address and refuses any that is not
// loopback.
func forwardArgs(ctx context.Context, dir, host string) ([]string, error) {
	target, err := netip.ParseAddrPort(host)
	if err != nil || !target.Addr().IsLoopback() {
		return nil, fmt.Errorf("vm: Forward %q: want a loopback address and port", host)
	}
	bins, err := BuildStatic(ctx, dir, "github.com/clusterdns/clusterdns/e2e/vm/vmrelay")
	if err != nil {
		return nil, err
	}
	// qemu splits its options at commas and the command at spaces.
	if strings.ContainsAny(bins[0], ", '\"") {
		return nil, fmt.Errorf("vm: relay path %q has characters qemu would split at", bins[0])
	}
	return []string{
		"-netdev", fmt.Sprintf("user,id=n0,restrict=on,ipv6=off,guestfwd=tcp:%s-cmd:%s %s", ForwardAddr, bins[0], target),
		"-device", "virtio-net-pci,netdev=n0",
	}, nil
}

// writeInitrd concatenates the cached base archive with a cpio archive of the
// per-run files. The kernel unpacks both, one after the other.
func (a Assets) writeInitrd(path string, spec Spec) error {
	var files []archiveFile
	files = append(files, archiveFile{
		name: "test.sh", mode: 0o755,
		data: strings.NewReader(spec.Script), size: int64(len(spec.Script)),
	})
	for name, data := range spec.Files {
		if !filepath.IsAbs(name) {
			return fmt.Errorf("vm: file %q: path must be absolute", name)
		}
		files = append(files, archiveFile{
			name: strings.TrimPrefix(filepath.Clean(name), "/"), mode: 0o644,
			data: bytes.NewReader(data), size: int64(len(data)),
		})
	}
	var opened []*os.File
	defer func() {
		for _, f := range opened {
			f.Close()
		}
	}()
	for _, bin := range spec.Binaries {
		f, err := os.Open(bin)
		if err != nil {
			return fmt.Errorf("vm: binary: %w", err)
		}
		opened = append(opened, f)
		info, err := f.Stat()
		if err != nil {
			return fmt.Errorf("vm: binary: %w", err)
		}
		files = append(files, archiveFile{
			name: "usr/local/bin/" + filepath.Base(bin), mode: 0o755,
			data: f, size: info.Size(),
		})
	}

	out, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("vm: initrd: %w", err)
	}
	defer out.Close()
	base, err := os.Open(a.Base)
	if err != nil {
		return fmt.Errorf("vm: initrd: %w", err)
	}
	defer base.Close()
	n, err := io.Copy(out, base)
	if err != nil {
		return fmt.Errorf("vm: initrd: copying base: %w", err)
	}
	// The kernel recognises an uncompressed archive only at a four-byte
	// boundary; it skips the zero bytes in between.
	if rem := n % 4; rem != 0 {
		if _, err := out.Write(make([]byte, 4-rem)); err != nil {
			return fmt.Errorf("vm: initrd: %w", err)
		}
	}
	if err := writeCPIO(out, files); err != nil {
		return fmt.Errorf("vm: initrd: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("vm: initrd: %w", err)
	}
	return nil
}

// parseConsole extracts the script's output and exit status from the serial
// console. The markers carry a per-run token, so neither kernel messages nor
// a test printing marker-like lines can be mistaken for them.
func parseConsole(console, token string) (result string, code int, err error) {
	console = strings.ReplaceAll(console, "\r\n", "\n")
	begin := "VM-RESULT-BEGIN " + token + "\n"
	i := strings.Index(console, begin)
	if i < 0 {
		return "", -1, errors.New("the VM never started the test")
	}
	rest := console[i+len(begin):]
	// The end marker may follow output without a final newline.
	j := strings.Index(rest, "VM-RESULT-END "+token+"\n")
	if j < 0 {
		return rest, -1, errors.New("the test did not finish")
	}
	result = rest[:j]
	m := regexp.MustCompile(`VM-EXIT ` + regexp.QuoteMeta(token) + ` (\d+)\n`).FindStringSubmatch(rest[j:])
	if m == nil {
		return result, -1, errors.New("the VM reported no exit code")
	}
	code, err = strconv.Atoi(m[1])
	if err != nil {
		return result, -1, fmt.Errorf("exit code %q: %w", m[1], err)
	}
	return result, code, nil
}

func newToken() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("vm: token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// tail returns the last n bytes of s, for error messages.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// cappedBuffer keeps at most limit bytes and drops the rest, so that qemu is
// never blocked writing and memory stays bounded.
type cappedBuffer struct {
	buf   bytes.Buffer
	limit int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := c.limit - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *cappedBuffer) String() string { return c.buf.String() }
