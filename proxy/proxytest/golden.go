package proxytest

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// update is the -update flag of every test binary that imports proxytest:
// golden files are rewritten instead of compared.
var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// Golden compares got with testdata/name.golden of the package under test,
// or, with -update, writes it there. A difference fails the test with a
// line diff, so that a one-rule change reads as one line.
func Golden(t testing.TB, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run '%s' -update to create it)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test -run '%s' -update if the change is intended):\n%s", path, t.Name(), LineDiff(string(got), string(want)))
	}
}

// maxDiffCells bounds the work of LineDiff's alignment; larger inputs get
// the plain list of lines only one side has.
const maxDiffCells = 1 << 22

// LineDiff shows how got differs from want, line by line: "-" lines only
// want has, "+" lines only got has, each run headed by its line number in
// want and with a line of context either side.
func LineDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	if len(g)*len(w) > maxDiffCells {
		return setDiff(g, w)
	}
	// lcs[i][j] is the length of the longest common subsequence of w[i:]
	// and g[j:].
	lcs := make([][]int32, len(w)+1)
	for i := range lcs {
		lcs[i] = make([]int32, len(g)+1)
	}
	for i := len(w) - 1; i >= 0; i-- {
		for j := len(g) - 1; j >= 0; j-- {
			if w[i] == g[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type edit struct {
		op   byte // ' ', '-' or '+'
		line string
		at   int // line number in want
	}
	var edits []edit
	i, j := 0, 0
	for i < len(w) || j < len(g) {
		switch {
		case i < len(w) && j < len(g) && w[i] == g[j]:
			edits = append(edits, edit{' ', w[i], i + 1})
			i++
			j++
		case i < len(w) && (j == len(g) || lcs[i+1][j] >= lcs[i][j+1]):
			edits = append(edits, edit{'-', w[i], i + 1})
			i++
		default:
			edits = append(edits, edit{'+', g[j], i + 1})
			j++
		}
	}
	// Show every changed line and one line of context either side.
	show := make([]bool, len(edits))
	for k, e := range edits {
		if e.op != ' ' {
			for x := max(k-1, 0); x <= min(k+1, len(edits)-1); x++ {
				show[x] = true
			}
		}
	}
	var out strings.Builder
	for k, e := range edits {
		if !show[k] {
			continue
		}
		if k == 0 || !show[k-1] {
			fmt.Fprintf(&out, "@@ line %d\n", e.at)
		}
		out.WriteByte(e.op)
		out.WriteString(" " + e.line + "\n")
	}
	return out.String()
}

// setDiff lists the lines only one side has, for inputs too large to align.
func setDiff(g, w []string) string {
	in := func(lines []string) map[string]bool {
		m := make(map[string]bool, len(lines))
		for _, l := range lines {
			m[l] = true
		}
		return m
	}
	inG, inW := in(g), in(w)
	var out strings.Builder
	for _, l := range w {
		if !inG[l] {
			out.WriteString("- " + l + "\n")
		}
	}
	for _, l := range g {
		if !inW[l] {
			out.WriteString("+ " + l + "\n")
		}
	}
	return out.String()
}
