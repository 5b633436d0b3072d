package fsm

import (
	"github.com/cockroachdb/pebble"

	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func saveSnapshot(t testing.TB, sm *StateMachine) []byte {
	t.Helper()
	sc, err := sm.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := sm.SaveSnapshot(sc, &buf, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// dump is everything Lookup can see.
func dump(t testing.TB, h *harness) (*ListResult, int64) {
	t.Helper()
	v, err := h.sm.Lookup(RevisionQuery{})
	if err != nil {
		t.Fatal(err)
	}
	return h.list(ListQuery{}), v.(int64)
}

// fillForSnapshot writes keys (some attached to leases 1 and 2), events,
// dedup entries and a checkpoint.
func fillForSnapshot(h *harness) {
	h.applyLease(grantCmd(0, 5000), grantCmd(0, 9000)) // leases 1 and 2
	for i := 0; i < 300; i++ {
		h.apply(txnCmd(9, uint64(i), &Txn{Then: []Op{
			{Type: OpPut, Key: fmt.Sprintf("key/%03d", i), Value: bytes.Repeat([]byte{byte(i)}, i*10), Lease: int64(i % 3)},
		}}))
	}
	h.apply(putCmd("key/007", "rewritten"), delCmd("key/008"))
	h.applyLease(checkpointCmd(LeaseRemaining{ID: 2, RemainingMs: 4000}))
}

func TestSnapshotRoundTrip(t *testing.T) {
	src := newHarness(t, Options{})
	fillForSnapshot(src)
	wantList, wantRev := dump(t, src)
	wantApplied := src.sm.Applied()

	sc, err := src.sm.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Writes after Prepare are not in the snapshot.
	src.apply(putCmd("late", "x"), delCmd("key/001"))
	var buf bytes.Buffer
	if err := src.sm.SaveSnapshot(sc, &buf, nil); err != nil {
		t.Fatal(err)
	}

	dst := newHarness(t, Options{})
	dst.apply(putCmd("only-in-dst", "x"), putCmd("key/001", "dst"))
	if err := dst.sm.RecoverFromSnapshot(bytes.NewReader(buf.Bytes()), nil); err != nil {
		t.Fatal(err)
	}
	if dst.sm.Revision() != wantRev || dst.sm.Applied() != wantApplied {
		t.Fatalf("revision %d, applied %d; want %d, %d", dst.sm.Revision(), dst.sm.Applied(), wantRev, wantApplied)
	}
	gotList, gotRev := dump(t, dst)
	if gotRev != wantRev || !reflect.DeepEqual(gotList, wantList) {
		t.Fatalf("recovered state differs: rev %d/%d, %d/%d keys", gotRev, wantRev, len(gotList.KVs), len(wantList.KVs))
	}
	if !bytes.Equal(saveSnapshot(t, dst.sm), buf.Bytes()) {
		t.Fatal("re-saved snapshot differs")
	}
	// The session table came along: a retry answers from it (seq 5 was
	// applied at revision 6, after the two grants that changed no key).
	dst.idx = dst.sm.Applied()
	if r := dst.apply(txnCmd(9, 5, &Txn{Then: []Op{{Type: OpPut, Key: "key/005"}}}))[0]; r.Revision != 6 || dst.get("key/005").KV.Version != 1 {
		t.Fatalf("dedup after recover: %+v", r)
	}
	// And it is durable: reopen.
	if err := dst.sm.Close(); err != nil {
		t.Fatal(err)
	}
	dst.open(Options{})
	if got, _ := dump(t, dst); !reflect.DeepEqual(got.KVs, wantList.KVs) {
		t.Fatal("state lost across reopen after recover")
	}
	if g := storeGens(t, dst.sm); !reflect.DeepEqual(g, []uint64{2}) || dst.sm.db.gen != 2 {
		t.Fatalf("store holds generations %v, in use %d; want only 2", g, dst.sm.db.gen)
	}
}

func TestSnapshotOfEmptyState(t *testing.T) {
	src := newHarness(t, Options{})
	snap := saveSnapshot(t, src.sm)
	dst := newHarness(t, Options{})
	dst.apply(putCmd("a", "1"))
	if err := dst.sm.RecoverFromSnapshot(bytes.NewReader(snap), nil); err != nil {
		t.Fatal(err)
	}
	if l, rev := dump(t, dst); len(l.KVs) != 0 || rev != 0 || dst.sm.Applied() != 0 {
		t.Fatalf("not empty: %v rev %d", listKeys(l), rev)
	}
}

func TestCorruptSnapshot(t *testing.T) {
	src := newHarness(t, Options{})
	fillForSnapshot(src)
	good := saveSnapshot(t, src.sm)

	dst := newHarness(t, Options{})
	dst.apply(putCmd("mine", "1"))
	before, beforeRev := dump(t, dst)

	flip := func(i int) []byte {
		b := append([]byte(nil), good...)
		b[i] ^= 0x40
		return b
	}
	cases := map[string][]byte{
		"empty":         nil,
		"bad magic":     flip(0),
		"bad version":   flip(8),
		"flipped body":  flip(len(good) / 2),
		"flipped crc":   flip(len(good) - 1),
		"truncated":     good[:len(good)-5],
		"header only":   good[:9],
		"huge length":   append(append([]byte(nil), good[:9]...), 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		"unknown tag":   append(append([]byte(nil), good[:9]...), 7),
		"unsorted keys": append(append([]byte(nil), good[:9]...), 1, 1, 'b', 0, 1, 1, 'a', 0, 0, 2, 0, 0, 0, 0),
	}
	for name, b := range cases {
		if err := dst.sm.RecoverFromSnapshot(bytes.NewReader(b), nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	after, afterRev := dump(t, dst)
	if afterRev != beforeRev || !reflect.DeepEqual(before, after) {
		t.Fatal("a failed recovery changed the state")
	}
	if g := storeGens(t, dst.sm); !reflect.DeepEqual(g, []uint64{1}) {
		t.Fatalf("store holds generations %v after failed recoveries, want only 1", g)
	}
}

func TestSnapshotStop(t *testing.T) {
	h := newHarness(t, Options{})
	for i := 0; i < 3; i++ {
		var cmds []*Command
		for j := 0; j < stopCheckEvery; j++ {
			cmds = append(cmds, putCmd(fmt.Sprintf("%d/%d", i, j), "v"))
		}
		h.apply(cmds...)
	}
	good := saveSnapshot(t, h.sm)
	stopped := make(chan struct{})
	close(stopped)
	sc, err := h.sm.PrepareSnapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.sm.SaveSnapshot(sc, discard{}, stopped); !errors.Is(err, ErrStopped) {
		t.Fatalf("save: %v", err)
	}
	dst := newHarness(t, Options{})
	if err := dst.sm.RecoverFromSnapshot(bytes.NewReader(good), stopped); !errors.Is(err, ErrStopped) {
		t.Fatalf("recover: %v", err)
	}
	if _, err := New(t.TempDir(), Options{}).Open(stopped); !errors.Is(err, ErrStopped) {
		t.Fatalf("open: %v", err)
	}
	if err := h.sm.SaveSnapshot("junk", discard{}, nil); err == nil {
		t.Fatal("save with a foreign context")
	}
}

// TestOpenRemovesRecoveryLeftovers: a crash during RecoverFromSnapshot
// leaves keys of a generation the record does not name (and a crash of an
// older binary, directories CURRENT did not name); Open drops them.
func TestOpenRemovesRecoveryLeftovers(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("a", "1"))
	for _, gen := range []uint64{2, 17} {
		b := h.sm.store.space(h.sm.shard, gen).NewBatch()
		if err := b.Set([]byte("kleft"), []byte("over"), nil); err != nil {
			t.Fatal(err)
		}
		if err := b.Commit(pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if g := storeGens(t, h.sm); !reflect.DeepEqual(g, []uint64{1, 2, 17}) {
		t.Fatalf("generations %v", g)
	}
	if err := h.sm.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"db-2", "db-17"} {
		if err := os.MkdirAll(filepath.Join(h.dir, name, "x"), 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(h.dir, "CURRENT.tmp"), []byte("db-2\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	h.open(Options{})
	if !h.get("a").Found || h.idx != 1 {
		t.Fatal("state lost")
	}
	if g := storeGens(t, h.sm); !reflect.DeepEqual(g, []uint64{1}) {
		t.Fatalf("generations after Open %v, want only 1", g)
	}
	ents, _ := os.ReadDir(h.dir)
	if len(ents) != 1 || ents[0].Name() != ownStoreDir {
		t.Fatalf("dir holds %d entries, want only the store", len(ents))
	}
	if err := h.sm.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.dir, "CURRENT"), []byte("garbage"), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := New(h.dir, Options{}).Open(nil); err == nil {
		t.Fatal("Open with a corrupt CURRENT succeeded")
	}
}

// TestSnapshotLargestRecords: the largest value a snapshot carries is a
// put's event holding a maximal key and two maximal values.
func TestSnapshotLargestRecords(t *testing.T) {
	src := newHarness(t, Options{})
	key := string(bytes.Repeat([]byte("k"), MaxKeySize))
	v1, v2 := bytes.Repeat([]byte{1}, MaxValueSize), bytes.Repeat([]byte{2}, MaxValueSize)
	src.apply(txnCmd(0, 0, &Txn{Then: []Op{{Type: OpPut, Key: key, Value: v1}}}))
	src.apply(txnCmd(0, 0, &Txn{Then: []Op{{Type: OpPut, Key: key, Value: v2}}}))
	snap := saveSnapshot(t, src.sm)
	dst := newHarness(t, Options{})
	if err := dst.sm.RecoverFromSnapshot(bytes.NewReader(snap), nil); err != nil {
		t.Fatal(err)
	}
	evs := dst.allEvents(1)
	if len(evs) != 2 || !bytes.Equal(evs[1].KV.Value, v2) || evs[1].Prev == nil || !bytes.Equal(evs[1].Prev.Value, v1) {
		t.Fatal("largest event lost")
	}
}
