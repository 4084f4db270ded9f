package nftables

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// drawRule matches a rule's draw from the endpoints map as nft lists it.
var drawRule = regexp.MustCompile(`numgen random mod (\d+)(?: offset (\d+))? map @` + mapEndpoints + `([\w-]+)`)

// resolveSlots rewrites a table listing (the fake's dump, or the kernel's
// put in its order) so that it no longer depends on which slots of the
// endpoints map the lists took, which follows from the order of past
// syncs: each draw lists the targets of its slots in slot order, and the
// map goes. Each table of the listing has a map of its own.
func resolveSlots(t testing.TB, listing string) string {
	t.Helper()
	var tables []string
	for _, line := range strings.SplitAfter(listing, "\n") {
		if strings.HasPrefix(line, "table ") || len(tables) == 0 {
			tables = append(tables, "")
		}
		tables[len(tables)-1] += line
	}
	for i := range tables {
		tables[i] = resolveTable(t, tables[i])
	}
	return strings.Join(tables, "")
}

func resolveTable(t testing.TB, listing string) string {
	t.Helper()
	slots := map[string]string{} // by "map slot"
	var out []string
	var inMap string
	for _, line := range strings.Split(listing, "\n") {
		switch {
		case strings.HasPrefix(line, "\tmap "+mapEndpoints):
			inMap = strings.TrimSuffix(strings.TrimPrefix(line, "\tmap "), " {")
			continue
		case inMap != "" && line == "\t}":
			inMap = ""
			continue
		case inMap != "" && strings.HasPrefix(strings.TrimSpace(line), "typeof "):
			continue
		case inMap != "":
			line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "elements = {"))
			for _, e := range strings.Split(strings.TrimSuffix(line, "}"), ",") {
				key, target, ok := strings.Cut(strings.TrimSpace(e), " : ")
				if !ok {
					continue
				}
				if _, err := strconv.Atoi(key); err != nil {
					t.Fatalf("endpoints map element %q", e)
				}
				slots[inMap+" "+key] = strings.ReplaceAll(target, " . ", ":")
			}
			continue
		}
		out = append(out, line)
	}
	text := strings.Join(out, "\n")
	// The maps' blocks leave blank lines where they were.
	for strings.Contains(text, "\n\n\n") || strings.Contains(text, "{\n\n") {
		text = strings.ReplaceAll(strings.ReplaceAll(text, "\n\n\n", "\n\n"), "{\n\n", "{\n")
	}
	return drawRule.ReplaceAllStringFunc(text, func(m string) string {
		sub := drawRule.FindStringSubmatch(m)
		mod, _ := strconv.Atoi(sub[1])
		off, _ := strconv.Atoi(sub[2])
		targets := make([]string, mod)
		for i := range targets {
			targets[i] = slots[mapEndpoints+sub[3]+" "+strconv.Itoa(off+i)]
			if targets[i] == "" {
				targets[i] = "missing"
			}
		}
		return "one of { " + strings.Join(targets, ", ") + " }"
	})
}

func TestSlotAllocReusesFreedBlocks(t *testing.T) {
	var a slotAlloc
	for _, tc := range []struct {
		n    int
		want block
	}{{1, block{0, 1}}, {3, block{1, 4}}, {4, block{5, 4}}, {5, block{9, 8}}} {
		if got := a.get(tc.n); got != tc.want {
			t.Fatalf("get(%d) = %+v, want %+v", tc.n, got, tc.want)
		}
	}
	a.put(block{1, 4})
	if got := a.get(2); got != (block{9 + 8, 2}) {
		t.Errorf("get(2) = %+v, want a new block of 2 (the free one is of 4)", got)
	}
	if got := a.get(3); got != (block{1, 4}) {
		t.Errorf("get(3) = %+v, want the freed block at 1", got)
	}
	a.reset()
	if got := a.get(1); got != (block{0, 1}) {
		t.Errorf("after reset get(1) = %+v, want slot 0", got)
	}
}

func TestSlotAllocShards(t *testing.T) {
	var a slotAlloc
	for _, tc := range []struct{ ports, want int }{{0, 1}, {512, 1}, {513, 2}, {3000, 8}, {100, 8}} {
		a.setShards(tc.ports)
		if a.shards != tc.want {
			t.Errorf("after setShards(%d): %d shards, want %d (never fewer than before)", tc.ports, a.shards, tc.want)
		}
	}
	seen := map[int]bool{}
	for i := range 200 {
		k := a.shard("ns/svc-" + strconv.Itoa(i) + "/80/tcp/IPv4")
		if k < 0 || k >= a.shards {
			t.Fatalf("shard %d of %d", k, a.shards)
		}
		seen[k] = true
	}
	if len(seen) != a.shards {
		t.Errorf("200 ports used %d of %d shards", len(seen), a.shards)
	}
}
