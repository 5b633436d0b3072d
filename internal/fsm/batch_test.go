package fsm

import (
	"bytes"
	"errors"
	"testing"

	"github.com/dister/dister/internal/errs"
)

func putIn(session, seq uint64, key, value string) *Command {
	return txnCmd(session, seq, &Txn{Then: []Op{{Type: OpPut, Key: key, Value: []byte(value)}}})
}

// TestBatchAppliesEachCommandAsItsOwnEntry: the commands of a batch apply
// in order at consecutive revisions, each with its own result, events and
// dedup id, exactly as consecutive entries would; a command that changes
// nothing takes no revision.
func TestBatchAppliesEachCommandAsItsOwnEntry(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("before", "x")) // revision 1
	cmds := encodeAll(t,
		putIn(5, 1, "a", "1"),        // revision 2
		casCmd(5, 2, "a", "lost", 0), // a exists: changes nothing
		putIn(6, 1, "b", "2"),        // revision 3
		txnCmd(6, 2, &Txn{Then: []Op{{Type: OpDelete, Key: "before"}}}), // revision 4
	)
	batch, err := EncodeBatch(cmds)
	if err != nil {
		t.Fatal(err)
	}
	r := h.applyRaw(batch)[0]
	rs, err := SplitBatchResult(r, len(cmds))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		succeeded bool
		revision  int64
	}{{true, 2}, {false, 2}, {true, 3}, {true, 4}}
	for i, w := range want {
		tr, err := DecodeResult(rs[i])
		if err != nil || tr.Succeeded != w.succeeded || tr.Revision != w.revision || rs[i].Value == 0 {
			t.Fatalf("command %d: %+v %v (value %d), want succeeded %v at %d", i, tr, err, rs[i].Value, w.succeeded, w.revision)
		}
	}
	if rev := h.sm.Revision(); rev != 4 {
		t.Fatalf("revision %d after the batch, want 4", rev)
	}
	evs := h.allEvents(2)
	if len(evs) != 3 || evs[0].KV.Key != "a" || evs[0].Revision != 2 ||
		evs[1].KV.Key != "b" || evs[1].Revision != 3 || evs[2].Type != EventDelete || evs[2].Revision != 4 {
		t.Fatalf("events %+v", evs)
	}

	// Each command's id is remembered on its own: a retry of one of them,
	// alone or in another batch, is answered from the table.
	again := h.applyRaw(cmds[2])[0]
	if !bytes.Equal(again.Data, rs[2].Data) {
		t.Fatalf("retry of command 2 alone: %x, want %x", again.Data, rs[2].Data)
	}
	batch2, _ := EncodeBatch([][]byte{cmds[0], encodeAll(t, putIn(6, 3, "c", "3"))[0]})
	rs2, err := SplitBatchResult(h.applyRaw(batch2)[0], 2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rs2[0].Data, rs[0].Data) {
		t.Fatal("retry of command 0 in a later batch applied again")
	}
	if tr, _ := DecodeResult(rs2[1]); tr == nil || tr.Revision != 5 {
		t.Fatalf("new command after the retry: %+v", tr)
	}
	if kv := h.get("a").KV; kv.Version != 1 || string(kv.Value) != "1" {
		t.Fatalf("a after retries: %+v", kv)
	}
}

// TestBatchFailingCommandDoesNotStopOthers: a command that fails (too many
// keys deleted, a missing lease) answers its error; the others apply.
func TestBatchFailingCommandDoesNotStopOthers(t *testing.T) {
	h := newHarness(t, Options{})
	cmds := encodeAll(t,
		putIn(1, 1, "x", "1"),
		putLeaseCmdIn(1, 2, "y", "2", 99), // no lease 99
		putIn(1, 3, "z", "3"),
	)
	batch, _ := EncodeBatch(cmds)
	rs, err := SplitBatchResult(h.applyRaw(batch)[0], 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeResult(rs[1]); !errors.Is(err, errs.LeaseNotFound) || rs[1].Value != 0 {
		t.Fatalf("command with a missing lease: %v (value %d)", err, rs[1].Value)
	}
	for _, i := range []int{0, 2} {
		if tr, err := DecodeResult(rs[i]); err != nil || !tr.Succeeded {
			t.Fatalf("command %d: %+v %v", i, tr, err)
		}
	}
	if h.get("y").Found || !h.get("z").Found {
		t.Fatal("the failing command changed something, or stopped the next")
	}
}

func putLeaseCmdIn(session, seq uint64, key, value string, lease int64) *Command {
	c := putLeaseCmd(key, value, lease)
	c.Session, c.Seq = session, seq
	return c
}

// TestBatchRefusesWhatIsNotABatchOfTxns: EncodeBatch takes only txn
// commands; a forged batch entry (a lease command inside, trailing bytes,
// a count past the bytes) changes nothing and answers ErrInvalid.
func TestBatchRefusesWhatIsNotABatchOfTxns(t *testing.T) {
	grant := encodeAll(t, grantCmd(1, 10))[0]
	put := encodeAll(t, putIn(1, 1, "k", "v"))[0]
	if _, err := EncodeBatch([][]byte{put, grant}); !errors.Is(err, errs.Invalid) {
		t.Fatalf("batch with a lease grant: %v", err)
	}
	if _, err := EncodeBatch(nil); !errors.Is(err, errs.Invalid) {
		t.Fatalf("empty batch: %v", err)
	}
	good, _ := EncodeBatch([][]byte{put})
	// A batch is the proposer's own doing: DecodeCommand, which checks
	// what clients send, refuses one.
	if _, err := DecodeCommand(good); !errors.Is(err, errs.Invalid) {
		t.Fatalf("DecodeCommand of a batch: %v", err)
	}
	forged := [][]byte{
		append(append([]byte{}, good...), 0),                                            // trailing byte
		{cmdCodecVersion, byte(KindBatch), 5, 1},                                        // count past the bytes
		{cmdCodecVersion, byte(KindBatch), 0},                                           // empty
		append([]byte{cmdCodecVersion, byte(KindBatch), 1, byte(len(grant))}, grant...), // not a txn
	}
	h := newHarness(t, Options{})
	for i, f := range forged {
		r := h.applyRaw(f)[0]
		if _, err := SplitBatchResult(r, 1); !errors.Is(err, errs.Invalid) {
			t.Fatalf("forged batch %d: %v", i, err)
		}
	}
	if h.get("k").Found || h.sm.Revision() != 0 {
		t.Fatal("a forged batch changed the state")
	}
	// The same command, well formed, applies.
	if _, err := SplitBatchResult(h.applyRaw(good)[0], 1); err != nil || !h.get("k").Found {
		t.Fatalf("good batch: %v", err)
	}
}
