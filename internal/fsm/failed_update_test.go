package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
)

// What an Update that failed, a recovery, a reopen and large deletes leave
// for the next Update (cases from an adversarial review).

// reviewShared opens a store closed after every state machine on it.
func reviewShared(t *testing.T, dir string) *Shared {
	t.Helper()
	st := openShared(t, dir)
	t.Cleanup(func() { _ = st.Close() }) // runs after the harnesses' cleanups
	return st
}

// lastEvent is the newest event of h.
func lastEvent(t *testing.T, h *harness) Event {
	t.Helper()
	evs := h.allEvents(h.sm.CompactRevision())
	if len(evs) == 0 {
		t.Fatal("no events")
	}
	return evs[len(evs)-1]
}

// TestRealErrorMidUpdate: an Update that fails on a storage error (a
// corrupt record met by a prefix delete) after a put of the same Update:
// the next Update must not see the dropped put.
func TestRealErrorMidUpdate(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("a", "1"))
	// A corrupt record, out of band.
	corrupt := appendUserKey(nil, "zz")
	if err := h.sm.store.db.Set(h.sm.db.key(new([]byte), corrupt), []byte{9, 9}, nil); err != nil {
		t.Fatal(err)
	}
	entries := []Entry{
		{Index: h.idx + 1, Cmd: mustEncode(t, putCmd("a", "2"))},
		{Index: h.idx + 2, Cmd: mustEncode(t, delPrefixCmd("z"))},
	}
	if _, err := h.sm.Update(entries); err == nil {
		t.Fatal("Update over a corrupt record did not fail")
	}
	if err := h.sm.db.Delete(corrupt, nil); err != nil {
		t.Fatal(err)
	}
	h.apply(putCmd("a", "3"))
	g := h.get("a")
	if g.KV.Version != 2 || string(g.KV.Value) != "3" {
		t.Fatalf("a = %+v, want version 2 (the failed Update's put is not applied)", g.KV)
	}
	if ev := lastEvent(t, h); ev.Prev == nil || string(ev.Prev.Value) != "1" {
		t.Fatalf("previous entry %+v, want 1", ev.Prev)
	}
}

// TestFailedUpdateRetried: the very entries of a failed Update applied
// again on the same state machine.
func TestFailedUpdateRetried(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("k", "v1"))
	entries := func() []Entry {
		return []Entry{
			{Index: h.idx + 1, Cmd: mustEncode(t, putCmd("k", "v2"))},
			{Index: h.idx + 2, Cmd: mustEncode(t, delCmd("k"))},
			{Index: h.idx + 3, Cmd: mustEncode(t, putCmd("k", "v3"))},
		}
	}
	h.sm.failCommit = fmt.Errorf("disk gone")
	if _, err := h.sm.Update(entries()); err == nil {
		t.Fatal("Update did not fail")
	}
	h.sm.failCommit = nil
	if _, err := h.sm.Update(entries()); err != nil {
		t.Fatal(err)
	}
	h.idx += 3
	g := h.get("k")
	if g.KV.Version != 1 || string(g.KV.Value) != "v3" {
		t.Fatalf("k = %+v, want v3 version 1 (recreated)", g.KV)
	}
}

// TestRevokeThenPutInOneUpdate: a put with a lease, the lease revoked
// (expired) in the same Update, then a put: it creates the key anew.
func TestRevokeThenPutInOneUpdate(t *testing.T) {
	h := newHarness(t, Options{})
	h.applyLease(grantCmd(7, 10_000))
	h.apply(putLeaseCmd("k", "v1", 7))
	raw := encodeAll(t, putLeaseCmd("k", "v2", 7), revokeCmd(true, 7), putCmd("k", "v3"))
	h.applyRaw(raw...)
	g := h.get("k")
	if !g.Found || g.KV.Version != 1 || g.KV.Lease != 0 || string(g.KV.Value) != "v3" {
		t.Fatalf("k = %+v, want v3 at version 1 without a lease", g.KV)
	}
	if ev := lastEvent(t, h); ev.Prev != nil {
		t.Fatalf("the put after the revoke has a previous entry %+v", ev.Prev)
	}
	checkLeaseIndex(t, h.sm)
}

