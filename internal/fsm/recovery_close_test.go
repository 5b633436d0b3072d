package fsm

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestImportNeedsTheNamedDatabase: a CURRENT naming a database that is not
// there (garbage, a partial copy) fails Open; it imported an empty database
// over the shard's live state (found in review).
func TestImportNeedsTheNamedDatabase(t *testing.T) {
	root := t.TempDir()
	st := openShared(t, filepath.Join(root, "store"))
	defer st.Close()
	dir := filepath.Join(root, "shard-1")
	h := sharedHarness(t, st, 1, dir)
	h.apply(putCmd("a", "1"))
	if err := h.sm.Sync(); err != nil {
		t.Fatal(err)
	}
	_ = h.sm.Close()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, currentFile), []byte("db-5\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	sm := New(dir, Options{Shared: st, Shard: 1})
	if applied, err := sm.Open(nil); err == nil {
		t.Fatalf("Open succeeded (applied %d) with CURRENT naming a missing database", applied)
	}
	_ = sm.Close()
	if err := os.Remove(filepath.Join(dir, currentFile)); err != nil {
		t.Fatal(err)
	}
	h = sharedHarness(t, st, 1, dir)
	if h.idx != 1 || !h.get("a").Found {
		t.Fatalf("the live state was touched: applied %d", h.idx)
	}
	_ = h.sm.Close()
}

type blockingReader struct {
	r       io.Reader
	n       int
	reached chan struct{}
	resume  chan struct{}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if b.n <= 0 && b.reached != nil {
		close(b.reached)
		b.reached = nil
		<-b.resume
	}
	if len(p) > 4096 {
		p = p[:4096]
	}
	n, err := b.r.Read(p)
	b.n -= n
	return n, err
}

// TestCloseDuringRecovery: a Close that comes while RecoverFromSnapshot
// loads waits for the load; with a store of its own the load wrote into a
// closed pebble and panicked (found in review).
func TestCloseDuringRecovery(t *testing.T) {
	src := newHarness(t, Options{})
	fillForSnapshot(src)
	snap := saveSnapshot(t, src.sm)
	dst := newHarness(t, Options{})
	br := &blockingReader{r: bytes.NewReader(snap), n: len(snap) / 2, reached: make(chan struct{}), resume: make(chan struct{})}
	reached := br.reached
	errc := make(chan any, 1)
	go func() {
		defer func() { errc <- recover() }()
		_ = dst.sm.RecoverFromSnapshot(br, nil)
	}()
	<-reached
	closed := make(chan error, 1)
	go func() { closed <- dst.sm.Close() }()
	close(br.resume)
	if p := <-errc; p != nil {
		t.Fatalf("RecoverFromSnapshot panicked after a concurrent Close: %v", p)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}
