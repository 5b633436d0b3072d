package dister_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

func TestTokenFileParse(t *testing.T) {
	dir := t.TempDir()
	for _, bad := range []string{
		"",                       // no token at all
		"# only a comment\n\n",   // still none
		"reader tok\n",           // unknown role
		"read\n",                 // no token
		"read tok g1 g2\n",       // groups are one comma-separated field
		"read tok g1,,g2\n",      // empty group name
		"read tok\nwrite tok\n",  // the same token twice
		"admin a\nread b\nwrite", // a bad last line
	} {
		f := filepath.Join(dir, "bad")
		if err := os.WriteFile(f, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := dister.LoadTokens(f, nil, testcluster.Logger()); !errors.Is(err, dister.ErrInvalid) {
			t.Errorf("%q: err %v, want ErrInvalid", bad, err)
		}
	}
	// Fields swapped: the error names the line, not the token.
	f := filepath.Join(dir, "swapped")
	if err := os.WriteFile(f, []byte("read r\nS3CRET admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := dister.LoadTokens(f, nil, nil); err == nil || strings.Contains(err.Error(), "S3CRET") || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("swapped fields: %v", err)
	}
	if _, err := dister.LoadTokens(filepath.Join(dir, "missing"), nil, nil); err == nil || errors.Is(err, dister.ErrInvalid) {
		t.Errorf("missing file: err %v, want a file error", err)
	}
	f = filepath.Join(dir, "ok")
	if err := os.WriteFile(f, []byte("# comment\n\n  READ r1\nwrite w1 a,b\t\nadmin A1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts, err := dister.LoadTokens(f, map[string]dister.Grant{"single": {Access: dister.AccessAdmin}}, testcluster.Logger())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		token string
		need  dister.Access
		group string
		ok    bool
	}{
		{"r1", dister.AccessRead, "x", true},
		{"r1", dister.AccessRead, "", true},
		{"r1", dister.AccessWrite, "x", false},
		{"w1", dister.AccessWrite, "a", true},
		{"w1", dister.AccessWrite, "b", true},
		{"w1", dister.AccessWrite, "c", false},
		{"w1", dister.AccessRead, "", false}, // cluster-wide, limited token
		{"w1", dister.AccessAdmin, "a", false},
		{"A1", dister.AccessAdmin, "", true},
		{"single", dister.AccessAdmin, "", true},
		{"r", dister.AccessRead, "x", false},
		{"r1 ", dister.AccessRead, "x", false},
		{"", dister.AccessRead, "x", false},
		{"comment", dister.AccessRead, "x", false},
	} {
		err := ts.Authorize(c.token, c.need, c.group)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, dister.ErrForbidden)) {
			t.Errorf("Authorize(%q, %v, %q) = %v, want ok=%v", c.token, c.need, c.group, err, c.ok)
		}
	}
}

// The set follows the file: a change takes effect without a restart, and a
// file that no longer parses leaves the previous set in force.
func TestTokenFileReload(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tokens")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(f, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("read aaaa\n")
	ts, err := dister.LoadTokens(f, nil, testcluster.Logger())
	if err != nil {
		t.Fatal(err)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("the token file change was not picked up: %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Same size, same second: content is compared, not the time stamp.
	write("read bbbb\n")
	waitFor("bbbb in", func() bool { _, ok := ts.Lookup("bbbb"); return ok })
	if _, ok := ts.Lookup("aaaa"); ok {
		t.Fatal("removed token still accepted")
	}
	write("read bbbb\nbogus cccc\n")
	// A bad file is refused; wait until a reread certainly happened by
	// writing a good marker after it would have.
	time.Sleep(1100 * time.Millisecond)
	if _, ok := ts.Lookup("cccc"); ok {
		t.Fatal("token of a refused file accepted")
	}
	if g, ok := ts.Lookup("bbbb"); !ok || g.Access != dister.AccessRead {
		t.Fatalf("a refused file dropped the set in force: %v %v", g, ok)
	}
	write("admin cccc g\n")
	waitFor("cccc in", func() bool { g, ok := ts.Lookup("cccc"); return ok && g.Access == dister.AccessAdmin })
}