// TestCmdBufferReused: the decoded op's value aliases the entry's Cmd,
// which belongs to dragonboat and is reused after Update; the stored
// record must not change with it.
func TestCmdBufferReused(t *testing.T) {
	h := newHarness(t, Options{})
	cmd := mustEncode(t, putCmd("k", "original"))
	h.idx++
	if _, err := h.sm.Update([]Entry{{Index: h.idx, Cmd: cmd}}); err != nil {
		t.Fatal(err)
	}
	// Scribble over the command buffer, as a reused buffer would.
	i := bytes.Index(cmd, []byte("original"))
	copy(cmd[i:], "XXXXXXXX")
	h.apply(txnCmd(0, 0, &Txn{
		Compares: []Compare{{Key: "k", Target: TargetValue, Op: OpEqual, Value: []byte("original")}},
		Then:     []Op{{Type: OpPut, Key: "k", Value: []byte("next")}},
	}))
	if g := h.get("k"); string(g.KV.Value) != "next" {
		t.Fatalf("compare read a changed value: k = %q", g.KV.Value)
	}
	if ev := lastEvent(t, h); ev.Prev == nil || string(ev.Prev.Value) != "original" {
		t.Fatalf("previous entry %+v, want original", ev.Prev)
	}
}

// TestRecoverOwnOlderSnapshot: a replica goes back to an older snapshot
// of its own (keys it deleted, keys it created since): the next puts
// count from the snapshot's records.
func TestRecoverOwnOlderSnapshot(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("a", "a1"), putCmd("b", "b1"))
	snap := saveSnapshot(t, h.sm)
	h.apply(putCmd("a", "a2"), delCmd("b"), putCmd("c", "c1"))
	if err := h.sm.RecoverFromSnapshot(bytes.NewReader(snap), nil); err != nil {
		t.Fatal(err)
	}
	h.idx = h.sm.Applied()
	h.apply(putCmd("a", "a3"), putCmd("b", "b2"), putCmd("c", "c2"))
	for k, want := range map[string]int64{"a": 2, "b": 2, "c": 1} {
		if g := h.get(k); g.KV.Version != want {
			t.Fatalf("%s = %+v, want version %d", k, g.KV, want)
		}
	}
}

// TestReopenSameShard: a replica closed and opened again on
// the same shared store (new StateMachine), while another shard keeps
// applying; then the shard is dropped and recreated.
func TestReopenSameShard(t *testing.T) {
	root := t.TempDir()
	st := reviewShared(t, filepath.Join(root, "store"))
	a := sharedHarness(t, st, 1, filepath.Join(root, "a"))
	other := sharedHarness(t, st, 2, filepath.Join(root, "o"))
	a.apply(putCmd("k", "1"), putCmd("k", "2"))
	other.apply(putCmd("k", "o1"))
	_ = a.sm.Close()
	a2 := sharedHarness(t, st, 1, filepath.Join(root, "a"))
	a2.apply(putCmd("k", "3"))
	if g := a2.get("k"); g.KV.Version != 3 {
		t.Fatalf("after reopen k = %+v, want version 3", g.KV)
	}
	_ = a2.sm.Close()
	if err := st.DropShard(1); err != nil {
		t.Fatal(err)
	}
	a3 := sharedHarness(t, st, 1, filepath.Join(root, "a"))
	a3.apply(putCmd("k", "new"))
	if g := a3.get("k"); g.KV.Version != 1 {
		t.Fatalf("after drop k = %+v, want version 1", g.KV)
	}
	other.apply(putCmd("k", "o2"))
	if g := other.get("k"); g.KV.Version != 2 {
		t.Fatalf("other k = %+v, want version 2", g.KV)
	}
}

