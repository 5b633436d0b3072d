package fsm

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/dister/dister/internal/errs"
)

// applyFail applies one command that must fail with want; it returns the
// raw result.
func (h *harness) applyFail(c *Command, want error) Result {
	h.t.Helper()
	r := h.applyRaw(encodeAll(h.t, c)...)[0]
	if r.Value != 0 {
		h.t.Fatalf("failed command has Value %d", r.Value)
	}
	var err error
	if c.Kind == KindTxn {
		_, err = DecodeResult(r)
	} else {
		_, err = DecodeLeaseResult(r)
	}
	if !errors.Is(err, want) {
		h.t.Fatalf("error %v, want %v", err, want)
	}
	return r
}

func TestLeaseGrant(t *testing.T) {
	h := newHarness(t, Options{})
	gen := h.sm.LeaseGeneration()
	rs := h.applyLease(grantCmd(0, 5000), grantCmd(100, 60_000)) // index 1, 2; no key changes: revision 0
	if *rs[0] != (LeaseResult{Revision: 0, ID: 1, TTL: 5000}) || *rs[1] != (LeaseResult{Revision: 0, ID: 100, TTL: 60_000}) {
		t.Fatalf("grants %+v %+v", rs[0], rs[1])
	}
	if h.sm.LeaseGeneration() == gen {
		t.Fatal("generation not bumped by grants")
	}
	gen = h.sm.LeaseGeneration()
	// Granting an existing id: a conflict, the same bytes on every replica,
	// nothing changed. Id 0 at index 100 would be lease 100 too.
	r1 := h.applyFail(grantCmd(100, 1), errs.Conflict) // 3
	r2 := h.applyFail(grantCmd(100, 1), errs.Conflict) // 4
	if !bytes.Equal(r1.Data, r2.Data) {
		t.Fatal("conflict results differ")
	}
	for h.idx < 99 {
		h.apply(putCmd("filler", "x")) // index 5..99: revision 1..95
	}
	h.applyFail(grantCmd(0, 1), errs.Conflict) // 100
	if h.sm.LeaseGeneration() != gen {
		t.Fatal("generation bumped by failed grants")
	}
	l := h.leases()
	if l.Revision != 95 || !reflect.DeepEqual(l.Leases, []LeaseInfo{{ID: 1, TTL: 5000}, {ID: 100, TTL: 60_000}}) {
		t.Fatalf("leases %+v", l)
	}
	info, err := h.leaseInfo(100)
	if err != nil || !reflect.DeepEqual(info, &LeaseInfo{ID: 100, TTL: 60_000, Keys: []string{}, Revision: 95}) {
		t.Fatalf("lease 100: %+v %v", info, err)
	}
	if _, err := h.leaseInfo(5); !errors.Is(err, errs.LeaseNotFound) {
		t.Fatalf("lease 5: %v", err)
	}
	for _, q := range []any{LeaseQuery{ID: 0}, LeaseQuery{ID: -1}, (*LeaseQuery)(nil), (*LeasesQuery)(nil)} {
		if _, err := h.sm.Lookup(q); !errors.Is(err, errs.Invalid) {
			t.Errorf("%#v: %v", q, err)
		}
	}
	if _, err := h.sm.Lookup(&LeasesQuery{}); err != nil {
		t.Fatal(err)
	}
	// A deduplicated grant answers the same lease; a failed one the same
	// error, with Value 0 both times.
	g := encodeAll(t, &Command{Session: 3, Seq: 1, Kind: KindLeaseGrant, Grant: &LeaseGrant{TTL: 10}})[0]
	first := h.applyRaw(g)[0]
	if again := h.applyRaw(g, g); !reflect.DeepEqual(again[0], first) || !reflect.DeepEqual(again[1], first) {
		t.Fatal("repeated grant answered differently")
	}
	c := encodeAll(t, &Command{Session: 3, Seq: 2, Kind: KindLeaseGrant, Grant: &LeaseGrant{ID: 1, TTL: 10}})[0]
	first = h.applyRaw(c)[0]
	if again := h.applyRaw(c)[0]; !reflect.DeepEqual(again, first) || first.Value != 0 {
		t.Fatalf("repeated failed grant: %+v vs %+v", again, first)
	}
	// Decoding a lease result as a txn result and back is an error.
	if _, err := DecodeResult(h.applyRaw(encodeAll(t, grantCmd(0, 1))...)[0]); !errors.Is(err, errs.Invalid) {
		t.Fatal(err)
	}
	if _, err := DecodeLeaseResult(h.applyRaw(encodeAll(t, putCmd("a", "b"))...)[0]); !errors.Is(err, errs.Invalid) {
		t.Fatal(err)
	}
}

