package fsm

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/dister/dister/internal/errs"
)

func TestDedupAppliesOnce(t *testing.T) {
	h := newHarness(t, Options{})
	put, _ := EncodeCommand(txnCmd(7, 1, &Txn{Then: []Op{{Type: OpPut, Key: "k", Value: []byte("v")}}}))
	first := h.applyRaw(put)[0]
	// A retry in a later Update call and two in one call.
	again := h.applyRaw(put, put)
	for i, r := range again {
		if r.Value == 0 || !bytes.Equal(r.Data, first.Data) {
			t.Fatalf("retry %d: %+v, want %+v", i, r, first)
		}
	}
	if kv := h.get("k").KV; kv.Version != 1 || kv.ModRevision != 1 {
		t.Fatalf("k after retries: %+v", kv)
	}
	// Same session, next seq: a new command, at the next revision (the
	// retries changed nothing, so there is no gap).
	if r := h.apply(txnCmd(7, 2, &Txn{Then: []Op{{Type: OpPut, Key: "k", Value: []byte("v")}}}))[0]; r.Revision != 2 {
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
		if err != nil || !tr.Succeeded || tr.Revision != 1 || r.Value == 0 {
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

// sessCmd is a put of key by (session, seq) with mark and time.
func sessCmd(session, seq, mark uint64, ms int64, key string) *Command {
	c := txnCmd(session, seq, &Txn{Then: []Op{{Type: OpPut, Key: key, Value: []byte("v")}}})
	c.Mark, c.Time = mark, ms
	return c
}

// TestSessionRetryAfterManyCommands: exactly-once does not depend on load.
// A retry that comes after 200,000 other commands (more than a count-bound
// table kept, and more than a busy group applies in the 3 s a proposal
// attempt may take) is still answered from the table while its proposer
// has not had the answer.
func TestSessionRetryAfterManyCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("applies 200,000 commands")
	}
	h := newHarness(t, Options{})
	const now = 1_700_000_000_000
	slow := sessCmd(1, 5, 5, now, "slow")
	first := h.apply(slow)[0]
	// Other proposers keep writing, each acknowledging its own answers.
	batch := make([]*Command, 0, 1000)
	for i := uint64(1); i <= 200_000; i++ {
		batch = append(batch, sessCmd(2+i%4, i, i, now+int64(i/100), "busy"))
		if len(batch) == cap(batch) {
			h.apply(batch...)
			batch = batch[:0]
		}
	}
	again := h.apply(slow)[0]
	if !reflect.DeepEqual(first, again) {
		t.Fatalf("retry after 200,000 commands: %+v, want the first answer %+v", again, first)
	}
	if kv := h.get("slow").KV; kv.Version != 1 {
		t.Fatalf("slow applied twice: version %d", kv.Version)
	}
	// The busy sessions keep only their outstanding results: one each.
	if d := countPrefix(t, h.sm, prefixDedupID); d != 5 {
		t.Fatalf("%d stored results, want 5 (1 of session 1 + 1 per busy session)", d)
	}
}

// TestSessionMarkForgetsAnsweredAndRefusesLateCopies: results below a
// session's mark are deleted, and a late copy of such a command (still in
// some log after its proposer had its answer or gave up) is refused rather
// than applied a second time.
func TestSessionMarkForgetsAnsweredAndRefusesLateCopies(t *testing.T) {
	h := newHarness(t, Options{})
	for seq := uint64(1); seq <= 10; seq++ {
		h.apply(sessCmd(9, seq, 1, 1000, "k")) // nothing answered yet
	}
	if d := countPrefix(t, h.sm, prefixDedupID); d != 10 {
		t.Fatalf("%d stored results, want 10", d)
	}
	// Seqs 1..7 answered: the next command carries mark 8.
	h.apply(sessCmd(9, 11, 8, 1001, "k"))
	if d := countPrefix(t, h.sm, prefixDedupID); d != 4 {
		t.Fatalf("%d stored results after mark 8, want 4 (8..11)", d)
	}
	version := h.get("k").KV.Version
	late, _ := EncodeCommand(sessCmd(9, 3, 1, 1000, "k"))
	r := h.applyRaw(late)[0]
	if _, err := DecodeResult(r); !errors.Is(err, errs.UnknownOutcome) || r.Value != 0 {
		t.Fatalf("late copy below the mark: %+v %v", r, err)
	}
	if v := h.get("k").KV.Version; v != version {
		t.Fatalf("late copy applied: version %d -> %d", version, v)
	}
	// Seqs at or above the mark are still answered from the table.
	if r := h.apply(sessCmd(9, 9, 1, 1000, "k"))[0]; r.Revision != 9 {
		t.Fatalf("retry of seq 9: %+v", r)
	}
	if v := h.get("k").KV.Version; v != version {
		t.Fatalf("retry applied: version %d -> %d", version, v)
	}
	// A command whose mark is above its own seq is malformed.
	if _, err := EncodeCommand(sessCmd(9, 12, 13, 0, "k")); !errors.Is(err, errs.Invalid) {
		t.Fatalf("mark above seq: %v", err)
	}
}

// TestSessionHorizon: a session idle for longer than the horizon on the
// proposers' clocks is forgotten at the next sweep (every 1024 entries);
// the applying server's clock plays no part.
func TestSessionHorizon(t *testing.T) {
	const horizon = 60_000
	h := newHarness(t, Options{SessionHorizon: horizon})
	h.apply(sessCmd(1, 1, 1, 1_000, "idle"))
	// Another proposer writes until the index passes a sweep, within the
	// horizon of the idle session's last command.
	for h.idx < sweepEvery {
		h.apply(sessCmd(2, h.idx, h.idx, 1_000+horizon, "busy"))
	}
	if n := countPrefix(t, h.sm, prefixSession); n != 2 {
		t.Fatalf("%d sessions within the horizon, want 2", n)
	}
	for h.idx < 2*sweepEvery {
		h.apply(sessCmd(2, h.idx, h.idx, 1_001+horizon, "busy"))
	}
	if n := countPrefix(t, h.sm, prefixSession); n != 1 {
		t.Fatalf("%d sessions after the idle one passed the horizon, want 1", n)
	}
	if d := countPrefix(t, h.sm, prefixDedupID); d != 1 {
		t.Fatalf("%d stored results, want 1 (the busy session's last)", d)
	}
	// The state survives a restart: the table is reloaded from pebble.
	h.sm.Close()
	h.open(Options{SessionHorizon: horizon})
	if r := h.apply(sessCmd(2, h.idx, h.idx, 1_002+horizon, "busy"))[0]; r.Revision == 0 {
		t.Fatalf("after reopen: %+v", r)
	}
	if n := countPrefix(t, h.sm, prefixSession); n != 1 {
		t.Fatalf("%d sessions after reopen, want 1", n)
	}
}

// TestDedupIndependentOfBatching applies the same log in different Update
// batchings: results and the saved state must be identical, since replicas
// batch differently. The log repeats ids, moves marks, and crosses sweeps.
func TestDedupIndependentOfBatching(t *testing.T) {
	var log [][]byte
	for i := 0; i < 2100; i++ {
		session := uint64(1 + i%3)
		seq := uint64(i/3) + uint64(i%7)%3 // repeats
		mark := uint64(0)
		if i%5 == 0 && seq > 2 {
			mark = seq - 2
		}
		c := txnCmd(session, seq, &Txn{
			Compares: []Compare{{Key: "n", Target: TargetVersion, Op: OpLess, Int: int64(i % 17)}},
			Then:     []Op{{Type: OpPut, Key: "n", Value: []byte{byte(i)}}},
			Else:     []Op{{Type: OpDelete, Key: "n"}},
		})
		c.Mark, c.Time = mark, int64(i*10)*int64(session)
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		log = append(log, b)
	}
	var results [][]Result
	var snaps [][]byte
	for _, batch := range []int{1, 3, 7, 1000} {
		h := newHarness(t, Options{SessionHorizon: 2000})
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
