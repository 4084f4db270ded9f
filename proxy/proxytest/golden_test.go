package proxytest

import "testing"

func TestLineDiff(t *testing.T) {
	cases := []struct{ got, want, diff string }{
		{"a\nb\nc", "a\nb\nc", ""},
		{"a\nB\nc\nd\ne\nf", "a\nb\nc\nd\ne\nf", "@@ line 1\n  a\n- b\n+ B\n  c\n"},
		{"a\nb\nc\nd\ne\nf\nx", "a\nb\nc\nd\ne\nf", "@@ line 6\n  f\n+ x\n"},
		{"b\nc", "a\nb\nc", "@@ line 1\n- a\n  b\n"},
	}
	for _, tc := range cases {
		if got := LineDiff(tc.got, tc.want); got != tc.diff {
			t.Errorf("LineDiff(%q, %q) =\n%s\nwant\n%s", tc.got, tc.want, got, tc.diff)
		}
	}
}
