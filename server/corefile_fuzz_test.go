package server

import (
	"bytes"
	"regexp"
	"strconv"
	"testing"
)

// corefileFuzzSkips are texts a fuzzed Corefile must not hold: the parser
// reads the files a Corefile names (import, a resolv.conf, a kubeconfig, TLS
// files), and a device or a /proc file could block the reader or never end.
var corefileFuzzSkips = [][]byte{[]byte("import"), []byte("dev"), []byte("proc"), []byte("sys"), []byte("run"), []byte("fd/"), []byte("{$")}

// FuzzParseConfig sets up Corefiles and builds them as a reload would,
// without starting anything: whatever the text, nothing panics, and a
// rejected Corefile is reported as FILE:LINE: with a line inside the file.
func FuzzParseConfig(f *testing.F) {
	const file = "Corefile"
	where := regexp.MustCompile(`^` + file + `:(\d+): `)
	shared := testShared()
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, s := range corefileFuzzSkips {
			if bytes.Contains(data, s) {
				return
			}
		}
		check := func(err error) {
			m := where.FindStringSubmatch(err.Error())
			if m == nil {
				t.Fatalf("error without %s:LINE: first: %v", file, err)
			}
			line, _ := strconv.Atoi(m[1])
			if lines := bytes.Count(data, []byte("\n")) + 1; line < 1 || line > lines {
				t.Fatalf("error at line %d of a file of %d lines: %v", line, lines, err)
			}
		}
		cfg, err := ParseConfig(file, data)
		if err != nil {
			check(err)
			return
		}
		if _, err := Build(cfg, shared); err != nil {
			check(err)
		}
	})
}
