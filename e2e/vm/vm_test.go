package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/internal/testenv"
)

// requireVM returns the assets build.sh prepared. Under -short the test is
// skipped; otherwise a missing piece fails it (internal/testenv).
func requireVM(t *testing.T) Assets {
	t.Helper()
	var a Assets
	testenv.Require(t, testenv.Need{What: "the e2e VM (e2e/vm/build.sh)", Check: func() (err error) {
		a, err = Locate()
		return err
	}})
	return a
}

func TestSmokeIPVSBetweenNamespaces(t *testing.T) {
	assets := requireVM(t)
	bins, err := BuildStatic(t.Context(), t.TempDir(), "github.com/clusterdns/clusterdns/e2e/vm/vmprobe")
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile("testdata/smoke.sh")
	if err != nil {
		t.Fatal(err)
	}

	out, err := assets.Run(t.Context(), Spec{Binaries: bins, Script: string(script), Timeout: 4 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s, boot to power-off %v", assets.Version, out.Elapsed.Round(time.Millisecond))
	if out.ExitCode != 0 {
		t.Fatalf("smoke.sh exited with %d:\n%s", out.ExitCode, out.Result)
	}
	for _, want := range []string{
		// The kernel holds the service and both real servers.
		"ipvs real 10.100.2.2:8080 weight 1",
		"ipvs real 10.100.3.2:8080 weight 1",
		// Each pod answered, and saw the client's own address: the packets
		// were translated by IPVS, not masqueraded or answered by the node.
		"reply: pod-a saw 10.100.1.2:",
		"reply: pod-b saw 10.100.1.2:",
		// A port without a service is not silently forwarded.
		"dial 10.96.0.10:81: refused",
		// Real iptables works with both kernel backends.
		"iptables-nft nat KUBE-SERVICES rules: 1",
		"iptables-legacy nat KUBE-SERVICES rules: 1",
	} {
		if !strings.Contains(out.Result, want) {
			t.Errorf("result lacks %q:\n%s", want, out.Result)
		}
	}
}

func TestRunReportsScriptFailure(t *testing.T) {
	assets := requireVM(t)
	out, err := assets.Run(t.Context(), Spec{
		Script:  "echo to stdout; echo to stderr >&2; printf no-newline; exit 7\n",
		Files:   map[string][]byte{"/etc/clusterdns/hello": []byte("hi")},
		Timeout: 3 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if out.ExitCode != 7 {
		t.Errorf("exit code %d, want 7", out.ExitCode)
	}
	if want := "to stdout\nto stderr\nno-newline"; out.Result != want {
		t.Errorf("result %q, want %q", out.Result, want)
	}
}

func TestRunFailsAfterTimeout(t *testing.T) {
	assets := requireVM(t)
	// The VM cannot even boot in this time, so the run must be cut short
	// (the script would otherwise keep it up for ten minutes).
	_, err := assets.Run(t.Context(), Spec{Script: "sleep 600\n", Timeout: 500 * time.Millisecond})
	if err == nil {
		t.Fatal("run succeeded, want a timeout error")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no result after") {
		t.Errorf("error %q does not report the timeout", err)
	}
}

func TestParseConsole(t *testing.T) {
	const tok = "abc123"
	tests := []struct {
		name    string
		console string
		result  string
		code    int
		wantErr bool
	}{
		{
			name: "kernel noise around the result",
			console: "[    1.0] booting\r\nVM-RESULT-BEGIN abc123\r\nline 1\r\nline 2\r\n" +
				"VM-RESULT-END abc123\r\nVM-EXIT abc123 0\r\n[    2.0] reboot: Power down\r\n",
			result: "line 1\nline 2\n",
			code:   0,
		},
		{
			name:    "output without final newline",
			console: "VM-RESULT-BEGIN abc123\nno newlineVM-RESULT-END abc123\nVM-EXIT abc123 3\n",
			result:  "no newline",
			code:    3,
		},
		{
			name: "markers of another token are output",
			console: "VM-RESULT-BEGIN abc123\nVM-RESULT-END zzz\nVM-EXIT zzz 9\n" +
				"VM-RESULT-END abc123\nVM-EXIT abc123 1\n",
			result: "VM-RESULT-END zzz\nVM-EXIT zzz 9\n",
			code:   1,
		},
		{name: "never started", console: "Kernel panic\n", code: -1, wantErr: true},
		{
			name:    "never finished",
			console: "VM-RESULT-BEGIN abc123\npartial\n",
			result:  "partial\n", code: -1, wantErr: true,
		},
		{
			name:    "no exit code",
			console: "VM-RESULT-BEGIN abc123\nVM-RESULT-END abc123\n",
			result:  "", code: -1, wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			result, code, err := parseConsole(tt.console, tok)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want error %v", err, tt.wantErr)
			}
			if result != tt.result || code != tt.code {
				t.Errorf("got (%q, %d), want (%q, %d)", result, code, tt.result, tt.code)
			}
		})
	}
}

func TestWriteCPIO(t *testing.T) {
	files := []archiveFile{
		{name: "usr/local/bin/probe", mode: 0o755, data: strings.NewReader("ELF..."), size: 6},
		{name: "test.sh", mode: 0o755, data: strings.NewReader("exit 0\n"), size: 7},
		{name: "etc/a/b/conf", mode: 0o644, data: strings.NewReader(""), size: 0},
	}
	var buf bytes.Buffer
	if err := writeCPIO(&buf, files); err != nil {
		t.Fatal(err)
	}
	got, err := readCPIO(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"etc 40755 ", "etc/a 40755 ", "etc/a/b 40755 ", "etc/a/b/conf 100644 ",
		"test.sh 100755 exit 0\n",
		"usr 40755 ", "usr/local 40755 ", "usr/local/bin 40755 ", "usr/local/bin/probe 100755 ELF...",
		"TRAILER!!! 0 ",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("archive holds\n%q\nwant\n%q", got, want)
	}
}

func TestWriteCPIORejectsShortData(t *testing.T) {
	files := []archiveFile{{name: "x", mode: 0o644, data: strings.NewReader("abc"), size: 10}}
	if err := writeCPIO(io.Discard, files); err == nil {
		t.Fatal("want an error for a file shorter than its declared size")
	}
}

// readCPIO decodes a newc archive into "name mode(octal) contents" strings,
// checking the four-byte alignment the kernel relies on.
func readCPIO(b []byte) ([]string, error) {
	var out []string
	off := 0
	for off < len(b) {
		if off%4 != 0 {
			return nil, fmt.Errorf("header at unaligned offset %d", off)
		}
		if len(b)-off < 110 || string(b[off:off+6]) != "070701" {
			return nil, fmt.Errorf("no newc header at offset %d", off)
		}
		field := func(i int) int {
			v, _ := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			return int(v)
		}
		mode, size, nameSize := field(1), field(6), field(11)
		nameStart := off + 110
		name := string(b[nameStart : nameStart+nameSize-1])
		dataStart := (nameStart + nameSize + 3) &^ 3
		if dataStart+size > len(b) {
			return nil, errors.New("truncated data")
		}
		out = append(out, fmt.Sprintf("%s %o %s", name, mode, b[dataStart:dataStart+size]))
		off = (dataStart + size + 3) &^ 3
		if name == "TRAILER!!!" {
			break
		}
	}
	return out, nil
}
