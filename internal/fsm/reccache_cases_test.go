package fsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"runtime"
	"sync"
	"testing"
)

// More cases of the record cache (reccache.go), from an adversarial review.

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

// TestRecordCacheRealErrorMidUpdate: an Update that fails on a storage
// error (a corrupt record met by a prefix delete) after it cached a put of
// the same Update: the next Update must not see the dropped put.
func TestRecordCacheRealErrorMidUpdate(t *testing.T) {
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

// TestRecordCacheFailedUpdateRetried: dragonboat-style retry of the very
// entries of a failed Update on the same state machine.
func TestRecordCacheFailedUpdateRetried(t *testing.T) {
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

// TestRecordCacheRevokeThenPut: a put cached with a lease, the lease
// revoked (expired) in the same Update, then a put: it creates the key anew.
func TestRecordCacheRevokeThenPut(t *testing.T) {
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

// TestRecordCacheCmdBufferReused: the decoded op's value aliases the
// entry's Cmd, which belongs to dragonboat and is reused after Update; the
// cached record must not change with it.
func TestRecordCacheCmdBufferReused(t *testing.T) {
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

// TestRecordCacheRecoverOwnOlderSnapshot: a replica goes back to an
// older snapshot of its own (keys it deleted, keys it created since):
// the cache must not answer with the newer records.
func TestRecordCacheRecoverOwnOlderSnapshot(t *testing.T) {
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

// TestRecordCacheReopenSameShard: a replica closed and opened again on
// the same shared store (new StateMachine), while another shard keeps
// applying; then the shard is dropped and recreated.
func TestRecordCacheReopenSameShard(t *testing.T) {
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

// TestRecordCacheSharedConcurrent: several state machines on one store,
// with a tiny shared cache (constant eviction across shards), apply the
// mixed log concurrently, with snapshot recoveries and failed Updates in
// between; each must end identical to a state machine without a cache.
// Run with -race.
func TestRecordCacheSharedConcurrent(t *testing.T) {
	log := mixedLog(t, 2*eventTrimEvery)
	o := Options{SessionHorizon: 50_000, EventRetention: 300}

	// Reference: no cache.
	ref := newHarness(t, o)
	ref.sm.store.recs = newRecordCache(0)
	ref.sm.forgetRecords()
	var refRes []Result
	for i := 0; i < len(log); i += 5 {
		refRes = append(refRes, ref.applyRaw(log[i:min(i+5, len(log))]...)...)
	}
	refSnap := saveSnapshot(t, ref.sm)
	refEvents := ref.allEvents(ref.sm.CompactRevision())

	root := t.TempDir()
	st := reviewShared(t, filepath.Join(root, "store"))
	st.recs = newRecordCache(64 << 10)
	const n = 4
	hs := make([]*harness, n)
	for i := range hs {
		hs[i] = sharedHarness(t, st, uint64(i+1), filepath.Join(root, fmt.Sprint(i)))
	}
	results := make([][]Result, n)
	errc := make(chan error, n)
	var wg sync.WaitGroup
	for i := range hs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			h := hs[i]
			rng := rand.New(rand.NewPCG(uint64(i), 9))
			for j := 0; j < len(log); {
				k := 1 + rng.IntN(9)
				chunk := log[j:min(j+k, len(log))]
				entries := make([]Entry, len(chunk))
				for x, c := range chunk {
					entries[x] = Entry{Index: uint64(j + x + 1), Cmd: c}
				}
				switch rng.IntN(20) {
				case 0: // a failed Update; the in-memory sessions it changed are
					// not the cache's business, so the state is reloaded from a
					// snapshot taken before it.
					sc, err := h.sm.PrepareSnapshot()
					if err != nil {
						errc <- err
						return
					}
					var buf bytes.Buffer
					if err := h.sm.SaveSnapshot(sc, &buf, nil); err != nil {
						errc <- err
						return
					}
					h.sm.failCommit = fmt.Errorf("injected")
					if _, err := h.sm.Update(entries); err == nil {
						errc <- fmt.Errorf("sm %d: injected failure did not fail", i)
						return
					}
					h.sm.failCommit = nil
					if err := h.sm.RecoverFromSnapshot(&buf, nil); err != nil {
						errc <- err
						return
					}
					entries = make([]Entry, len(chunk))
					for x, c := range chunk {
						entries[x] = Entry{Index: uint64(j + x + 1), Cmd: c}
					}
				case 1: // a recovery from our own current state
					sc, err := h.sm.PrepareSnapshot()
					if err != nil {
						errc <- err
						return
					}
					var buf bytes.Buffer
					if err := h.sm.SaveSnapshot(sc, &buf, nil); err != nil {
						errc <- err
						return
					}
					if err := h.sm.RecoverFromSnapshot(&buf, nil); err != nil {
						errc <- err
						return
					}
				}
				out, err := h.sm.Update(entries)
				if err != nil {
					errc <- fmt.Errorf("sm %d: %w", i, err)
					return
				}
				for _, e := range out {
					results[i] = append(results[i], e.Result)
				}
				j += len(chunk)
			}
		}(i)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for i, h := range hs {
		if !reflect.DeepEqual(results[i], refRes) {
			t.Fatalf("sm %d: results differ from those without a cache", i)
		}
		if !bytes.Equal(saveSnapshot(t, h.sm), refSnap) {
			t.Fatalf("sm %d: state differs from that without a cache", i)
		}
		if !reflect.DeepEqual(h.allEvents(h.sm.CompactRevision()), refEvents) {
			t.Fatalf("sm %d: events differ", i)
		}
	}
	if c := st.recs; c.bytes > c.max || c.bytes < 0 {
		t.Fatalf("the cache accounts %d bytes, budget %d", c.bytes, c.max)
	}
}

// TestRecordCacheAccounting: random set/drop/get with values around the
// budget: the accounted bytes always equal the sum over the entries held,
// never exceed the budget, and a value larger than the budget is not kept.
func TestRecordCacheAccounting(t *testing.T) {
	const budget = 8 << 10
	c := newRecordCache(budget)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 20_000; i++ {
		id := uint64(1 + rng.IntN(3))
		key := []byte(fmt.Sprintf("k%d", rng.IntN(50)))
		switch rng.IntN(4) {
		case 0:
			c.drop(id, key)
		default:
			n := rng.IntN(600)
			if rng.IntN(50) == 0 {
				n = budget + rng.IntN(100) - 200 // around the budget
			}
			v := bytes.Repeat([]byte{byte(i)}, n)
			c.set(id, key, recordHeader{version: int64(i)}, v)
			if len(v) > 0 {
				v[0] ^= 0xff // the caller's slice changes: the cache must not
			}
			r, ok := c.get(id, key)
			fits := entryCost(string(key), v) <= budget
			if ok != fits {
				t.Fatalf("step %d: value of %d bytes cached %v, fits %v", i, n, ok, fits)
			}
			if ok && (len(r.value) != n || (n > 0 && r.value[0] != byte(i)) || r.h.version != int64(i)) {
				t.Fatalf("step %d: cached record differs from what was set", i)
			}
		}
		sum := 0
		for _, k := range c.lru.Keys() {
			v, _ := c.lru.Peek(k)
			sum += entryCost(k.key, v.value)
		}
		if sum != c.bytes || c.bytes > budget {
			t.Fatalf("step %d: accounted %d, held %d, budget %d", i, c.bytes, sum, budget)
		}
	}
}

// TestRecordCacheBigValueSmallBudget: values over a budget that is
// smaller than a record: the cache never holds them, state identical.
func TestRecordCacheBigValueSmallBudget(t *testing.T) {
	h := newHarness(t, Options{})
	h.sm.store.recs = newRecordCache(1000)
	h.sm.forgetRecords()
	big := string(bytes.Repeat([]byte("b"), 2000))
	h.apply(putCmd("k", "small"), putCmd("k", big), putCmd("k", "small2"))
	h.apply(putCmd("k", big))
	h.apply(delCmd("k"), putCmd("k", "x"))
	if g := h.get("k"); g.KV.Version != 1 || string(g.KV.Value) != "x" {
		t.Fatalf("k = %+v", g.KV)
	}
	if c := h.sm.store.recs; c.bytes > c.max {
		t.Fatalf("accounted %d over budget %d", c.bytes, c.max)
	}
}

// TestRecordCacheDeletePrefixChunks: a prefix delete over more keys
// than a chunk, all of them cached, then puts of those keys in the same
// Update and the next.
func TestRecordCacheDeletePrefixChunks(t *testing.T) {
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

// TestRecordCacheMemoryWithinBudget fills a store's cache with small
// records (the common case: short keys, short values) and measures the
// heap it holds against the budget it accounts.
func TestRecordCacheMemoryWithinBudget(t *testing.T) {
	for _, vlen := range []int{0, 8, 100, 33 << 10} {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c := newRecordCache(recordCacheBytes)
		v := make([]byte, vlen)
		for i := 0; i < 200_000 && (i < 10 || c.bytes+entryCost("k12345678", v) <= c.max); i++ {
			c.set(uint64(1+i%3), []byte(fmt.Sprintf("k%08d", i)), recordHeader{}, v)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		t.Logf("value %d bytes: %d entries, accounted %d, heap held %d (%.2fx)", vlen, c.lru.Len(), c.bytes, held, float64(held)/float64(c.bytes))
		if held > int64(c.max)*11/10 {
			t.Errorf("value %d bytes: the cache holds %d bytes of heap (%.2fx), budget %d", vlen, held, float64(held)/float64(c.max), c.max)
		}
		runtime.KeepAlive(c)
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