func TestLeasePutAndRevoke(t *testing.T) {
	h := newHarness(t, Options{})
	h.applyLease(grantCmd(10, 1000), grantCmd(20, 1000))                                                          // no key changes
	h.apply(putLeaseCmd("a", "1", 10), putLeaseCmd("b", "1", 10), putLeaseCmd("c", "1", 20), putCmd("free", "1")) // revisions 1..4
	if kv := h.get("a").KV; kv.Lease != 10 {
		t.Fatalf("a = %+v", kv)
	}
	info, _ := h.leaseInfo(10)
	if !reflect.DeepEqual(info.Keys, []string{"a", "b"}) {
		t.Fatalf("lease 10 keys %v", info.Keys)
	}

	// A put to a missing lease fails as a whole: the other ops do not run.
	before := h.list(ListQuery{})
	h.applyFail(txnCmd(0, 0, &Txn{Then: []Op{ // changes nothing
		{Type: OpPut, Key: "x", Value: []byte("1")},
		{Type: OpDelete, Key: "free"},
		{Type: OpPut, Key: "y", Value: []byte("1"), Lease: 30},
	}}), errs.LeaseNotFound)
	if after := h.list(ListQuery{}); !reflect.DeepEqual(before.KVs, after.KVs) {
		t.Fatal("failed txn changed the state")
	}
	// Only the branch that runs is checked.
	r := h.apply(txnCmd(0, 0, &Txn{ // 5
		Compares: []Compare{{Key: "free", Target: TargetVersion, Op: OpEqual, Int: 1}},
		Then:     []Op{{Type: OpPut, Key: "d", Value: []byte("1"), Lease: 20}},
		Else:     []Op{{Type: OpPut, Key: "y", Value: []byte("1"), Lease: 30}},
	}))[0]
	if !r.Succeeded {
		t.Fatal("compare failed")
	}
	if evs := h.allEvents(5); len(evs) != 1 || evs[0].KV.Key != "d" || evs[0].KV.Lease != 20 {
		t.Fatalf("events %s", fmtEvents(evs))
	}

	// Revoke deletes the attached keys with delete events at one revision.
	gen := h.sm.LeaseGeneration()
	lr := h.applyLease(revokeCmd(false, 10))[0] // 6
	if lr.Deleted != 2 || lr.Revision != 6 {
		t.Fatalf("revoke %+v", lr)
	}
	if h.sm.LeaseGeneration() == gen {
		t.Fatal("generation not bumped by revoke")
	}
	wantEvents(t, h.allEvents(6), []Event{
		delEv(6, "a", kvp("a", rec("1", 1, 1, 1, 10))),
		delEv(6, "b", kvp("b", rec("1", 2, 2, 1, 10))),
	})
	if h.get("a").Found || h.get("b").Found || !h.get("c").Found || !h.get("free").Found {
		t.Fatal("wrong keys deleted")
	}
	if _, err := h.leaseInfo(10); !errors.Is(err, errs.LeaseNotFound) {
		t.Fatalf("lease 10 after revoke: %v", err)
	}
	// Revoking it again, or with another unknown id: not found, nothing changes.
	h.applyFail(revokeCmd(false, 10), errs.LeaseNotFound)
	h.applyFail(revokeCmd(false, 20, 10), errs.LeaseNotFound)
	if !h.get("c").Found {
		t.Fatal("a failed revoke deleted keys")
	}
	if _, err := h.leaseInfo(20); err != nil {
		t.Fatal(err)
	}
	// A put to a revoked lease fails.
	h.applyFail(putLeaseCmd("a", "2", 10), errs.LeaseNotFound)
	checkLeaseIndex(t, h.sm)
	if n := countPrefix(t, h.sm, prefixAttach); n != 2 {
		t.Fatalf("%d attachments, want 2 (c, d)", n)
	}
}

