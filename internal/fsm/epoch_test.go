package fsm

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/cockroachdb/pebble"

	"github.com/dister/dister/internal/errs"
)

func epochCmd() *Command { return &Command{Kind: KindLeaseEpoch, Epoch: &LeaseEpoch{}} }

// TestLeaseEpochFencesExpiryAndCheckpoint: a deposed leader's lessor (of an
// older epoch) can neither expire a lease nor checkpoint it once a new
// leader committed its epoch.
func TestLeaseEpochFencesExpiryAndCheckpoint(t *testing.T) {
	h := newHarness(t, Options{})
	h.applyLease(grantCmd(1, 10_000))
	h.apply(putLeaseCmd("k", "v", 1))
	if e := h.applyLease(epochCmd())[0]; e.Epoch != 1 {
		t.Fatalf("first epoch %+v", e)
	}
	if e := h.applyLease(epochCmd())[0]; e.Epoch != 2 { // a new leader
		t.Fatalf("second epoch %+v", e)
	}
	if v, err := h.sm.Lookup(EpochQuery{}); err != nil || v.(uint64) != 2 {
		t.Fatalf("EpochQuery: %v %v", v, err)
	}
	// The old leader's expiry and checkpoint change nothing.
	old := revokeCmd(true, 1)
	old.Revoke.Epoch = 1
	h.applyFail(old, errs.NoQuorum)
	cp := checkpointCmd(LeaseRemaining{ID: 1, RemainingMs: 10})
	cp.Checkpoint.Epoch = 1
	h.applyFail(cp, errs.NoQuorum)
	if !h.get("k").Found {
		t.Fatal("a deposed lessor's expiry deleted k")
	}
	if li, _ := h.leaseInfo(1); li.Remaining != 0 {
		t.Fatalf("a deposed lessor's checkpoint was stored: %+v", li)
	}
	// The current epoch's do.
	cp.Checkpoint.Epoch = 2
	h.applyLease(cp)
	if li, _ := h.leaseInfo(1); li.Remaining != 10 {
		t.Fatalf("checkpoint of the current epoch: %+v", li)
	}
	cur := revokeCmd(true, 1)
	cur.Revoke.Epoch = 2
	if r := h.applyLease(cur)[0]; r.Deleted != 1 {
		t.Fatalf("expiry of the current epoch: %+v", r)
	}
	// A client's revoke needs no epoch.
	h.applyLease(grantCmd(2, 10_000))
	h.applyLease(revokeCmd(false, 2))
	// The epoch survives a restart.
	h.sm.Close()
	h.open(Options{})
	if v, _ := h.sm.Lookup(EpochQuery{}); v.(uint64) != 2 {
		t.Fatalf("epoch after reopen: %v", v)
	}
}

// TestLeaseCheckpointClear: a renewal clears a lease's checkpoint, so a new
// leader starts it at its full TTL rather than at a remainder measured
// before the renewal.
func TestLeaseCheckpointClear(t *testing.T) {
	h := newHarness(t, Options{})
	h.applyLease(grantCmd(1, 10_000), grantCmd(2, 10_000))
	h.applyLease(checkpointCmd(LeaseRemaining{ID: 1, RemainingMs: 3000}, LeaseRemaining{ID: 2, RemainingMs: 4000}))
	gen := h.sm.LeaseGeneration()
	h.applyLease(checkpointCmd(LeaseRemaining{ID: 1, RemainingMs: 0}))
	if h.sm.LeaseGeneration() == gen {
		t.Fatal("clearing a checkpoint did not bump the lease generation")
	}
	l := h.leases()
	if len(l.Leases) != 2 || l.Leases[0].Remaining != 0 || l.Leases[1].Remaining != 4000 {
		t.Fatalf("after clearing lease 1: %+v", l.Leases)
	}
}

// TestRevisionContinuesFromAppliedIndex: a data dir written while revisions
// were Raft indexes has no revision counter; the counter continues from the
// applied index, so revisions never go back.
func TestRevisionContinuesFromAppliedIndex(t *testing.T) {
	h := newHarness(t, Options{})
	for range 5 {
		h.apply(putCmd("k", "v"))
	}
	h.applyLease(grantCmd(1, 1000), grantCmd(2, 1000)) // index 6, 7; revision stays 5
	if h.sm.Revision() != 5 || h.sm.Applied() != 7 {
		t.Fatalf("revision %d applied %d", h.sm.Revision(), h.sm.Applied())
	}
	// Make it an old data dir: no revision key.
	h.sm.mu.RLock()
	err := h.sm.db.Delete(metaRevisionKey, pebble.NoSync)
	h.sm.mu.RUnlock()
	if err != nil {
		t.Fatal(err)
	}
	h.sm.Close()
	h.open(Options{})
	if h.sm.Revision() != 7 {
		t.Fatalf("revision of an old data dir: %d, want the applied index 7", h.sm.Revision())
	}
	if v, _ := h.sm.Lookup(RevisionQuery{}); v.(int64) != 7 {
		t.Fatalf("RevisionQuery: %v", v)
	}
	if r := h.apply(putCmd("k", "v"))[0]; r.Revision != 8 {
		t.Fatalf("next write: %+v", r)
	}
}

