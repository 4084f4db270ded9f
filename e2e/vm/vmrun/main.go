// Command vmrun boots the e2e VM once with a script and static binaries, for
// trying out a test by hand:
//
//	go run ./e2e/vm/vmrun -timeout 60s -bin /tmp/clusterdns -file /etc/clusterdns/svc.yaml=svc.yaml script.sh
//
// It prints what the script printed and exits with the script's status. With
// -console it prints the whole serial console instead.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"

	"github.com/clusterdns/clusterdns/e2e/vm"
)

func main() {
	var bins, files multiFlag
	flag.Var(&bins, "bin", "static binary to put into /usr/local/bin (repeatable)")
	flag.Var(&files, "file", "VMPATH=HOSTPATH: copy a host file into the VM (repeatable)")
	timeout := flag.Duration("timeout", vm.DefaultTimeout, "bound on the whole run")
	memory := flag.Int("memory", 0, "VM memory in MiB (0: default)")
	cpus := flag.Int("cpus", 0, "virtual CPUs (0: default)")
	console := flag.Bool("console", false, "print the whole serial console")
	forward := flag.String("forward", "", "host loopback address:port the guest reaches at "+vm.ForwardAddr+" (its only way out)")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: vmrun [flags] script.sh")
		os.Exit(2)
	}
	script, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmrun:", err)
		os.Exit(2)
	}
	contents := map[string][]byte{}
	for _, f := range files {
		vmPath, hostPath, ok := strings.Cut(f, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "vmrun: -file %q: want VMPATH=HOSTPATH\n", f)
			os.Exit(2)
		}
		if contents[vmPath], err = os.ReadFile(hostPath); err != nil {
			fmt.Fprintln(os.Stderr, "vmrun:", err)
			os.Exit(2)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	out, err := vm.Run(ctx, vm.Spec{
		Binaries:  bins,
		Files:     contents,
		Script:    string(script),
		Timeout:   *timeout,
		MemoryMiB: *memory,
		CPUs:      *cpus,
		Forward:   *forward,
	})
	if *console {
		fmt.Print(out.Console)
	} else {
		fmt.Print(out.Result)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmrun:", err)
		os.Exit(125)
	}
	fmt.Fprintf(os.Stderr, "vmrun: exit %d after %v\n", out.ExitCode, out.Elapsed.Round(1e7))
	os.Exit(out.ExitCode)
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
