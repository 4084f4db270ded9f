package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// NFTCount is what one nftables table holds, read from `nft -j list table`.
type NFTCount struct {
	Chains, Rules int
	// Elements counts the elements of the table's named sets and maps and
	// of the anonymous ones written inside its rules
	// (`numgen random mod 3 vmap { 0 : goto a, ... }`): each does the work
	// a rule of its own would do in a layout without sets.
	Elements int
}

// nftObject is one entry of `nft -j list` output: exactly one of its fields
// is set. Rules and set bodies are kept raw and walked only when needed.
type nftObject struct {
	Chain json.RawMessage `json:"chain"`
	Rule  *struct {
		Expr []any `json:"expr"`
	} `json:"rule"`
	Set *nftSet `json:"set"`
	Map *nftSet `json:"map"`
}

type nftSet struct {
	Elem []any `json:"elem"`
}

func parseNFT(listing []byte) ([]nftObject, error) {
	var doc struct {
		Objects []nftObject `json:"nftables"`
	}
	if err := json.Unmarshal(listing, &doc); err != nil {
		return nil, fmt.Errorf("nft -j listing: %w", err)
	}
	return doc.Objects, nil
}

// CountNFT counts the chains, rules and set elements of a table listed
// with `nft -j list table FAMILY NAME`.
func CountNFT(listing []byte) (NFTCount, error) {
	objects, err := parseNFT(listing)
	if err != nil {
		return NFTCount{}, err
	}
	var c NFTCount
	for _, o := range objects {
		switch {
		case o.Chain != nil:
			c.Chains++
		case o.Rule != nil:
			c.Rules++
			c.Elements += anonymousElements(o.Rule.Expr)
		case o.Set != nil:
			c.Elements += len(o.Set.Elem)
		case o.Map != nil:
			c.Elements += len(o.Map.Elem)
		}
	}
	return c, nil
}

// anonymousElements counts the elements of the anonymous sets and maps in
// a rule's expressions: the lists under a "set" key. (A named set is
// referred to as "@name", and a statement that adds to one holds an object
// there, not a list.)
func anonymousElements(v any) int {
	n := 0
	switch v := v.(type) {
	case []any:
		for _, x := range v {
			n += anonymousElements(x)
		}
	case map[string]any:
		for k, x := range v {
			if list, ok := x.([]any); ok && k == "set" {
				n += len(list)
				continue
			}
			n += anonymousElements(x)
		}
	}
	return n
}

// NFTDNATs reports whether a table listed with `nft -j list table` sends
// traffic to addr: addr appears in a rule with a dnat statement (written
// in the rule, or in an anonymous map inside it) or among the elements
// of a named map, which a dnat rule looks up.
func NFTDNATs(listing []byte, addr string) (bool, error) {
	quoted, err := json.Marshal(addr)
	if err != nil {
		return false, err
	}
	if !bytes.Contains(listing, quoted) {
		return false, nil
	}
	objects, err := parseNFT(listing)
	if err != nil {
		return false, err
	}
	for _, o := range objects {
		switch {
		case o.Rule != nil:
			if mentions(o.Rule.Expr, "dnat") && mentions(o.Rule.Expr, addr) {
				return true, nil
			}
		case o.Map != nil:
			if mentions(o.Map.Elem, addr) {
				return true, nil
			}
		}
	}
	return false, nil
}

// mentions reports whether s is a key or a string value anywhere in v.
func mentions(v any, s string) bool {
	switch v := v.(type) {
	case string:
		return v == s
	case []any:
		for _, x := range v {
			if mentions(x, s) {
				return true
			}
		}
	case map[string]any:
		for k, x := range v {
			if k == s || mentions(x, s) {
				return true
			}
		}
	}
	return false
}
