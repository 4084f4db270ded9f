// Command changechart draws one chart of the endpoint change time against
// the cluster size from several results.json files of the peer harness
// (one per source or mode), each given as label=path:
//
//	changechart -o change.png "from the API=api/results.json" "from a folder=folder/results.json"
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/clusterdns/clusterdns/e2e/bench"
)

func main() {
	out := flag.String("o", "change-by-size.png", "PNG to write")
	title := flag.String("title", "nftables mode: one endpoint change by cluster size", "chart title")
	flag.Parse()
	if err := run(*out, *title, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "changechart:", err)
		os.Exit(1)
	}
}

func run(out, title string, args []string) error {
	runs := map[string]*bench.Results{}
	var order []string
	for _, arg := range args {
		label, path, ok := strings.Cut(arg, "=")
		if !ok {
			return fmt.Errorf("%q is not label=path", arg)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var r bench.Results
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		runs[label] = &r
		order = append(order, label)
	}
	return bench.ChangeBySizeChart(out, title, runs, order)
}
