package nodelocal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clusterdns/clusterdns/proxy/proxytest"
)

func stockConfig(rules Rules) Config {
	return Config{
		LocalIPs:   []netip.Addr{netip.MustParseAddr("169.254.20.10"), netip.MustParseAddr("10.96.0.10")},
		Interface:  "nodelocaldns",
		DNSPort:    53,
		HealthPort: 8080,
		Rules:      rules,
	}
}

func TestRenderGolden(t *testing.T) {
	v6 := Config{LocalIPs: []netip.Addr{netip.MustParseAddr("fd00::a")}, DNSPort: 53, Rules: RulesIPTables}
	follow := stockConfig(RulesIPTables)
	follow.FollowSocket = true
	cases := []struct {
		name string
		got  []byte
	}{
		{"iptables-follow-socket", RenderIPTables(follow)},
		{"nftables-follow-socket", RenderNFTables(follow)},
		{"iptables-stock", RenderIPTables(stockConfig(RulesIPTables))},
		{"nftables-stock", RenderNFTables(stockConfig(RulesNFTables))},
		{"iptables-ipv6", RenderIPTables(v6)},
		{"nftables-ipv6", RenderNFTables(v6)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { proxytest.Golden(t, tc.name, tc.got) })
	}
}

func TestValidate(t *testing.T) {
	a4, a6 := netip.MustParseAddr("169.254.20.10"), netip.MustParseAddr("fd00::a")
	cases := []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"stock", stockConfig(RulesNFTables), ""},
		{"none", Config{}, "no local IP"},
		{"mixed", Config{LocalIPs: []netip.Addr{a4, a6}, DNSPort: 53, Rules: RulesNone}, "different families"},
		{"port", Config{LocalIPs: []netip.Addr{a4}, DNSPort: 0, Rules: RulesNone}, "DNS port"},
		{"rules", Config{LocalIPs: []netip.Addr{a4}, DNSPort: 53, Rules: "ipvs"}, "unknown rule set"},
	}
	for _, tc := range cases {
		err := tc.cfg.Validate()
		if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// recorder is a Runner that records commands and fails those whose text
// contains a key of fail.
type recorder struct {
	calls []string
	fail  map[string]bool
}

func (r *recorder) Run(_ context.Context, stdin []byte, name string, args ...string) error {
	call := strings.Join(append([]string{name}, args...), " ")
	if stdin != nil {
		call += " <input>"
	}
	r.calls = append(r.calls, call)
	for k := range r.fail {
		if strings.Contains(call, k) {
			return errors.New("fails")
		}
	}
	return nil
}

type fakeLinks struct {
	links map[string][]netip.Addr
	err   error
}

func (f *fakeLinks) Ensure(name string, ips []netip.Addr) (string, error) {
	if f.err != nil {
		return "", f.err
	}
	f.links[name] = ips
	return "ifb", nil
}

func (f *fakeLinks) Delete(name string) error {
	delete(f.links, name)
	return nil
}

// fakeSets records what is done to the lease ipset.
type fakeSets struct {
	ops []string
	err error
}

func (f *fakeSets) Ensure(name string, ipv6 bool) error {
	f.ops = append(f.ops, "ensure "+name)
	return f.err
}

func (f *fakeSets) Renew(name string, ips []netip.Addr, ttl time.Duration) error {
	f.ops = append(f.ops, fmt.Sprintf("renew %s %v %v", name, ips, ttl))
	return f.err
}

func (f *fakeSets) Clear(name string) error {
	f.ops = append(f.ops, "clear "+name)
	return f.err
}

func (f *fakeSets) Destroy(name string) error {
	f.ops = append(f.ops, "destroy "+name)
	return f.err
}

// TestLease follows the lease of the node's own queries through a cache's
// life in each rule set: created with the rules, renewed while alive, kept
// by a periodic sync, ended by StopSteering, removed by Teardown.
func TestLease(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := stockConfig(RulesIPTables)
	cfg.FollowSocket = true
	sets := &fakeSets{}
	a, err := NewAgent(cfg, &recorder{}, &fakeLinks{links: map[string][]netip.Addr{}}, sets, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, step := range []func(context.Context) error{a.Sync, a.Renew, a.StopSteering, a.Teardown} {
		if err := step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"ensure " + leaseSet,
		"renew " + leaseSet + " [169.254.20.10 10.96.0.10] 1s",
		"clear " + leaseSet,
		"destroy " + leaseSet,
	}
	if !slices.Equal(sets.ops, want) {
		t.Errorf("iptables: ipset ops\n%q\nwant\n%q", sets.ops, want)
	}

	cfg.Rules = RulesNFTables
	r := &recorder{}
	a, err = NewAgent(cfg, r, &fakeLinks{links: map[string][]netip.Addr{}}, &fakeSets{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	renew := string(nftRenewLease(cfg))
	if want := "add element inet clusterdns-nodecache clusterdns-nodecache-alive { 169.254.20.10, 10.96.0.10 }\n"; !strings.HasPrefix(renew, want) || strings.Count(renew, "\n") != 3 {
		t.Errorf("nft renewal:\n%s", renew)
	}
	const elems = "elements = { 169.254.20.10, 10.96.0.10 }"
	if !strings.Contains(string(renderNFTables(cfg, true, a.leased)), elems) {
		t.Error("a sync after a renewal drops the lease")
	}
	if err := a.StopSteering(ctx); err != nil {
		t.Fatal(err)
	}
	if a.leased || strings.Contains(string(renderNFTables(cfg, true, a.leased)), elems) {
		t.Error("the lease outlives StopSteering")
	}
	r.fail = map[string]bool{"nft": true}
	if err := a.Renew(ctx); err == nil || a.leased {
		t.Errorf("a failed renewal: error %v, leased %v", err, a.leased)
	}
}

func TestSyncAndTeardownCommands(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cases := []struct {
		name     string
		rules    Rules
		fail     map[string]bool
		sync     []string
		teardown []string
	}{
		{
			name:  "iptables jumps present",
			rules: RulesIPTables,
			sync: []string{
				"iptables-restore --noflush --wait 5 <input>",
				"iptables --wait 5 -t raw -C PREROUTING -j CLUSTERDNS-NODECACHE-PRE",
				"iptables --wait 5 -t raw -C OUTPUT -j CLUSTERDNS-NODECACHE-OUT",
				"iptables --wait 5 -t filter -C INPUT -j CLUSTERDNS-NODECACHE-IN",
				"iptables --wait 5 -t filter -C OUTPUT -j CLUSTERDNS-NODECACHE-OUT",
			},
		},
		{
			name:  "iptables jumps missing are inserted first",
			rules: RulesIPTables,
			fail:  map[string]bool{" -C ": true, " -D ": true, " -L ": true},
			sync: []string{
				"iptables-restore --noflush --wait 5 <input>",
				"iptables --wait 5 -t raw -C PREROUTING -j CLUSTERDNS-NODECACHE-PRE",
				"iptables --wait 5 -t raw -I PREROUTING 1 -j CLUSTERDNS-NODECACHE-PRE",
				"iptables --wait 5 -t raw -C OUTPUT -j CLUSTERDNS-NODECACHE-OUT",
				"iptables --wait 5 -t raw -I OUTPUT 1 -j CLUSTERDNS-NODECACHE-OUT",
				"iptables --wait 5 -t filter -C INPUT -j CLUSTERDNS-NODECACHE-IN",
				"iptables --wait 5 -t filter -I INPUT 1 -j CLUSTERDNS-NODECACHE-IN",
				"iptables --wait 5 -t filter -C OUTPUT -j CLUSTERDNS-NODECACHE-OUT",
				"iptables --wait 5 -t filter -I OUTPUT 1 -j CLUSTERDNS-NODECACHE-OUT",
			},
			// Nothing there: teardown deletes nothing and is no error.
			teardown: []string{
				"iptables --wait 5 -t raw -D PREROUTING -j CLUSTERDNS-NODECACHE-PRE",
				"iptables --wait 5 -t raw -D OUTPUT -j CLUSTERDNS-NODECACHE-OUT",
				"iptables --wait 5 -t filter -D INPUT -j CLUSTERDNS-NODECACHE-IN",
				"iptables --wait 5 -t filter -D OUTPUT -j CLUSTERDNS-NODECACHE-OUT",
				"iptables --wait 5 -t raw -L CLUSTERDNS-NODECACHE-PRE -n",
				"iptables --wait 5 -t raw -L CLUSTERDNS-NODECACHE-OUT -n",
				"iptables --wait 5 -t filter -L CLUSTERDNS-NODECACHE-IN -n",
				"iptables --wait 5 -t filter -L CLUSTERDNS-NODECACHE-OUT -n",
			},
		},
		{
			name:     "nftables",
			rules:    RulesNFTables,
			sync:     []string{"nft -f - <input>"},
			teardown: []string{"nft -f - <input>"},
		},
		{name: "none", rules: RulesNone},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{fail: tc.fail}
			links := &fakeLinks{links: map[string][]netip.Addr{}}
			a, err := NewAgent(stockConfig(tc.rules), r, links, &fakeSets{}, logger)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Sync(context.Background()); err != nil {
				t.Fatalf("sync: %v", err)
			}
			if got := strings.Join(r.calls, "\n"); got != strings.Join(tc.sync, "\n") {
				t.Errorf("sync ran\n%s\nwant\n%s", got, strings.Join(tc.sync, "\n"))
			}
			if len(links.links["nodelocaldns"]) != 2 {
				t.Errorf("sync left links %v", links.links)
			}
			if tc.teardown == nil {
				return
			}
			r.calls = nil
			if err := a.Teardown(context.Background()); err != nil {
				t.Fatalf("teardown: %v", err)
			}
			if got := strings.Join(r.calls, "\n"); got != strings.Join(tc.teardown, "\n") {
				t.Errorf("teardown ran\n%s\nwant\n%s", got, strings.Join(tc.teardown, "\n"))
			}
			if len(links.links) != 0 {
				t.Errorf("teardown left links %v", links.links)
			}
		})
	}
}

// A failing interface does not stop the rules from being synced, and the
// error says what failed.
func TestSyncTriesEveryStep(t *testing.T) {
	r := &recorder{}
	links := &fakeLinks{err: errors.New("no link for you")}
	a, err := NewAgent(stockConfig(RulesNFTables), r, links, &fakeSets{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	err = a.Sync(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no link for you") {
		t.Errorf("sync error %v", err)
	}
	if len(r.calls) != 1 {
		t.Errorf("rules not synced after a link failure: %q", r.calls)
	}
}

// A draining cache stops steering pod queries to itself but keeps its
// answers out of conntrack.
func TestStopSteering(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := &recorder{fail: map[string]bool{" -D ": true}}
	a, err := NewAgent(stockConfig(RulesIPTables), r, &fakeLinks{links: map[string][]netip.Addr{}}, &fakeSets{}, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.StopSteering(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := "iptables --wait 5 -t raw -D PREROUTING -j CLUSTERDNS-NODECACHE-PRE"; strings.Join(r.calls, "\n") != want {
		t.Errorf("iptables: ran %q, want %q", r.calls, want)
	}
	cfg := stockConfig(RulesNFTables)
	cfg.FollowSocket = true
	script := string(renderNFTables(cfg, false, true))
	pre := script[strings.Index(script, "chain prerouting"):strings.Index(script, "chain output")]
	if strings.Contains(pre, "notrack") {
		t.Errorf("draining table still steers:\n%s", pre)
	}
	if !strings.Contains(script, "saddr { 169.254.20.10, 10.96.0.10 } meta l4proto { tcp, udp } th sport 53 notrack") {
		t.Errorf("draining table lost the untracked answers:\n%s", script)
	}
}
