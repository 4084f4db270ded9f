package nftables

// txBuilder collects a transaction's operations in sections that keep the
// order the kernel needs: objects are declared and filled before anything
// refers to them, and removed only after the last reference to them is gone.
type txBuilder struct {
	head     []Op // tables, base chains and maps
	sets     []Op // affinity sets to add
	chains   []Op // chains written (endpoint chains first)
	unmap    []Op // map elements removed
	mapAdd   []Op // map elements added
	flush    []Op // chains emptied before they are deleted
	drop     []Op // chains deleted, once no rule jumps to them
	dropSets []Op // affinity sets deleted, once no rule uses them
	tx       Transaction
}

func (b *txBuilder) sections() []*[]Op {
	return []*[]Op{&b.head, &b.sets, &b.chains, &b.unmap, &b.mapAdd, &b.flush, &b.drop, &b.dropSets}
}

// reset empties the builder, keeping its memory.
func (b *txBuilder) reset(full bool) {
	for _, s := range b.sections() {
		clear(*s)
		*s = (*s)[:0]
	}
	clear(b.tx.Ops)
	b.tx.Full, b.tx.Ops = full, b.tx.Ops[:0]
}

// transaction joins the sections. The transaction is valid until the next
// reset.
func (b *txBuilder) transaction() *Transaction {
	for _, s := range b.sections() {
		b.tx.Ops = append(b.tx.Ops, *s...)
	}
	return &b.tx
}
