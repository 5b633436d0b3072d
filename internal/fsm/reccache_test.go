package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"testing"
)

// TestRecordCacheKeepsStateIdentical applies a mixed log (puts with and
// without leases, deletes, prefix deletes, txns writing a key twice,
// revokes, retries) with a record cache that holds nothing, one that
// evicts all the time and the store's own: every hit is checked against
// the store as it is read, and results, events and state must be the
// same in all three.
func TestRecordCacheKeepsStateIdentical(t *testing.T) {
	log := mixedLog(t, 3*eventTrimEvery)
	o := Options{SessionHorizon: 50_000, EventRetention: 300}
	var (
		results [][]Result
		snaps   [][]byte
		events  [][]Event
	)
	for _, budget := range []int{0, 4 * recordCacheOverhead, recordCacheBytes} {
		h := newHarness(t, o)
		h.sm.store.recs = newRecordCache(budget)
		h.sm.forgetRecords()
		var rs []Result
		for i := 0; i < len(log); i += 7 {
			rs = append(rs, h.applyRaw(log[i:min(i+7, len(log))]...)...)
		}
		results = append(results, rs)
		snaps = append(snaps, saveSnapshot(t, h.sm))
		events = append(events, h.allEvents(h.sm.CompactRevision()))
		if c := h.sm.store.recs; c.bytes > budget || c.bytes < 0 {
			t.Fatalf("budget %d: the cache accounts %d bytes", budget, c.bytes)
		}
	}
	for i := 1; i < len(results); i++ {
		if !reflect.DeepEqual(results[0], results[i]) {
			t.Fatalf("cache %d: results differ from those without a cache", i)
		}
		if !bytes.Equal(snaps[0], snaps[i]) {
			t.Fatalf("cache %d: state differs from that without a cache", i)
		}
		if !reflect.DeepEqual(events[0], events[i]) {
			t.Fatalf("cache %d: events differ from those without a cache", i)
		}
	}
}

// TestRecordCacheForgetsFailedUpdate: an Update that fails drops its batch,
// so the records it cached must not be read by the next one.
func TestRecordCacheForgetsFailedUpdate(t *testing.T) {
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

// TestRecordCacheAfterRecovery: a replica whose cache holds a key's record
// installs a snapshot in which the key is another: a put after it counts
// from the snapshot's record.
func TestRecordCacheAfterRecovery(t *testing.T) {
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
