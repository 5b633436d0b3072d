package fsm

import (
	"bytes"
	"math"
	"reflect"
	"testing"
)

func TestDedupAppliesOnce(t *testing.T) {
	h := newHarness(t, Options{})
	put, _ := EncodeCommand(txnCmd(7, 1, &Txn{Then: []Op{{Type: OpPut, Key: "k", Value: []byte("v")}}}))
	first := h.applyRaw(put)[0]
	// A retry in a later Update call and two in one call.
	again := h.applyRaw(put, put)
	for i, r := range again {
		if !reflect.DeepEqual(r, first) {
			t.Fatalf("retry %d: %+v, want %+v", i, r, first)
		}
	}
	if kv := h.get("k").KV; kv.Version != 1 || kv.ModRevision != 1 {
		t.Fatalf("k after retries: %+v", kv)
	}
	// Same session, next seq: a new command.
	if r := h.apply(txnCmd(7, 2, &Txn{Then: []Op{{Type: OpPut, Key: "k", Value: []byte("v")}}}))[0]; r.Revision != 4 {
		t.Fatalf("seq 2: %+v", r)
	}
	if kv := h.get("k").KV; kv.Version != 2 {
		t.Fatalf("k version %d, want 2", kv.Version)
	}
	// Session 0 is never deduplicated.
	p0, _ := EncodeCommand(putCmd("z", "v"))
	h.applyRaw(p0, p0)
	if kv := h.get("z").KV; kv.Version != 2 {
		t.Fatalf("session 0 deduplicated: %+v", kv)
	}
}

func TestDedupRetriedCASReportsSuccess(t *testing.T) {
	h := newHarness(t, Options{})
	cas, _ := EncodeCommand(casCmd(3, 9, "lock", "me", 0))
	// Original and retry land in the same Update call, and again later.
	rs := h.applyRaw(cas, cas)
	rs = append(rs, h.applyRaw(cas)...)
	for i, r := range rs {
		tr, err := DecodeResult(r)
		if err != nil || !tr.Succeeded || tr.Revision != 1 || r.Value != 1 {
			t.Fatalf("attempt %d: %+v %v", i, tr, err)
		}
		if !bytes.Equal(r.Data, rs[0].Data) {
			t.Fatalf("attempt %d: result bytes differ", i)
		}
	}
	// A different id with the same CAS is a real conflict.
	if r := h.apply(casCmd(3, 10, "lock", "me", 0))[0]; r.Succeeded {
		t.Fatal("a new CAS on an existing key succeeded")
	}
}

func TestDedupWindowTrim(t *testing.T) {
	const window = 5
	h := newHarness(t, Options{DedupWindow: window})
	cmd := func(seq uint64) *Command {
		return txnCmd(1, seq, &Txn{Then: []Op{{Type: OpPut, Key: "k", Value: []byte("v")}}})
	}
	// (1,1) applied at index 1 is answered from the table up to index 5 and
	// forgotten from index 6 on (1 + window <= 6).
	h.apply(cmd(1))
	h.apply(putCmd("filler", "x"), putCmd("filler", "x")) // 2, 3
	if r := h.apply(cmd(1))[0]; r.Revision != 1 {         // 4
		t.Fatalf("retry inside window: %+v", r)
	}
	h.apply(putCmd("filler", "x")) // 5
	if r := h.apply(cmd(1))[0]; r.Revision != 6 {
		t.Fatalf("retry outside window was deduplicated: %+v", r)
	}
	if kv := h.get("k").KV; kv.Version != 2 {
		t.Fatalf("k version %d, want 2", kv.Version)
	}
	// Now (1,1) is stored at index 6; a retry at 7 is inside.
	if r := h.apply(cmd(1))[0]; r.Revision != 6 {
		t.Fatalf("retry inside window: %+v", r)
	}
	// Fill with many sessions and check the table stays bounded.
	for seq := uint64(100); seq < 140; seq++ {
		h.apply(txnCmd(2, seq, &Txn{Then: []Op{{Type: OpPut, Key: "f", Value: []byte("v")}}}))
	}
	d, x := countPrefix(t, h.sm, prefixDedupID), countPrefix(t, h.sm, prefixDedupIdx)
	if d != x || d > window {
		t.Fatalf("dedup table: %d by id, %d by index; want equal and <= %d", d, x, window)
	}
}

// TestDedupIndependentOfBatching applies the same log in different Update
// batchings: results and the saved state must be identical, since replicas
// batch differently.
func TestDedupIndependentOfBatching(t *testing.T) {
	var log [][]byte
	for i := 0; i < 60; i++ {
		seq := uint64(i % 13) // ids repeat, inside and outside the window
		c, err := EncodeCommand(txnCmd(uint64(1+i%2), seq, &Txn{
			Compares: []Compare{{Key: "n", Target: TargetVersion, Op: OpLess, Int: int64(i)}},
			Then:     []Op{{Type: OpPut, Key: "n", Value: []byte{byte(i)}}},
			Else:     []Op{{Type: OpDelete, Key: "n"}},
		}))
		if err != nil {
			t.Fatal(err)
		}
		log = append(log, c)
	}
	var results [][]Result
	var snaps [][]byte
	for _, batch := range []int{1, 3, 7, 60} {
		h := newHarness(t, Options{DedupWindow: 8})
		var rs []Result
		for i := 0; i < len(log); i += batch {
			rs = append(rs, h.applyRaw(log[i:min(i+batch, len(log))]...)...)
		}
		results = append(results, rs)
		snaps = append(snaps, saveSnapshot(t, h.sm))
	}
	for i := 1; i < len(results); i++ {
		if !reflect.DeepEqual(results[0], results[i]) {
			t.Fatalf("batching %d: results differ", i)
		}
		if !bytes.Equal(snaps[0], snaps[i]) {
			t.Fatalf("batching %d: state differs", i)
		}
	}
}

func TestDedupHugeWindow(t *testing.T) {
	h := newHarness(t, Options{DedupWindow: math.MaxUint64})
	c := casCmd(1, 1, "k", "v", 0)
	h.apply(c)
	h.apply(putCmd("x", "y"))
	if r := h.apply(c)[0]; !r.Succeeded || r.Revision != 1 {
		t.Fatalf("retry: %+v", r)
	}
}