func TestLeaseExpiredRevoke(t *testing.T) {
	h := newHarness(t, Options{})
	h.applyLease(grantCmd(1, 10), grantCmd(2, 10), grantCmd(3, 10))                                              // no key changes
	h.apply(putLeaseCmd("k1", "v", 1), putLeaseCmd("k2a", "v", 2), putLeaseCmd("k2b", "v", 2), putCmd("k", "v")) // 1..4
	lr := h.applyLease(revokeCmd(true, 9, 2, 1, 8, 2))[0]                                                        // 5: unknown ids skipped, 2 listed twice
	if lr.Deleted != 3 {
		t.Fatalf("deleted %d", lr.Deleted)
	}
	// Events follow the ids' order, then key order, all at revision 5.
	wantEvents(t, h.allEvents(5), []Event{
		delEv(5, "k2a", kvp("k2a", rec("v", 2, 2, 1, 2))),
		delEv(5, "k2b", kvp("k2b", rec("v", 3, 3, 1, 2))),
		delEv(5, "k1", kvp("k1", rec("v", 1, 1, 1, 1))),
	})
	if l := h.leases(); len(l.Leases) != 1 || l.Leases[0].ID != 3 {
		t.Fatalf("leases %+v", l)
	}
	// All unknown: nothing to do, no error.
	if lr := h.applyLease(revokeCmd(true, 1, 2))[0]; lr.Deleted != 0 {
		t.Fatalf("%+v", lr)
	}
	if got := listKeys(h.list(ListQuery{})); !reflect.DeepEqual(got, []string{"k"}) {
		t.Fatalf("keys %v", got)
	}
	checkLeaseIndex(t, h.sm)
}

func TestLeaseMoveKey(t *testing.T) {
	h := newHarness(t, Options{})
	h.applyLease(grantCmd(1, 10), grantCmd(2, 10))
	h.apply(putLeaseCmd("k", "v1", 1), putLeaseCmd("j", "v1", 1))
	h.apply(putLeaseCmd("k", "v2", 2)) // moves k from 1 to 2
	keys := func(id int64) []string {
		info, err := h.leaseInfo(id)
		if err != nil {
			t.Fatal(err)
		}
		return info.Keys
	}
	if !reflect.DeepEqual(keys(1), []string{"j"}) || !reflect.DeepEqual(keys(2), []string{"k"}) {
		t.Fatalf("after move: %v %v", keys(1), keys(2))
	}
	if lr := h.applyLease(revokeCmd(false, 1))[0]; lr.Deleted != 1 || !h.get("k").Found || h.get("j").Found {
		t.Fatalf("revoke 1: %+v", lr)
	}
	h.apply(putLeaseCmd("k", "v3", 2)) // same lease again
	if !reflect.DeepEqual(keys(2), []string{"k"}) {
		t.Fatal(keys(2))
	}
	h.apply(putCmd("k", "v4")) // detached
	if len(keys(2)) != 0 {
		t.Fatal(keys(2))
	}
	if lr := h.applyLease(revokeCmd(false, 2))[0]; lr.Deleted != 0 || !h.get("k").Found {
		t.Fatalf("revoke 2 deleted a detached key: %+v", lr)
	}
	// Deletes (single, prefix, in a txn) remove attachments.
	h.applyLease(grantCmd(3, 10))
	h.apply(putLeaseCmd("p/1", "v", 3), putLeaseCmd("p/2", "v", 3), putLeaseCmd("q", "v", 3))
	h.apply(delPrefixCmd("p/"), delCmd("q"))
	if len(keys(3)) != 0 || countPrefix(t, h.sm, prefixAttach) != 0 {
		t.Fatalf("attachments left: %v", keys(3))
	}
	// Put then delete then put again in one txn.
	h.apply(txnCmd(0, 0, &Txn{Then: []Op{
		{Type: OpPut, Key: "t", Value: []byte("1"), Lease: 3},
		{Type: OpDelete, Key: "t"},
		{Type: OpPut, Key: "u", Value: []byte("1"), Lease: 3},
		{Type: OpPut, Key: "u", Value: []byte("2")},
		{Type: OpPut, Key: "w", Value: []byte("2"), Lease: 3},
	}}))
	if !reflect.DeepEqual(keys(3), []string{"w"}) {
		t.Fatal(keys(3))
	}
	checkLeaseIndex(t, h.sm)
}

