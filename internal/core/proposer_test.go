package core

import "testing"

func TestProposerMark(t *testing.T) {
	var p ProposerIDs
	s1, m1 := p.Begin()
	s2, m2 := p.Begin()
	s3, m3 := p.Begin()
	if s1 != 1 || s2 != 2 || s3 != 3 || m1 != 1 || m2 != 1 || m3 != 1 {
		t.Fatalf("seqs %d %d %d marks %d %d %d", s1, s2, s3, m1, m2, m3)
	}
	p.End(s2) // 1 still outstanding: the mark stays
	if _, m := p.Begin(); m != 1 {
		t.Fatalf("mark %d with seq 1 outstanding", m)
	}
	p.End(s1) // 1 and 2 answered: 3 is the lowest outstanding
	if _, m := p.Begin(); m != 3 {
		t.Fatalf("mark %d, want 3", m)
	}
	p.End(s3)
	p.End(4)
	p.End(5)
	if s, m := p.Begin(); s != 6 || m != 6 {
		t.Fatalf("seq %d mark %d, want 6 6", s, m)
	}
}
