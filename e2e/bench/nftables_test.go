package bench

import "testing"

// probeListing is `nft -j list table ip probe` (nft 1.0.6) of:
//
//	table ip probe {
//		map svc { type ipv4_addr . inet_proto . inet_service : verdict; elements = { 10.96.0.1 . tcp . 443 : goto svc-a } }
//		set ips { type ipv4_addr; elements = { 10.0.0.1, 10.0.0.2 } }
//		chain ep-1 { meta l4proto tcp dnat to 10.1.2.3:80 }
//		chain ep-2 { meta l4proto tcp dnat to 10.1.2.4:80 }
//		chain svc-a { numgen random mod 2 vmap { 0 : goto ep-1, 1 : goto ep-2 } }
//		chain nat-pre { type nat hook prerouting priority dstnat; ip daddr . meta l4proto . th dport vmap @svc;
//			ip saddr { 10.9.0.1, 10.9.0.2, 10.9.0.3 } counter accept }
//	}
const probeListing = `{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "probe", "handle": 1}}, {"map": {"family": "ip", "name": "svc", "table": "probe", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 5, "map": "verdict", "elem": [[{"concat": ["10.96.0.1", "tcp", 443]}, {"goto": {"target": "svc-a"}}]]}}, {"set": {"family": "ip", "name": "ips", "table": "probe", "type": "ipv4_addr", "handle": 6, "elem": ["10.0.0.1", "10.0.0.2"]}}, {"chain": {"family": "ip", "table": "probe", "name": "ep-1", "handle": 1}}, {"chain": {"family": "ip", "table": "probe", "name": "ep-2", "handle": 2}}, {"chain": {"family": "ip", "table": "probe", "name": "svc-a", "handle": 3}}, {"chain": {"family": "ip", "table": "probe", "name": "nat-pre", "handle": 4, "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}}, {"rule": {"family": "ip", "table": "probe", "chain": "ep-1", "handle": 7, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"dnat": {"addr": "10.1.2.3", "port": 80}}]}}, {"rule": {"family": "ip", "table": "probe", "chain": "ep-2", "handle": 8, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"dnat": {"addr": "10.1.2.4", "port": 80}}]}}, {"rule": {"family": "ip", "table": "probe", "chain": "svc-a", "handle": 10, "expr": [{"vmap": {"key": {"numgen": {"mode": "random", "mod": 2, "offset": 0}}, "data": {"set": [[0, {"goto": {"target": "ep-1"}}], [1, {"goto": {"target": "ep-2"}}]]}}}]}}, {"rule": {"family": "ip", "table": "probe", "chain": "nat-pre", "handle": 11, "expr": [{"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@svc"}}]}}, {"rule": {"family": "ip", "table": "probe", "chain": "nat-pre", "handle": 13, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"set": ["10.9.0.1", "10.9.0.2", "10.9.0.3"]}}}, {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}}]}`

// dnatMapListing has the endpoints in a named map a dnat rule looks up.
const dnatMapListing = `{"nftables": [{"map": {"family": "ip", "name": "eps", "table": "t", "type": "mark", "map": ["ipv4_addr", "inet_service"], "elem": [[1, {"concat": ["10.1.2.5", 80]}]]}}, {"rule": {"family": "ip", "table": "t", "chain": "c", "expr": [{"dnat": {"addr": {"map": {"key": {"meta": {"key": "mark"}}, "data": "@eps"}}, "family": "ip"}}]}}, {"rule": {"family": "ip", "table": "t", "chain": "c", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.1.2.6"}}, {"accept": null}]}}]}`

func TestCountNFT(t *testing.T) {
	got, err := CountNFT([]byte(probeListing))
	if err != nil {
		t.Fatal(err)
	}
	// 1 map element + 2 set elements + 2 in the numgen vmap + 3 in the saddr set.
	if want := (NFTCount{Chains: 4, Rules: 5, Elements: 8}); got != want {
		t.Errorf("CountNFT = %+v, want %+v", got, want)
	}
	if _, err := CountNFT([]byte("table ip probe {")); err == nil {
		t.Error("CountNFT of text output: no error")
	}
}

func TestNFTDNATs(t *testing.T) {
	for _, c := range []struct {
		listing, addr string
		want          bool
	}{
		{probeListing, "10.1.2.3", true},
		{probeListing, "10.1.2.4", true},
		{probeListing, "10.1.2.30", false},
		{probeListing, "10.9.0.1", false}, // in a rule, but not a dnat one
		{probeListing, "10.0.0.1", false}, // in a set, not a map
		{dnatMapListing, "10.1.2.5", true},
		{dnatMapListing, "10.1.2.6", false},
	} {
		got, err := NFTDNATs([]byte(c.listing), c.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("NFTDNATs(%s) = %v, want %v", c.addr, got, c.want)
		}
	}
}
