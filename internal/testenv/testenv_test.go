package testenv

import (
	"errors"
	"flag"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// recorder stands in for the test Require decides for, and records how it
// ended.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// decide runs Require on a recorder in a goroutine of its own, as Skipf and
// Fatalf end the goroutine that calls them.
func decide(needs ...Need) *recorder {
	r := &recorder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Require(r, needs...)
	}()
	<-done
	return r
}

// setShort sets -short for the rest of the test.
func setShort(t *testing.T, short bool) {
	f := flag.Lookup("test.short")
	old := f.Value.String()
	if err := f.Value.Set(fmt.Sprint(short)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Value.Set(old) })
}

func TestRequire(t *testing.T) {
	here := Need{What: "here", Check: func() error { return nil }}
	gone := Need{What: "gone", Check: func() error { return errors.New("not built") }}
	tests := []struct {
		name     string
		short    bool
		needs    []Need
		wantSkip []string // substrings of the skip message; nil: no skip
		wantFail []string // substrings of the failure; nil: no failure
	}{
		{name: "all there", needs: []Need{here, here}},
		{name: "missing fails", needs: []Need{here, gone}, wantFail: []string{"missing gone: not built.", "make unit"}},
		{name: "short skips what is there", short: true, needs: []Need{here}, wantSkip: []string{"needs here", "-short"}},
		{name: "short skips what is missing", short: true, needs: []Need{here, gone}, wantSkip: []string{"needs here, gone"}},
		{name: "missing tool", needs: []Need{Tools("sh", "clusterdns-no-such-tool")}, wantFail: []string{"not in PATH: clusterdns-no-such-tool"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setShort(t, tt.short)
			r := decide(tt.needs...)
			check := func(what, got string, want []string) {
				if want == nil {
					if got != "" {
						t.Errorf("%s: %q, want none", what, got)
					}
					return
				}
				for _, w := range want {
					if !strings.Contains(got, w) {
						t.Errorf("%s: %q, want it to contain %q", what, got, w)
					}
				}
			}
			check("skip", r.skipped, tt.wantSkip)
			check("failure", r.failed, tt.wantFail)
		})
	}
}
