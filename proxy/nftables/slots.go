package nftables

import (
	"hash/fnv"
	"math/bits"
)

// The endpoints map holds the endpoints of every list a service port
// chooses from without affinity, each list in a block of consecutive slots
// (keys); its rule draws `numgen random mod n offset <block start>`. A block
// holds a power of two slots, at least as many as the list has endpoints,
// so that a list growing or shrinking within its block changes only map
// elements and its one rule, never the block.

// block is a run of slots of the endpoints map.
type block struct {
	offset uint32
	size   uint32
}

// roleBlock is the block of one of a port's lists: "service", "external"
// or "cluster".
type roleBlock struct {
	role string
	block
}

// slotAlloc hands out blocks of slots. Freed blocks are kept by size and
// handed out again before new slots are taken. It belongs to one family's
// table and starts over whenever the maps are emptied (a full sync).
//
// The slots of a protocol are spread over shards maps, each port's in the
// map its name hashes to. Every rule that reads a map is bound to it, and
// the kernel walks the map's bindings when it binds one more: with one map
// for all, a full sync of 50,000 Services took five minutes. Full syncs
// choose the number of shards (never fewer than before, as the maps stay),
// so that each holds a few hundred lists.
type slotAlloc struct {
	next   uint32
	free   map[uint32][]uint32 // offsets of free blocks, by size
	shards int
}

// portsPerShard is about how many service ports share an endpoints map.
const portsPerShard = 512

// setShards sizes the shards for ports service ports: a power of two, and
// not fewer than there are.
func (a *slotAlloc) setShards(ports int) {
	n := 1
	for n*portsPerShard < ports {
		n *= 2
	}
	a.shards = max(a.shards, n)
}

// shard is the shard of the port with this id.
func (a *slotAlloc) shard(id string) int {
	if a.shards <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(a.shards))
}

// get returns a block of at least n slots.
func (a *slotAlloc) get(n int) block {
	size := uint32(1)
	if n > 1 {
		size = 1 << bits.Len32(uint32(n-1))
	}
	if l := a.free[size]; len(l) > 0 {
		off := l[len(l)-1]
		a.free[size] = l[:len(l)-1]
		return block{off, size}
	}
	b := block{a.next, size}
	a.next += size
	return b
}

// put frees a block.
func (a *slotAlloc) put(b block) {
	if a.free == nil {
		a.free = make(map[uint32][]uint32)
	}
	a.free[b.size] = append(a.free[b.size], b.offset)
}

// reset forgets every block: the map was emptied.
func (a *slotAlloc) reset() {
	a.next = 0
	clear(a.free)
}

// blockFor returns the block of prev for role when it holds n slots, or a
// new one from a.
func blockFor(prev []roleBlock, role string, n int, a *slotAlloc) block {
	for _, b := range prev {
		if b.role == role && int(b.size) >= n {
			return b.block
		}
	}
	return a.get(n)
}
