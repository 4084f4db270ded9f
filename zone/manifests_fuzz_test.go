package zone

import (
	"bytes"
	"log/slog"
	"regexp"
	"strconv"
	"testing"
)

// FuzzManifests parses a manifest file's contents and builds what the
// manifests source would serve from it: the snapshot, with EndpointSlices
// derived from Pods for selector Services. Nothing panics, and a rejected
// file is reported as FILE:LINE: with a line inside the file.
func FuzzManifests(f *testing.F) {
	const file = "manifests.yaml"
	where := regexp.MustCompile(`^` + regexp.QuoteMeta(file) + `:(\d+): `)
	quiet := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := parseManifests(file, data, quiet)
		if err != nil {
			m := where.FindStringSubmatch(err.Error())
			if m == nil {
				t.Fatalf("error without %s:LINE: first: %v", file, err)
			}
			line, _ := strconv.Atoi(m[1])
			if lines := bytes.Count(data, []byte("\n")) + 1; line < 1 || line > lines {
				t.Fatalf("error at line %d of a file of %d lines: %v", line, lines, err)
			}
			return
		}
		buildFromManifests(map[string]manifestObjects{file: objs}, quiet)
	})
}