// TestDeletePrefixChunksThenPuts: a prefix delete over more keys than a
// chunk, then puts of those keys in the same
// Update and the next.
func TestDeletePrefixChunksThenPuts(t *testing.T) {
	h := newHarness(t, Options{})
	n := deletePrefixChunk + 300
	var cmds []*Command
	for i := 0; i < n; i++ {
		cmds = append(cmds, putCmd(fmt.Sprintf("p/%05d", i), "v"))
	}
	h.apply(cmds...)
	raw := encodeAll(t, delPrefixCmd("p/"), putCmd("p/00000", "w"), putCmd(fmt.Sprintf("p/%05d", n-1), "w"))
	h.applyRaw(raw...)
	h.apply(putCmd("p/00001", "w"), putCmd(fmt.Sprintf("p/%05d", n-2), "w"))
	for _, k := range []string{"p/00000", "p/00001", fmt.Sprintf("p/%05d", n-1), fmt.Sprintf("p/%05d", n-2)} {
		if g := h.get(k); g.KV.Version != 1 {
			t.Fatalf("%s = %+v, want version 1", k, g.KV)
		}
	}
}

// TestFailedUpdateRestoresSessions: a failed Update left the result it
// stored in the dropped batch listed in memory (the session's stored
// results), so the same entry applied again looked that result up, found
// none and failed again ("dedup lookup: pebble: not found"). The session
// table is now read from the store again after a failed Update.
func TestFailedUpdateRestoresSessions(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("k", "v1"))
	c := putCmd("k", "v2")
	c.Session, c.Seq, c.Time = 1, 1, 100
	e := []Entry{{Index: h.idx + 1, Cmd: mustEncode(t, c)}}
	h.sm.failCommit = fmt.Errorf("disk gone")
	if _, err := h.sm.Update(e); err == nil {
		t.Fatal("Update did not fail")
	}
	h.sm.failCommit = nil
	e = []Entry{{Index: h.idx + 1, Cmd: mustEncode(t, c)}}
	if _, err := h.sm.Update(e); err != nil {
		t.Fatalf("the same entry again after a failed Update: %v", err)
	}
}

// TestFailedUpdateChangesNothing: an Update that fails drops its batch:
// the next one reads the records as they were.
func TestFailedUpdateChangesNothing(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("k", "v1"))
	h.sm.failCommit = errors.New("disk gone")
	if _, err := h.sm.Update([]Entry{{Index: h.idx + 1, Cmd: mustEncode(t, putCmd("k", "v2"))}}); err == nil {
		t.Fatal("Update did not fail")
	}
	h.sm.failCommit = nil
	h.apply(putCmd("k", "v3"))
	g := h.get("k")
	if !g.Found || string(g.KV.Value) != "v3" || g.KV.Version != 2 {
		t.Fatalf("after a failed Update: %+v, want v3 at version 2", g.KV)
	}
	evs := h.allEvents(1)
	last := evs[len(evs)-1]
	if last.Prev == nil || string(last.Prev.Value) != "v1" {
		t.Fatalf("the put's previous entry is %+v, want v1 (v2 was never applied)", last.Prev)
	}
}

// TestPutAfterRecovery: a replica that wrote a key installs a snapshot in
// which the key is another: a put after it counts from the snapshot's
// record.
func TestPutAfterRecovery(t *testing.T) {
	src := newHarness(t, Options{})
	for i := range 5 {
		src.apply(putCmd("k", fmt.Sprint("s", i)))
	}
	snap := saveSnapshot(t, src.sm)

	dst := newHarness(t, Options{})
	dst.apply(putCmd("k", "old"))
	if err := dst.sm.RecoverFromSnapshot(bytes.NewReader(snap), nil); err != nil {
		t.Fatal(err)
	}
	dst.idx = dst.sm.Applied()
	dst.apply(putCmd("k", "new"))
	g := dst.get("k")
	if !g.Found || g.KV.Version != 6 || string(g.KV.Value) != "new" {
		t.Fatalf("after recovery: %+v, want version 6", g.KV)
	}
	evs := dst.allEvents(1)
	if last := evs[len(evs)-1]; last.Prev == nil || string(last.Prev.Value) != "s4" {
		t.Fatalf("previous entry %+v, want the snapshot's s4", last.Prev)
	}
}

func mustEncode(t *testing.T, c *Command) []byte {
	t.Helper()
	b, err := EncodeCommand(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
