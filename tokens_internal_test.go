package dister

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestTokenFileHalfWrittenLineNotLoaded: a reload that catches the token
// file being rewritten, cut in the middle of a line ("write T1" of
// "write T1 t1"), must not take the cut line for a token limited to no
// group: the grant in force stays until the file is seen complete (its
// last line ended) or unchanged at the next look.
func TestTokenFileHalfWrittenLineNotLoaded(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tokens")
	write := func(s string) {
		if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("admin A\nwrite T1 t1\n")
	tokens, err := LoadTokens(f, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	look := func() Grant {
		tokens.nextCheck.Store(0) // the next Lookup rereads the file
		g, _ := tokens.Lookup("T1")
		return g
	}
	// The rewrite (adding group t2) caught after "write T1".
	write("admin A\nwrite T1")
	if g := look(); !g.Limited() {
		t.Fatalf("a line cut before its groups made T1 a token for every group: %+v", g)
	}
	write("admin A\nwrite T1 t1,t2\n")
	if g := look(); !slices.Equal(g.Groups, []string{"t1", "t2"}) {
		t.Fatalf("the completed file: T1 has %+v, want groups t1,t2", g)
	}
	// A file whose last line has no newline (as some editors write it) is
	// taken once seen unchanged at the next look.
	write("admin A\nwrite T1 t3")
	look()
	if g := look(); !slices.Equal(g.Groups, []string{"t3"}) {
		t.Fatalf("a stable file without a final newline: T1 has %+v, want group t3", g)
	}
}
