package dister_test

import (
	"context"
	"errors"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
	"github.com/dister/dister/internal/testcluster"
)

// Grants checked against their group's shard (raw peer calls against a
// 3-server cluster; cases from an adversarial review):
//   - ProposeMany with refusals interleaved (other shard, invalid, negative
//     id) answers each remaining command with its own result;
//   - the default group ("" and "default") accepts an id of shard 2;
//   - a named group accepts its own shard's id and an id of 0;
//   - a refused seq leaves the session usable: later commands with a Mark
//     above it apply, and a resend of an applied grant is answered from dedup.
func TestGrantShardRefusals(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	leader := c.Leader()
	n := c.Node(leader)
	if err := n.CreateGroup(ctx, "rv"); err != nil {
		t.Fatal(err)
	}
	shard := leaseShard(ctx, t, n.Group("rv").Leases())
	pc := peer.NewClient()
	defer pc.Close()
	const sess = 0xbeef
	enc := func(cmd *fsm.Command) []byte {
		b, err := fsm.EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	grant := func(seq, mark uint64, id int64) []byte {
		return enc(&fsm.Command{Session: sess, Seq: seq, Mark: mark, Kind: fsm.KindLeaseGrant,
			Grant: &fsm.LeaseGrant{ID: id, TTL: 60_000}})
	}
	id := func(s uint64, low uint32) int64 { return int64(s<<32 | uint64(low)) }
	cmds := [][]byte{
		grant(1, 1, id(shard+1, 1)), // 0 refused
		grant(2, 1, id(shard, 2)),   // 1 ok
		enc(&fsm.Command{Session: 0, Seq: 3, Kind: fsm.KindLeaseGrant, Grant: &fsm.LeaseGrant{ID: id(shard, 3), TTL: 60_000}}), // 2 invalid
		grant(4, 1, id(shard+3, 4)), // 3 refused
		grant(5, 1, 1<<62|5),        // 4 a shard above 1<<29: refused
		grant(6, 1, id(shard, 6)),   // 5 ok
		grant(7, 1, 0),              // 6 ok, index id
		grant(8, 1, id(shard+1, 8)), // 7 refused (last)
		grant(9, 1, id(shard, 9)),   // 8 ok
	}
	addr := c.Options(c.IDs()[0]).PeerAddr
	for _, sid := range c.IDs() {
		if sid != leader {
			addr = c.Options(sid).PeerAddr // a follower takes it
			break
		}
	}
	got, err := pc.ProposeMany(ctx, addr, &peer.ProposeManyRequest{Group: "rv", Cmds: cmds})
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range got {
		t.Logf("answer %d: %d bytes, %v", i, len(a.Data), a.Err)
	}
	for _, i := range []int{0, 3, 4, 7} {
		if !errors.Is(got[i].Err, dister.ErrConflict) {
			t.Errorf("command %d: %v, want ErrConflict", i, got[i].Err)
		}
	}
	if !errors.Is(got[2].Err, dister.ErrInvalid) {
		t.Errorf("command 2: %v, want ErrInvalid", got[2].Err)
	}
	want := map[int]int64{1: id(shard, 2), 5: id(shard, 6), 8: id(shard, 9)}
	for i, w := range want {
		if got[i].Err != nil {
			t.Errorf("command %d: %v", i, got[i].Err)
			continue
		}
		r, err := fsm.DecodeLeaseResult(fsm.Result{Data: got[i].Data})
		if err != nil || r.ID != w {
			t.Errorf("command %d: lease %+v %v, want id %d", i, r, err, w)
		}
	}
	if got[6].Err != nil {
		t.Errorf("index-id grant: %v", got[6].Err)
	} else if r, err := fsm.DecodeLeaseResult(fsm.Result{Data: got[6].Data}); err != nil || r.ID <= 0 || uint64(r.ID)>>32 != 0 {
		t.Errorf("index-id grant: %+v %v", r, err)
	}
	// A later command with a Mark above the refused seqs 1, 4, 5 and 8.
	later, err := pc.Propose(ctx, addr, &peer.ProposeRequest{Group: "rv", Cmd: grant(10, 10, id(shard, 10))})
	if err != nil {
		t.Fatalf("grant after refusals, mark above them: %v", err)
	}
	if r, err := fsm.DecodeLeaseResult(fsm.Result{Data: later}); err != nil || r.ID != id(shard, 10) {
		t.Errorf("later grant: %+v %v", r, err)
	}
	// A resend of seq 10 (same bytes) answers the same lease, not a conflict.
	again, err := pc.Propose(ctx, addr, &peer.ProposeRequest{Group: "rv", Cmd: grant(10, 10, id(shard, 10))})
	if err != nil {
		t.Fatalf("resend of an applied grant: %v", err)
	}
	if r, err := fsm.DecodeLeaseResult(fsm.Result{Data: again}); err != nil || r.ID != id(shard, 10) {
		t.Errorf("resend: %+v %v", r, err)
	}
	for _, bad := range []int64{id(shard+1, 1), id(shard+3, 4), id(shard+1, 8)} {
		if _, err := n.Group("rv").Leases().Get(ctx, dister.LeaseID(bad)); !errors.Is(err, dister.ErrLeaseNotFound) {
			t.Errorf("refused lease %d: %v", bad, err)
		}
	}
	// The default group is shard 2, under "" and "default".
	for i, g := range []string{"", "default"} {
		_, err := pc.Propose(ctx, addr, &peer.ProposeRequest{Group: g, Cmd: grant(uint64(20+i), 20, id(2, uint32(20+i)))})
		if err != nil {
			t.Errorf("grant of a shard-2 id in group %q: %v", g, err)
		}
	}
	_, err = pc.Propose(ctx, addr, &peer.ProposeRequest{Group: "", Cmd: grant(30, 30, id(shard, 30))})
	t.Logf("grant of shard %d id in the default group: %v", shard, err)
	if !errors.Is(err, dister.ErrConflict) {
		t.Errorf("grant of another shard's id in the default group: %v, want ErrConflict", err)
	}
}

// A client-role node grants in the default group and in a named group
// (through the real client path: shard asked, id checked by the server).
func TestClientRoleGrantsInDefaultGroup(t *testing.T) {
	t.Parallel()
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	n := c.Node(c.Leader())
	if err := n.CreateGroup(ctx, "rv2"); err != nil {
		t.Fatal(err)
	}
	cl := openClient(t, c, 0)
	for _, g := range []string{"", "default", "rv2"} {
		var l *dister.Leases
		if g == "" {
			l = cl.Leases()
		} else {
			l = cl.Group(g).Leases()
		}
		id, err := l.Grant(ctx, dister.MinLeaseTTL)
		if err != nil {
			t.Errorf("client grant in %q: %v", g, err)
			continue
		}
		t.Logf("group %q: lease %d shard %d", g, id, uint64(id)>>32)
		if uint64(id)>>32 == 0 {
			t.Errorf("group %q: lease %d carries no shard", g, id)
		}
	}
}

var _ = testcluster.New

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
	shard := leaseShard(ctx, t, n.Leases())
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

// leaseShard grants a lease through l and returns the shard its id
// carries.
func leaseShard(ctx context.Context, t *testing.T, l *dister.Leases) uint64 {
	t.Helper()
	id, err := l.Grant(ctx, dister.MinLeaseTTL)
	if err != nil {
		t.Fatal(err)
	}
	shard := uint64(id) >> 32
	if shard == 0 {
		t.Fatalf("lease %d carries no shard", id)
	}
	return shard
}
