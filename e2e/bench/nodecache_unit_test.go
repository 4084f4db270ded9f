package bench

import (
	"strings"
	"testing"
)

func TestNodecacheCorefile(t *testing.T) {
	stock, err := StockNodecacheCorefile("../../deploy/nodecache/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := NodecacheCorefile(stock, "127.0.20.10", "127.0.20.11", "127.0.0.1:5353")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"cluster.local:53 {",
		"bind 127.0.20.10 127.0.20.11",
		"forward . 127.0.0.1:5353 {\n            force_tcp",
		"forward . 127.0.0.1:5353\n",
		"health 127.0.20.10:8080",
		"prometheus 127.0.20.10:9253",
		"success 9984 30",
	} {
		if !strings.Contains(cf, want) {
			t.Errorf("corefile lacks %q:\n%s", want, cf)
		}
	}
	if n := strings.Count(cf, "bind 127.0.20.10 127.0.20.11"); n != 4 {
		t.Errorf("%d bind lines moved to loopback, want the 4 blocks'", n)
	}
	if _, err := NodecacheCorefile("forward . __PILLAR__DNS__SERVER__\n", "127.0.20.10", "127.0.20.11", "127.0.0.1:53"); err == nil {
		t.Error("a placeholder left unfilled was accepted")
	}
}