func TestLeaseCheckpoint(t *testing.T) {
	h := newHarness(t, Options{})
	h.applyLease(grantCmd(1, 10_000), grantCmd(2, 3000))
	gen := h.sm.LeaseGeneration()
	h.applyLease(checkpointCmd(
		LeaseRemaining{ID: 1, RemainingMs: 4000},
		LeaseRemaining{ID: 2, RemainingMs: 9000}, // above the TTL: clamped
		LeaseRemaining{ID: 3, RemainingMs: 100},  // unknown: skipped
	))
	if h.sm.LeaseGeneration() == gen {
		t.Fatal("generation not bumped by a checkpoint")
	}
	want := []LeaseInfo{{ID: 1, TTL: 10_000, Remaining: 4000}, {ID: 2, TTL: 3000, Remaining: 3000}}
	if l := h.leases(); !reflect.DeepEqual(l.Leases, want) {
		t.Fatalf("leases %+v", l.Leases)
	}
	// The same checkpoint again changes nothing and bumps nothing; nor does a put.
	gen = h.sm.LeaseGeneration()
	h.applyLease(checkpointCmd(LeaseRemaining{ID: 1, RemainingMs: 4000}, LeaseRemaining{ID: 3, RemainingMs: 1}))
	h.apply(putLeaseCmd("k", "v", 1))
	if h.sm.LeaseGeneration() != gen {
		t.Fatal("generation bumped without a lease change")
	}
	if n := countPrefix(t, h.sm, prefixEvent); n != 1 {
		t.Fatalf("%d events; lease commands other than revoke have none", n)
	}
	// Open bumps the generation (a fresh StateMachine starts from it).
	if err := h.sm.Close(); err != nil {
		t.Fatal(err)
	}
	h.open(Options{})
	if h.sm.LeaseGeneration() == 0 {
		t.Fatal("generation 0 after Open")
	}
	if l := h.leases(); !reflect.DeepEqual(l.Leases, want) {
		t.Fatalf("leases after reopen %+v", l.Leases)
	}
}

