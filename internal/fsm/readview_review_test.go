package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/cockroachdb/pebble"
)

// setPebbleReadOnly flips the store's ReadOnly option in place: pebble's
// Apply then returns ErrReadOnly, a commit error Update returns (the one
// commit error this pebble returns rather than Fatalf; the test stands in
// for any commit that fails with an error).
func setPebbleReadOnly(db *pebble.DB, v bool) {
	f := reflect.ValueOf(db).Elem().FieldByName("opts")
	(*pebble.Options)(unsafe.Pointer(f.Pointer())).ReadOnly = v
}

// failOneCommit runs one Update of h whose b.Commit fails (the entries are
// not applied: h.idx stays).
func failOneCommit(t *testing.T, h *harness) {
	t.Helper()
	db := h.sm.db.st.db
	setPebbleReadOnly(db, true)
	_, err := h.sm.Update([]Entry{{Index: h.idx + 1, Cmd: mustEncode(t, putCmd("k", "lost"))}})
	setPebbleReadOnly(db, false)
	if !errors.Is(err, pebble.ErrReadOnly) {
		t.Fatalf("Update: %v, want a failed commit (pebble.ErrReadOnly)", err)
	}
}

// After a commit that failed, the commit count is even again: left odd
// (as it was), the next successful Update added two, so the count was odd
// at rest and even while that Update's commit was in flight, the reverse
// of what readView relies on (found by review).
func TestReviewCommitCountEvenAtRestAfterFailedCommit(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("k", "0"))
	failOneCommit(t, h)
	h.apply(putCmd("k", "1"))
	if g := h.get("k"); string(g.KV.Value) != "1" || g.KV.ModRevision != g.Revision {
		t.Fatalf("k = %+v at revision %d", g.KV, g.Revision)
	}
	if c := h.sm.commits.Load(); c%2 != 0 {
		t.Fatalf("commit count %d (odd) at rest after a failed commit and a successful Update: readers now take an in-flight commit for a quiet one", c)
	}
}

// The symptom, before the fix: after one failed commit, a Get (or List)
// racing a later Update reported the revision before that Update with the
// key as the Update wrote it ("get: key at mod revision 1697, read
// reported at revision 1696"). A second state machine on the same store commits
// beside it, as the groups of a host do: its committer often publishes
// the target's batch, so the target's Update returns from Commit (and
// stores its revision) a while after its state became visible.
func TestReviewReadRevisionMatchesViewAfterFailedCommit(t *testing.T) {
	root := t.TempDir()
	st := openShared(t, filepath.Join(root, "store"))
	t.Cleanup(func() { _ = st.Close() })
	a := sharedHarness(t, st, 1, filepath.Join(root, "a"))
	b := sharedHarness(t, st, 2, filepath.Join(root, "b"))
	a.apply(putCmd("k", "0"))
	failOneCommit(t, a)

	// Beside: the other group's writes.
	noise := mustEncode(t, putCmd("n", "x"))
	noiseDone := make(chan struct{})
	var noiseWG sync.WaitGroup
	noiseWG.Add(1)
	go func() {
		defer noiseWG.Done()
		for i := b.idx + 1; ; i++ {
			select {
			case <-noiseDone:
				return
			default:
			}
			if _, err := b.sm.Update([]Entry{{Index: i, Cmd: noise}}); err != nil {
				t.Errorf("b: %v", err)
				return
			}
		}
	}()
	defer func() {
		close(noiseDone)
		noiseWG.Wait()
	}()
	reads, stop := readConsistently(t, a.sm)
	deadline := time.Now().Add(3 * time.Second)
	n := 0
	for ; n < 200_000 && !t.Failed() && time.Now().Before(deadline); n++ {
		a.applyRaw(mustEncode(t, putCmd("k", fmt.Sprint(n))))
	}
	stop()
	t.Logf("%d reads beside %d updates", reads.Load(), n)
}

// The legacy path: entries of the previous codec keep revisions that are
// their indexes and no revision key is written (counting false); reads
// beside them report the index of the state they read.
func TestReviewLegacyIndexRevisionsMatchView(t *testing.T) {
	h := newHarness(t, Options{})
	h.applyRaw(v1Put("k", "0"))
	reads, stop := readConsistently(t, h.sm)
	for i := 0; i < 3000 && !t.Failed(); i++ {
		h.applyRaw(v1Put("k", fmt.Sprint(i)), v1Put("k", "b"))
	}
	stop()
	if h.sm.counting {
		t.Fatal("counting after entries of the previous codec only")
	}
	if g := h.get("k"); g.Revision != int64(h.idx) || g.KV.ModRevision != int64(h.idx) {
		t.Fatalf("get at revision %d (key at %d), want the index %d", g.Revision, g.KV.ModRevision, h.idx)
	}
	t.Logf("%d reads", reads.Load())
}

// Snapshot recoveries (the state jumps to another revision, backwards as
// well as forwards, without an Update) and Updates after each, then
// Close, all beside reads.
func TestReviewRecoverAndCloseRacingReads(t *testing.T) {
	src := newHarness(t, Options{})
	var snaps [][]byte
	for range 3 {
		for range 40 {
			src.apply(putCmd("k", "s"))
		}
		snaps = append(snaps, saveSnapshot(t, src.sm))
	}
	dst := newHarness(t, Options{})
	dst.apply(putCmd("k", "d"))
	reads, stop := readConsistently(t, dst.sm)
	for i := 0; i < 150 && !t.Failed(); i++ {
		if err := dst.sm.RecoverFromSnapshot(bytes.NewReader(snaps[i%len(snaps)]), nil); err != nil {
			t.Fatal(err)
		}
		dst.idx = dst.sm.Applied()
		for range 5 {
			dst.apply(putCmd("k", "u"))
		}
	}
	// Close under the readers: they end with errs.Closed.
	if err := dst.sm.Close(); err != nil {
		t.Fatal(err)
	}
	stop()
	t.Logf("%d reads", reads.Load())
}