// TestDecodeCodecVersion1: entries written by the previous codec (no mark,
// time or epochs) still decode, as a log replayed after an upgrade needs.
func TestDecodeCodecVersion1(t *testing.T) {
	put := []byte{1, byte(KindTxn), 7, 3, 0, 1, byte(OpPut), 1, 'k', 1, 'v', 0, 0}
	c, err := DecodeCommand(put)
	if err != nil || c.Session != 7 || c.Seq != 3 || c.Mark != 0 || c.Time != 0 || c.Txn.Then[0].Key != "k" {
		t.Fatalf("v1 put: %+v %v", c, err)
	}
	rev := binary.AppendVarint([]byte{1, byte(KindLeaseRevoke), 0, 0, 1, 1}, 9)
	if c, err := DecodeCommand(rev); err != nil || !c.Revoke.Expired || c.Revoke.Epoch != 0 || c.Revoke.IDs[0] != 9 {
		t.Fatalf("v1 expiry: %+v %v", c, err)
	}
	clear := []byte{1, byte(KindLeaseCheckpoint), 0, 0, 1, 2, 0}
	if _, err := DecodeCommand(clear); !errors.Is(err, errs.Invalid) {
		t.Fatalf("v1 checkpoint with remaining 0: %v", err)
	}
	if _, err := DecodeCommand([]byte{1, byte(KindLeaseEpoch), 0, 0}); !errors.Is(err, errs.Invalid) {
		t.Fatalf("v1 epoch: %v", err)
	}
}

// v1Put and v1Grant are commands as the previous binary encoded them
// (codec version 1, no session).
func v1Put(key, value string) []byte {
	b := []byte{cmdCodecVersionV1, byte(KindTxn), 0, 0, 0, 1, byte(OpPut), byte(len(key))}
	b = append(b, key...)
	b = append(b, byte(len(value)))
	b = append(b, value...)
	return append(b, 0, 0)
}

func v1Grant(id, ttlMs int64) []byte {
	b := []byte{cmdCodecVersionV1, byte(KindLeaseGrant), 0, 0}
	return binary.AppendVarint(binary.AppendVarint(b, id), ttlMs)
}

// TestUpgradeKeepsIndexRevisionsUntilFirstNewCommand: during a rolling
// upgrade the replicas switch binaries at different log indexes. Entries
// the previous binary proposed (codec version 1) keep that binary's
// revision, their index, on every replica; the counter starts at the first
// entry of the new codec, so every replica gives every entry the same
// revision whenever it was upgraded.
func TestUpgradeKeepsIndexRevisionsUntilFirstNewCommand(t *testing.T) {
	oldLog := [][]byte{v1Put("a", "1"), v1Put("b", "1"), v1Grant(5, 1000), v1Put("c", "1"), v1Grant(6, 1000)}
	upgradedAt := func(k int) *harness {
		h := newHarness(t, Options{})
		h.applyRaw(oldLog[:k]...)
		// What the previous binary left: no revision counter.
		h.sm.mu.RLock()
		err := h.sm.db.Delete(metaRevisionKey, pebble.NoSync)
		h.sm.mu.RUnlock()
		if err != nil {
			t.Fatal(err)
		}
		h.sm.Close()
		h.open(Options{})
		h.applyRaw(oldLog[k:]...) // applied by the new binary
		return h
	}
	early, late := upgradedAt(1), upgradedAt(len(oldLog))
	for _, h := range []*harness{early, late} {
		if got := h.get("c").KV.ModRevision; got != 4 {
			t.Fatalf("an entry of the previous binary at index 4 has revision %d", got)
		}
	}
	next := func(h *harness) int64 { return h.apply(putCmd("d", "1"))[0].Revision }
	if e, l := next(early), next(late); e != l || e != 6 {
		t.Fatalf("the first new write: revision %d on a replica upgraded early, %d on one upgraded late; want 6 on both", e, l)
	}
	if e, l := next(early), next(late); e != l || e != 7 {
		t.Fatalf("the second new write: revision %d and %d, want 7", e, l)
	}
	// Reopened, the counter holds.
	early.sm.Close()
	early.open(Options{})
	if r := early.sm.Revision(); r != 7 {
		t.Fatalf("revision after reopening: %d", r)
	}
}
