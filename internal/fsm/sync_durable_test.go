package fsm

import (
	"bytes"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// TestRecoverFromSnapshotIsDurable: RecoverFromSnapshot returns with the
// recovered state (and the generation switch) durable, without a Sync
// after it: a crash right after keeps the snapshot's state.
func TestRecoverFromSnapshotIsDurable(t *testing.T) {
	src := newHarness(t, Options{})
	fillForSnapshot(src)
	wantList, wantRev := dump(t, src)
	snap := saveSnapshot(t, src.sm)

	root := t.TempDir()
	mem := vfs.NewStrictMem()
	st := memStore(t, mem, "store")
	dst := sharedHarness(t, st, 1, filepath.Join(root, "d"))
	dst.apply(putCmd("old", "x"))
	if err := dst.sm.Sync(); err != nil { // one WAL sync done: syncBegun = syncDone = 1
		t.Fatal(err)
	}
	if err := dst.sm.RecoverFromSnapshot(bytes.NewReader(snap), nil); err != nil {
		t.Fatal(err)
	}
	want := dst.sm.Applied()
	_ = dst.sm.Close()
	st = crashReopen(t, mem, st)
	dst = sharedHarness(t, st, 1, filepath.Join(root, "d"))
	defer dst.sm.Close()
	if got, rev := dump(t, dst); dst.idx != want || rev != wantRev || !reflect.DeepEqual(got, wantList) {
		t.Fatalf("after a crash right after RecoverFromSnapshot: applied %d rev %d, want %d rev %d", dst.idx, rev, want, wantRev)
	}
}

// TestImportIsDurable: Open's import of a legacy database removes that
// database, so the imported state must be durable in the store before
// Open returns.
func TestImportIsDurable(t *testing.T) {
	src := newHarness(t, Options{})
	fillForSnapshot(src)
	wantList, wantRev := dump(t, src)

	dir := filepath.Join(t.TempDir(), "shard-7")
	writeLegacy(t, src, dir, 3)
	mem := vfs.NewStrictMem()
	st := memStore(t, mem, "store")
	h := sharedHarness(t, st, 7, dir)
	_ = h.sm.Close()
	st = crashReopen(t, mem, st)
	h = sharedHarness(t, st, 7, dir)
	defer h.sm.Close()
	if got, rev := dump(t, h); h.idx != src.sm.Applied() || rev != wantRev || !reflect.DeepEqual(got, wantList) {
		t.Fatalf("after a crash right after the import: applied %d rev %d, want %d rev %d", h.idx, rev, src.sm.Applied(), wantRev)
	}
}

// TestSpaceSyncRacingStoreSync: a space's write, then its Sync, racing
// one store-wide Sync that may begin before, during or after the write:
// whatever the overlap, the write survives a crash once the space's Sync
// returned nil. (A sync numbered after its LogData, instead of before,
// would let a write committed during it count as covered.)
func TestSpaceSyncRacingStoreSync(t *testing.T) {
	for i := range 1000 {
		mem := vfs.NewStrictMem()
		st := memStore(t, mem, "store")
		sp := st.space(1, 1)
		// A few syncs first, so that numbers are not all 0/1.
		for range i % 3 {
			if err := st.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		key := []byte(fmt.Sprint("k", i))
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Add(2)
		var spErr, stErr error
		go func() {
			defer wg.Done()
			<-start
			spin(3 * time.Microsecond)
			b := sp.NewBatch()
			defer b.Close()
			if err := b.Set(key, []byte("v"), nil); err != nil {
				spErr = err
				return
			}
			if err := b.Commit(pebble.NoSync); err != nil {
				spErr = err
				return
			}
			spErr = sp.Sync()
		}()
		go func() {
			defer wg.Done()
			<-start
			spin(time.Duration(i%64) * 200 * time.Nanosecond) // shift the overlap
			stErr = st.Sync()
		}()
		close(start)
		wg.Wait()
		if spErr != nil || stErr != nil {
			t.Fatal(spErr, stErr)
		}
		crashClose(t, mem, st)
		st = memStore(t, mem, "store")
		_, closer, err := st.space(1, 1).Get(key)
		if err == nil {
			_ = closer.Close()
		}
		_ = st.Close()
		if err != nil {
			t.Fatalf("iteration %d: the space's Sync returned nil, and after a crash its write is gone: %v", i, err)
		}
	}
}

func spin(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}