func TestLeaseCommandValidation(t *testing.T) {
	many := make([]int64, MaxLeaseBatch+1)
	for i := range many {
		many[i] = int64(i + 1)
	}
	cps := make([]LeaseRemaining, MaxLeaseBatch+1)
	for i := range cps {
		cps[i] = LeaseRemaining{ID: 1, RemainingMs: 1}
	}
	cases := []struct {
		name string
		c    *Command
		want error
	}{
		{"grant", grantCmd(0, 1), nil},
		{"grant max", grantCmd(1<<63-1, MaxLeaseTTL), nil},
		{"grant ttl 0", grantCmd(0, 0), errs.Invalid},
		{"grant ttl over", grantCmd(0, MaxLeaseTTL+1), errs.Invalid},
		{"grant negative id", grantCmd(-1, 10), errs.Invalid},
		{"grant nil", &Command{Kind: KindLeaseGrant}, errs.Invalid},
		{"grant with txn", &Command{Kind: KindLeaseGrant, Grant: &LeaseGrant{TTL: 1}, Txn: &Txn{}}, errs.Invalid},
		{"txn with grant", &Command{Kind: KindTxn, Grant: &LeaseGrant{TTL: 1}, Txn: &Txn{}}, errs.Invalid},
		{"revoke", revokeCmd(false, 1), nil},
		{"revoke none", revokeCmd(true), errs.Invalid},
		{"revoke id 0", revokeCmd(true, 1, 0), errs.Invalid},
		{"revoke max", revokeCmd(true, many[:MaxLeaseBatch]...), nil},
		{"revoke too many", revokeCmd(true, many...), errs.TooLarge},
		{"revoke nil", &Command{Kind: KindLeaseRevoke}, errs.Invalid},
		{"checkpoint", checkpointCmd(LeaseRemaining{ID: 1, RemainingMs: MaxLeaseTTL}), nil},
		{"checkpoint none", checkpointCmd(), errs.Invalid},
		{"checkpoint clear", checkpointCmd(LeaseRemaining{ID: 1}), nil},
		{"checkpoint negative", checkpointCmd(LeaseRemaining{ID: 1, RemainingMs: -1}), errs.Invalid},
		{"epoch", &Command{Kind: KindLeaseEpoch, Epoch: &LeaseEpoch{}}, nil},
		{"epoch nil", &Command{Kind: KindLeaseEpoch}, errs.Invalid},
		{"checkpoint over", checkpointCmd(LeaseRemaining{ID: 1, RemainingMs: MaxLeaseTTL + 1}), errs.Invalid},
		{"checkpoint id 0", checkpointCmd(LeaseRemaining{RemainingMs: 1}), errs.Invalid},
		{"checkpoint too many", checkpointCmd(cps...), errs.TooLarge},
		{"checkpoint with revoke", &Command{Kind: KindLeaseCheckpoint, Checkpoint: &LeaseCheckpoint{Checkpoints: cps[:1]}, Revoke: &LeaseRevoke{IDs: []int64{1}}}, errs.Invalid},
		{"put negative lease", putLeaseCmd("k", "v", -1), errs.Invalid},
	}
	h := newHarness(t, Options{})
	for _, c := range cases {
		b, err := EncodeCommand(c.c)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: EncodeCommand = %v, want %v", c.name, err, c.want)
			continue
		}
		if err == nil {
			got, err := DecodeCommand(b)
			if err != nil || !reflect.DeepEqual(got, c.c) {
				t.Errorf("%s: round trip %+v %v", c.name, got, err)
			}
			continue
		}
		// Forged past the encoder's checks, Update refuses it the same way.
		// (Only a command with exactly its own payload can be forged: the
		// encoding carries no other.)
		own := map[CmdKind]bool{KindTxn: c.c.Txn != nil, KindLeaseGrant: c.c.Grant != nil, KindLeaseRevoke: c.c.Revoke != nil, KindLeaseCheckpoint: c.c.Checkpoint != nil}
		n := 0
		for _, set := range own {
			if set {
				n++
			}
		}
		if own[c.c.Kind] && n == 1 {
			forged := encodeCommand(c.c)
			r := h.applyRaw(forged)[0]
			// A count over a limit is corrupt input (Invalid), as for txns.
			if _, err := DecodeLeaseResult(r); r.Value != 0 || !errors.Is(err, c.want) && !errors.Is(err, errs.Invalid) {
				t.Errorf("%s: forged via Update: %v", c.name, err)
			}
		}
	}
	if h.leases().Leases != nil {
		t.Fatal("an invalid command made a lease")
	}
	// Structural corruption of lease commands.
	good := encodeAll(t, revokeCmd(true, 1, 2))[0]
	for name, b := range map[string][]byte{
		// version, kind, session, seq, mark, time; expired; epoch; count
		"expired byte 2":  append(append([]byte(nil), good[:6]...), append([]byte{2}, good[7:]...)...),
		"count over data": append(append([]byte(nil), good[:8]...), 50, 1),
		"count huge":      append(append([]byte(nil), good[:8]...), 0xff, 0xff, 0xff, 0xff, 0x0f),
		"truncated":       good[:len(good)-1],
		"trailing":        append(append([]byte(nil), good...), 0),
		"grant truncated": encodeAll(t, grantCmd(5, 5))[0][:7],
	} {
		if _, err := DecodeCommand(b); !errors.Is(err, errs.Invalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
