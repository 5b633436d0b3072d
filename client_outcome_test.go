package dister_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
	"github.com/dister/dister/internal/testcluster"
)

// A client-role write that goes alone (nothing else in flight: send's
// direct path) and reached the leader's log, but could not commit before
// its deadline, may commit later: it says ErrUnknownOutcome, as the same
// write does on a server node (TestWriteWithoutMajorityHasUnknownOutcome)
// and as a batched one does. (It said the deadline with ErrNoQuorum,
// "surely not applied", before a review found it.)
func TestClientLoneWriteTimeoutAfterSubmit(t *testing.T) {
	c := testcluster.New(t, 3)
	cl := openClient(t, c, 0)
	ctx := ctxT(t)
	if _, err := cl.KV().Put(ctx, "k", []byte("before")); err != nil {
		t.Fatal(err)
	}
	followers, leader := c.Followers()
	ln := c.Node(leader)
	var submitted atomic.Bool
	dister.SetSubmitHook(ln, func(uint64) { submitted.Store(true) })
	for try := 0; ; try++ {
		for _, f := range followers {
			c.Stop(f)
		}
		submitted.Store(false)
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cl.KV().Put(wctx, "k", []byte("maybe"))
		cancel()
		if !submitted.Load() {
			if try == 4 {
				t.Fatal("the leader stepped down before every write")
			}
			for _, f := range followers {
				c.Restart(f)
			}
			c.WaitReady()
			continue
		}
		t.Logf("client write submitted to the leader's log, not committed by its deadline: %v", err)
		if !errors.Is(err, dister.ErrUnknownOutcome) || errors.Is(err, dister.ErrNoQuorum) {
			t.Errorf("write that reached the leader's log: %v; want ErrUnknownOutcome (and not ErrNoQuorum)", err)
		}
		break
	}
	for _, f := range followers {
		c.Restart(f)
	}
	e, err := c.Node(c.Leader()).KV().Get(ctx, "k", dister.Linearizable())
	t.Logf("k once the majority is back: %q (%v)", e.Value, err)
}

// Forged ProposeMany calls straight to the leader: per-command refusals
// are ErrInvalid, the valid ones apply, a command sent twice in one call
// applies once, and malformed calls are refused as a whole.
func TestForgedProposeMany(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	leader := c.Leader()
	addr := c.Options(leader).PeerAddr
	pc := peer.NewClient()
	defer pc.Close()
	enc := func(cmd *fsm.Command) []byte {
		b, err := fsm.EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	put := func(key string) *fsm.Txn {
		return &fsm.Txn{Then: []fsm.Op{{Type: fsm.OpPut, Key: key, Value: []byte("v")}}}
	}
	const sess = 0x77
	dup := enc(&fsm.Command{Session: sess, Seq: 1, Mark: 1, Kind: fsm.KindTxn, Txn: put("dup")})
	cmds := [][]byte{
		dup,
		dup,
		enc(&fsm.Command{Session: 0, Seq: 2, Kind: fsm.KindTxn, Txn: put("nosession")}),
		enc(&fsm.Command{Session: sess, Seq: 3, Mark: 1, Kind: fsm.KindLeaseEpoch, Epoch: &fsm.LeaseEpoch{}}),
		enc(&fsm.Command{Session: sess, Seq: 4, Mark: 1, Kind: fsm.KindLeaseRevoke, Revoke: &fsm.LeaseRevoke{IDs: []int64{1}, Expired: true}}),
		{},
		{0xff, 0xff, 0xff},
		enc(&fsm.Command{Session: sess, Seq: 5, Mark: 1, Kind: fsm.KindTxn, Txn: put("ok")}),
	}
	got, err := pc.ProposeMany(ctx, addr, &peer.ProposeManyRequest{Group: "", Cmds: cmds})
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range got {
		t.Logf("answer %d: data %d bytes, err %v", i, len(a.Data), a.Err)
	}
	for i := 2; i <= 6; i++ {
		if !errors.Is(got[i].Err, dister.ErrInvalid) {
			t.Errorf("command %d: %v, want ErrInvalid", i, got[i].Err)
		}
	}
	for _, i := range []int{0, 1, 7} {
		if got[i].Err != nil {
			t.Errorf("command %d: %v", i, got[i].Err)
		}
	}
	r0, _ := fsm.DecodeResult(fsm.Result{Data: got[0].Data})
	r1, _ := fsm.DecodeResult(fsm.Result{Data: got[1].Data})
	if r0 == nil || r1 == nil || r0.Revision != r1.Revision {
		t.Errorf("the same command twice: %+v and %+v, want one result", r0, r1)
	}
	e, err := c.Node(leader).KV().Get(ctx, "dup", dister.Linearizable())
	if err != nil || e.Version != 1 {
		t.Errorf("dup: %+v %v, want version 1", e, err)
	}
}
