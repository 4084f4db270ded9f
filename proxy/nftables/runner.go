package nftables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
)

// Runner is the backend's only way to the kernel. ExecRunner runs the nft
// tool, NetlinkRunner speaks netlink; Fake is an in-memory table and
// RecordingRunner keeps the scripts it was given, both for tests.
type Runner interface {
	// Apply runs the operations as one transaction: all of them apply or
	// none.
	Apply(ctx context.Context, tx *Transaction) error
	// ListTables returns `nft list tables`.
	ListTables(ctx context.Context) ([]byte, error)
}

// ExecRunner runs /usr/sbin/nft (the first nft in PATH).
type ExecRunner struct {
	// Prefix is prepended to every command, e.g. {"ip", "netns", "exec",
	// "NAME"}, to run nft in another network namespace.
	Prefix []string
}

func (r ExecRunner) command(ctx context.Context, args ...string) *exec.Cmd {
	all := append(append(append([]string(nil), r.Prefix...), "nft"), args...)
	return exec.CommandContext(ctx, all[0], all[1:]...)
}

// maxErrorText bounds the nft error output quoted in an error.
const maxErrorText = 4096

// Apply implements Runner with `nft -f -`.
func (r ExecRunner) Apply(ctx context.Context, tx *Transaction) error {
	script := tx.Script()
	if script == nil {
		return nil
	}
	cmd := r.command(ctx, "-f", "-")
	cmd.Stdin = bytes.NewReader(script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > maxErrorText {
			msg = msg[:maxErrorText] + " …"
		}
		return fmt.Errorf("nft -f - (%d lines): %w: %s", bytes.Count(script, []byte("\n")), err, msg)
	}
	return nil
}

// ListTables implements Runner. Without an nft tool there can be no tables
// this backend made, and the listing is empty.
func (r ExecRunner) ListTables(ctx context.Context) ([]byte, error) {
	if len(r.Prefix) == 0 {
		if _, err := exec.LookPath("nft"); errors.Is(err, exec.ErrNotFound) {
			return nil, nil
		}
	}
	cmd := r.command(ctx, "list", "tables")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("nft list tables: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// RecordingRunner records the transactions' scripts instead of applying
// them; ListTables answers with Tables. It is for tests of the rendering;
// Fake also checks what it is given.
type RecordingRunner struct {
	mu sync.Mutex // protects the following fields
	// Scripts lists every script applied, in order.
	Scripts []string
	// Fail makes that many of the next Apply calls fail (after recording).
	Fail int
	// Tables is what ListTables returns.
	Tables string
}

var errRecordedFailure = errors.New("recording runner: failing on purpose")

// Apply implements Runner.
func (r *RecordingRunner) Apply(_ context.Context, tx *Transaction) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Scripts = append(r.Scripts, string(tx.Script()))
	if r.Fail > 0 {
		r.Fail--
		return errRecordedFailure
	}
	return nil
}

// ListTables implements Runner.
func (r *RecordingRunner) ListTables(context.Context) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return []byte(r.Tables), nil
}
