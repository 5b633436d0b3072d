package dister_test

import (
	"errors"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
	"github.com/dister/dister/internal/testcluster"
)

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
