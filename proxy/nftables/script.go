package nftables

import "bytes"

// script is an nft script being written. Its sections keep the order the
// kernel needs inside one transaction: objects are declared and filled
// before anything refers to them, and removed only after the last reference
// to them is gone.
type script struct {
	head     bytes.Buffer // tables, base chains and maps
	sets     bytes.Buffer // affinity sets to add
	chains   bytes.Buffer // chains written (endpoint chains first)
	unmap    bytes.Buffer // map elements removed
	mapAdd   bytes.Buffer // map elements added
	flush    bytes.Buffer // chains emptied before they are deleted
	drop     bytes.Buffer // chains deleted, once no rule jumps to them
	dropSets bytes.Buffer // affinity sets deleted, once no rule uses them
	cur      *bytes.Buffer
	out      bytes.Buffer
}

func (s *script) reset() {
	for _, b := range []*bytes.Buffer{&s.head, &s.sets, &s.chains, &s.unmap, &s.mapAdd, &s.flush, &s.drop, &s.dropSets, &s.out} {
		b.Reset()
	}
	s.cur = &s.head
}

// to directs the following lines to a section.
func (s *script) to(b *bytes.Buffer) *script {
	s.cur = b
	return s
}

// line writes one line made of parts.
func (s *script) line(parts ...string) {
	for _, p := range parts {
		s.cur.WriteString(p)
	}
	s.cur.WriteByte('\n')
}

// bytes joins the sections; it returns nil when the script is empty.
func (s *script) bytes() []byte {
	for _, b := range []*bytes.Buffer{&s.head, &s.sets, &s.chains, &s.unmap, &s.mapAdd, &s.flush, &s.drop, &s.dropSets} {
		s.out.Write(b.Bytes())
	}
	if s.out.Len() == 0 {
		return nil
	}
	return s.out.Bytes()
}
