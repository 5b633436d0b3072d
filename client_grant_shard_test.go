package dister_test

import (
	"errors"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
	"github.com/dister/dister/internal/testcluster"
)

// A client's grant of a lease id drawn for another shard than its group's
// (learned from a server whose catalog lagged behind a group created again)
// is refused with ErrConflict by the server that takes it, alone or in a
// ProposeMany, and creates no lease; an id of the group's own shard is
// granted.
func TestForgedGrantOfAnotherShard(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	leader := c.Leader()
	n := c.Node(leader)
	own, err := n.Leases().Grant(ctx, dister.MinLeaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	shard := uint64(own) >> 32
	if shard == 0 {
		t.Fatalf("lease %d carries no shard", own)
	}
	pc := peer.NewClient()
	defer pc.Close()
	addr := c.Options(leader).PeerAddr
	grant := func(seq uint64, id int64) []byte {
		b, err := fsm.EncodeCommand(&fsm.Command{Session: 0x5eed, Seq: seq, Mark: 1, Kind: fsm.KindLeaseGrant,
			Grant: &fsm.LeaseGrant{ID: id, TTL: 60_000}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	other := int64((shard+1)<<32 | 9)
	if _, err := pc.Propose(ctx, addr, &peer.ProposeRequest{Cmd: grant(1, other)}); !errors.Is(err, dister.ErrConflict) {
		t.Fatalf("grant of lease %d (shard %d) in shard %d: %v, want ErrConflict", other, shard+1, shard, err)
	}
	right := int64(shard<<32 | 9)
	other2 := int64((shard+2)<<32 | 9)
	got, err := pc.ProposeMany(ctx, addr, &peer.ProposeManyRequest{Cmds: [][]byte{grant(2, other2), grant(3, right)}})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(got[0].Err, dister.ErrConflict) || got[1].Err != nil {
		t.Fatalf("ProposeMany of a grant of another shard's id and one of the group's: %v, %v; want ErrConflict, nil", got[0].Err, got[1].Err)
	}
	for _, id := range []int64{other, other2} {
		if _, err := n.Leases().Get(ctx, dister.LeaseID(id)); !errors.Is(err, dister.ErrLeaseNotFound) {
			t.Errorf("lease %d after its refused grant: %v, want ErrLeaseNotFound", id, err)
		}
	}
	if _, err := n.Leases().Get(ctx, dister.LeaseID(right)); err != nil {
		t.Errorf("lease %d of the group's shard: %v", right, err)
	}
}
