package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"

	"github.com/dister/dister/internal/errs"
)

// storeGens lists the generations of sm's shard that hold keys in its
// store.
func storeGens(t testing.TB, sm *StateMachine) []uint64 {
	t.Helper()
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	return shardGens(t, sm.store, sm.shard)
}

func shardGens(t testing.TB, st *Shared, shard uint64) []uint64 {
	t.Helper()
	lo, hi := shardRange(shard)
	it := st.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	var gens []uint64
	for valid := it.First(); valid; valid = it.Next() {
		g := binary.BigEndian.Uint64(it.Key()[9:spaceLen])
		if len(gens) == 0 || gens[len(gens)-1] != g {
			gens = append(gens, g)
		}
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return gens
}

func openShared(t testing.TB, dir string) *Shared {
	t.Helper()
	st, err := OpenShared(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// sharedHarness is a harness whose state machine keeps its state in st
// under shard.
func sharedHarness(t testing.TB, st *Shared, shard uint64, dir string) *harness {
	t.Helper()
	h := &harness{t: t, dir: dir}
	h.open(Options{Shared: st, Shard: shard})
	return h
}

// TestSharedStoreKeepsShardsApart: state machines of several shards in one
// store see only their own keys, whatever one of them does: writes, a
// snapshot recovery, being dropped.
func TestSharedStoreKeepsShardsApart(t *testing.T) {
	root := t.TempDir()
	st := openShared(t, filepath.Join(root, "store"))
	a := sharedHarness(t, st, 1, filepath.Join(root, "a"))
	b := sharedHarness(t, st, 2, filepath.Join(root, "b"))
	c := sharedHarness(t, st, 3, filepath.Join(root, "c"))
	a.apply(putCmd("x", "from a"), putCmd("only-a", "1"))
	b.apply(putCmd("x", "from b"))
	fillForSnapshot(c)
	if got := string(a.get("x").KV.Value); got != "from a" || b.get("only-a").Found {
		t.Fatalf("shards see each other: a has x=%q, b sees only-a: %v", got, b.get("only-a").Found)
	}
	// b takes c's state from a snapshot; a is untouched.
	aBefore, aRev := dump(t, a)
	if err := b.sm.RecoverFromSnapshot(bytes.NewReader(saveSnapshot(t, c.sm)), nil); err != nil {
		t.Fatal(err)
	}
	bList, _ := dump(t, b)
	cList, _ := dump(t, c)
	if !reflect.DeepEqual(bList, cList) || b.get("x").Found && string(b.get("x").KV.Value) == "from b" {
		t.Fatal("b does not hold c's state after the recovery")
	}
	if aAfter, rev := dump(t, a); rev != aRev || !reflect.DeepEqual(aAfter, aBefore) {
		t.Fatal("recovering b changed a")
	}
	if g := shardGens(t, st, 2); !reflect.DeepEqual(g, []uint64{2}) {
		t.Fatalf("b's generations %v, want 2", g)
	}
	// Dropping b leaves a and c whole, and a new b starts empty.
	if err := b.sm.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.DropShard(2); err != nil {
		t.Fatal(err)
	}
	if g := shardGens(t, st, 2); len(g) != 0 {
		t.Fatalf("dropped shard still holds generations %v", g)
	}
	if aAfter, _ := dump(t, a); !reflect.DeepEqual(aAfter, aBefore) {
		t.Fatal("dropping b changed a")
	}
	if l, _ := dump(t, c); !reflect.DeepEqual(l, cList) {
		t.Fatal("dropping b changed c")
	}
	b = sharedHarness(t, st, 2, filepath.Join(root, "b"))
	if l, _ := dump(t, b); len(l.KVs) != 0 || b.idx != 0 {
		t.Fatalf("b after the drop: %d keys, applied %d", len(l.KVs), b.idx)
	}
	// Everything comes back after the store reopens.
	for _, h := range []*harness{a, b, c} {
		if err := h.sm.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openShared(t, filepath.Join(root, "store"))
	defer st.Close()
	a = sharedHarness(t, st, 1, filepath.Join(root, "a"))
	c = sharedHarness(t, st, 3, filepath.Join(root, "c"))
	if l, _ := dump(t, a); !reflect.DeepEqual(l, aBefore) {
		t.Fatal("a lost across a reopen of the store")
	}
	if l, _ := dump(t, c); !reflect.DeepEqual(l, cList) {
		t.Fatal("c lost across a reopen of the store")
	}
	for _, h := range []*harness{a, c} {
		_ = h.sm.Close()
	}
}

// writeLegacy writes the keys of src's state into dir as a replica with a
// database of its own kept them (generation gen, named by CURRENT).
func writeLegacy(t testing.TB, src *harness, dir string, gen uint64) {
	t.Helper()
	db, err := openPebble(vfs.Default, filepath.Join(dir, dbDirName(gen)), nil, legacyMemTableSize, false, false)
	if err != nil {
		t.Fatal(err)
	}
	src.sm.mu.RLock()
	it := src.sm.db.NewIter(nil)
	for valid := it.First(); valid; valid = it.Next() {
		if err := db.Set(it.Key(), it.Value(), pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	src.sm.mu.RUnlock()
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := writeCurrent(dir, gen); err != nil {
		t.Fatal(err)
	}
}

// TestOpenImportsLegacyDatabase: a replica of an earlier binary (or a
// restore's seed) has a database of its own; Open moves it into the store
// and removes it, and an import interrupted before CURRENT went is done
// again whole.
func TestOpenImportsLegacyDatabase(t *testing.T) {
	src := newHarness(t, Options{})
	fillForSnapshot(src)
	want, wantRev := dump(t, src)

	root := t.TempDir()
	dir := filepath.Join(root, "shard-7")
	writeLegacy(t, src, dir, 3)
	st := openShared(t, filepath.Join(root, "store"))
	defer st.Close()
	h := sharedHarness(t, st, 7, dir)
	if got, rev := dump(t, h); rev != wantRev || !reflect.DeepEqual(got, want) || h.idx != src.sm.Applied() {
		t.Fatalf("imported state differs: rev %d want %d, applied %d want %d", rev, wantRev, h.idx, src.sm.Applied())
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the legacy database's directory is still there: %v", err)
	}
	// A write after the import, then an import that a crash interrupted
	// before CURRENT was removed: the legacy database is imported again
	// whole, and the write (which the Raft log would replay) is gone.
	h.apply(putCmd("after", "import"))
	if err := h.sm.Close(); err != nil {
		t.Fatal(err)
	}
	writeLegacy(t, src, dir, 3)
	h = sharedHarness(t, st, 7, dir)
	if got, rev := dump(t, h); rev != wantRev || !reflect.DeepEqual(got, want) {
		t.Fatal("a second import differs from the legacy database")
	}
	if g := shardGens(t, st, 7); len(g) != 1 {
		t.Fatalf("generations after the second import: %v", g)
	}
	_ = h.sm.Close()
}

// TestSharedSyncFromManyShards: concurrent Syncs of many shards (which
// share flushes) each leave what was committed before them durable.
func TestSharedSyncFromManyShards(t *testing.T) {
	root := t.TempDir()
	mem := vfs.NewStrictMem()
	st := memStore(t, mem, "store")
	var hs []*harness
	for i := range 8 {
		hs = append(hs, sharedHarness(t, st, uint64(i), filepath.Join(root, "s")))
	}
	var wg sync.WaitGroup
	for _, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				h.apply(putCmd("k", "v"))
				if err := h.sm.Sync(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Durable without the close-time flush: close the store as a crash
	// would, what was not synced lost.
	for _, h := range hs {
		_ = h.sm.Close()
	}
	st = crashReopen(t, mem, st)
	for i := range 8 {
		h := sharedHarness(t, st, uint64(i), filepath.Join(root, "s"))
		if h.idx != 20 {
			t.Fatalf("shard %d: applied %d after the crash, want 20", i, h.idx)
		}
		_ = h.sm.Close()
	}
}

// memStore opens a store on mem, a file system that forgets at crashClose
// whatever was not synced, as a machine's crash would.
func memStore(t testing.TB, mem *vfs.MemFS, dir string) *Shared {
	t.Helper()
	if err := mem.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	d, err := mem.OpenDir("")
	if err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(d.Sync(), d.Close()); err != nil {
		t.Fatal(err)
	}
	st, err := openSharedOn(mem, dir, 1<<20, newPacer(pacedRate), sharedMemTableSize)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// crashReopen crashes st (crashClose) and opens the store again on what
// the crash kept; the test's cleanup closes it, after the replicas the
// test closes itself.
func crashReopen(t testing.TB, mem *vfs.MemFS, st *Shared) *Shared {
	t.Helper()
	crashClose(t, mem, st)
	st = memStore(t, mem, "store")
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// crashClose closes st (opened by memStore on mem) as a crash would: what
// was not synced is gone.
func crashClose(t testing.TB, mem *vfs.MemFS, st *Shared) {
	t.Helper()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = true
	mem.SetIgnoreSyncs(true)
	if err := st.db.Close(); err != nil {
		t.Fatal(err)
	}
	mem.ResetToSyncedState()
	mem.SetIgnoreSyncs(false)
	_ = st.tableCache.Unref()
	st.cache.Unref()
}

// TestSyncOnlyWhatIsDirty: a shard that wrote nothing since a WAL sync
// that began after its last write syncs without one of its own (a thousand
// idle groups would each sync the store), a shard with writes no sync
// covered still gets one, and after a crash every shard holds what it had
// at the last sync: synced writes kept, later ones gone with their applied
// index.
func TestSyncOnlyWhatIsDirty(t *testing.T) {
	root := t.TempDir()
	mem := vfs.NewStrictMem()
	st := memStore(t, mem, "store")
	a := sharedHarness(t, st, 1, filepath.Join(root, "a"))
	b := sharedHarness(t, st, 2, filepath.Join(root, "b"))
	syncs := func() uint64 { return st.syncBegun.Load() }
	sync := func(h *harness) {
		t.Helper()
		if err := h.sm.Sync(); err != nil {
			t.Fatal(err)
		}
	}

	sync(a)
	if n := syncs(); n != 0 {
		t.Fatalf("a fresh shard's Sync synced the store (%d syncs)", n)
	}
	a.apply(putCmd("a", "1"))
	sync(a)
	if n := syncs(); n != 1 {
		t.Fatalf("syncs after a write and Sync: %d, want 1", n)
	}
	sync(a)
	if n := syncs(); n != 1 {
		t.Fatalf("a Sync with nothing written synced again (%d syncs)", n)
	}
	// b wrote before that sync and after it.
	b.apply(putCmd("b", "1"))
	sync(b)
	b.apply(putCmd("b", "2"))
	sync(a)
	sync(b)
	if n := syncs(); n != 3 {
		t.Fatalf("syncs: %d, want 3 (b's two Syncs)", n)
	}
	// Not synced: lost in the crash.
	a.apply(putCmd("a", "2"))
	_ = a.sm.Close()
	_ = b.sm.Close()
	st = crashReopen(t, mem, st)
	b = sharedHarness(t, st, 2, filepath.Join(root, "b"))
	defer b.sm.Close()
	if g := b.get("b"); string(g.KV.Value) != "2" || b.idx != 2 {
		t.Fatalf("after the crash b holds %q at applied %d, want \"2\" at 2", g.KV.Value, b.idx)
	}
	a = sharedHarness(t, st, 1, filepath.Join(root, "a"))
	defer a.sm.Close()
	if g := a.get("a"); string(g.KV.Value) != "1" || a.idx != 1 {
		t.Fatalf("after the crash a holds %q at applied %d, want \"1\" at 1 (its last write was not synced)", g.KV.Value, a.idx)
	}
}

// TestReopenedReplicaSyncsItsEarlierWrites: a replica stopped and started
// again on the same store (no Sync at the stop) reports an applied index
// that counts writes no WAL sync covered yet; its first Sync must sync
// them, or dragonboat compacts its log past what a crash keeps. Found in
// review: the skip rule started each opened replica as clean.
func TestReopenedReplicaSyncsItsEarlierWrites(t *testing.T) {
	root := t.TempDir()
	mem := vfs.NewStrictMem()
	st := memStore(t, mem, "store")
	dir := filepath.Join(root, "a")
	a := sharedHarness(t, st, 1, dir)
	a.apply(putCmd("k", "1"))
	a.apply(putCmd("k", "2"))
	_ = a.sm.Close()

	a = sharedHarness(t, st, 1, dir)
	synced := a.sm.Applied()
	if err := a.sm.Sync(); err != nil {
		t.Fatal(err)
	}
	_ = a.sm.Close()
	st = crashReopen(t, mem, st)
	a = sharedHarness(t, st, 1, dir)
	defer a.sm.Close()
	if a.idx < synced || string(a.get("k").KV.Value) != "2" {
		t.Fatalf("Sync returned at applied %d; after the crash the replica holds %q at %d", synced, a.get("k").KV.Value, a.idx)
	}
}

// TestSyncDuringStoreClose: replicas' Syncs racing the store's Close each
// return nil or errs.Closed, and none reaches pebble after it closed (which
// panics).
func TestSyncDuringStoreClose(t *testing.T) {
	root := t.TempDir()
	st := openShared(t, filepath.Join(root, "store"))
	var hs []*harness
	for i := range 4 {
		h := sharedHarness(t, st, uint64(i+1), filepath.Join(root, fmt.Sprint(i)))
		h.apply(putCmd("k", "v"))
		hs = append(hs, h)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range 200 {
				sp := h.sm.db
				if sp == nil {
					return
				}
				sp.wrote()
				if err := sp.Sync(); err != nil && !errors.Is(err, errs.Closed) {
					t.Errorf("Sync during Close: %v", err)
					return
				}
			}
		}()
	}
	close(start)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}
