package vm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
)

// BuildStatic compiles Go main packages (import paths of this module, such
// as "github.com/clusterdns/clusterdns/cmd/clusterdns") into static
// executables in dir, ready for Spec.Binaries. It returns their paths in the
// order given.
func BuildStatic(ctx context.Context, dir string, pkgs ...string) ([]string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("vm: building binaries: %w", err)
	}
	var paths []string
	for _, pkg := range pkgs {
		out := filepath.Join(dir, path.Base(pkg))
		cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-o", out, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if msg, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("vm: building %s: %w\n%s", pkg, err, msg)
		}
		paths = append(paths, out)
	}
	return paths, nil
}

// BuildTest compiles the tests of a Go package of this module (an import
// path, as for BuildStatic) into a static test binary at dir/name, for a
// test that runs part of itself inside the VM.
func BuildTest(ctx context.Context, dir, name, pkg string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("vm: building the tests of %s: %w", pkg, err)
	}
	out := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, goTool, "test", "-c", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("vm: building the tests of %s: %w\n%s", pkg, err, msg)
	}
	return out, nil
}
