package dister_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

func TestGroups(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	n1, n3 := c.Node(1), c.Node(3)

	if err := n1.CreateGroup(ctx, "billing"); err != nil {
		t.Fatal(err)
	}
	if err := n3.CreateGroup(ctx, "billing"); !errors.Is(err, dister.ErrConflict) {
		t.Fatalf("create twice: %v", err)
	}
	for _, bad := range []string{"", "a/b", "-x", string(make([]byte, 65))} {
		if err := n1.CreateGroup(ctx, bad); !errors.Is(err, dister.ErrInvalid) {
			t.Errorf("create %q: %v", bad, err)
		}
	}
	// Created through server 1, used through server 3.
	rev, err := n3.Group("billing").KV().Put(ctx, "k", []byte("billing"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n1.KV().Put(ctx, "k", []byte("default")); err != nil {
		t.Fatal(err)
	}
	// Isolation: same key, two values; lists and prefix deletes stay inside.
	e, err := n1.Group("billing").KV().Get(ctx, "k", dister.Linearizable())
	if err != nil || string(e.Value) != "billing" || e.ModRevision != rev {
		t.Fatalf("billing k: %+v %v", e, err)
	}
	e, _ = n3.KV().Get(ctx, "k", dister.Linearizable())
	if string(e.Value) != "default" {
		t.Fatalf("default k: %+v", e)
	}
	if d, err := n1.KV().Delete(ctx, "", dister.WithPrefix()); err != nil || d.Deleted != 1 {
		t.Fatalf("delete all of default: %+v %v", d, err)
	}
	if l, _, _ := n1.Group("billing").KV().List(ctx, "", dister.Linearizable()); len(l) != 1 {
		t.Fatalf("billing lost keys to a delete in default: %d", len(l))
	}

	names, err := n3.Groups(ctx)
	if err != nil || !slices.Equal(names, []string{"billing", "default"}) {
		t.Fatalf("groups: %v %v", names, err)
	}
	if _, err := n1.Group("nope").KV().Put(ctx, "k", nil); !errors.Is(err, dister.ErrGroupNotFound) {
		t.Fatalf("unknown group: %v", err)
	}
	if err := n1.DeleteGroup(ctx, "default"); !errors.Is(err, dister.ErrInvalid) {
		t.Fatalf("delete default: %v", err)
	}
	if err := n1.DeleteGroup(ctx, "nope"); !errors.Is(err, dister.ErrGroupNotFound) {
		t.Fatalf("delete unknown: %v", err)
	}
	if err := n3.DeleteGroup(ctx, "billing"); err != nil {
		t.Fatal(err)
	}
	if _, err := n3.Group("billing").KV().Get(ctx, "k"); !errors.Is(err, dister.ErrGroupNotFound) {
		t.Fatalf("deleted group through the deleting server: %v", err)
	}
	// The other servers drop it too.
	for _, id := range []uint64{1, 2} {
		waitFor(t, func() bool {
			_, err := c.Node(id).Group("billing").KV().Get(ctx, "k", dister.Stale())
			return errors.Is(err, dister.ErrGroupNotFound)
		})
	}
	// A new group of the same name starts empty.
	if err := n1.CreateGroup(ctx, "billing"); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.Group("billing").KV().Get(ctx, "k", dister.Linearizable()); !errors.Is(err, dister.ErrNotFound) {
		t.Fatalf("recreated group has old data: %v", err)
	}
}

// TestRetriedProposalAppliedOnce re-sends every committed proposal, as a
// client would after losing the reply: the state machine must answer the
// repeat from its dedup table.
func TestRetriedProposalAppliedOnce(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	n := c.Node(2) // a follower or the leader: either way through Raft
	kv := n.KV()
	rev1, err := kv.Put(ctx, "k", []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	type resend struct {
		rev int64
		ok  bool
		err error
	}
	var got []resend
	dister.SetProposeHook(n, func(ctx context.Context, shardID uint64, cmd []byte) {
		rev, ok, err := dister.ProposeAgain(ctx, n, shardID, cmd)
		got = append(got, resend{rev, ok, err})
	})
	rev2, err := kv.Put(ctx, "k", []byte("v2"), dister.IfModRevision(rev1))
	if err != nil {
		t.Fatalf("CAS with a retried proposal: %v", err)
	}
	dister.SetProposeHook(n, nil)
	if len(got) != 1 || got[0].err != nil || got[0].rev != rev2 || !got[0].ok {
		t.Fatalf("the repeat must answer like the original (rev %d, succeeded): %+v", rev2, got)
	}
	e, err := kv.Get(ctx, "k", dister.Linearizable())
	if err != nil || e.Version != 2 || e.ModRevision != rev2 {
		t.Fatalf("applied twice? %+v %v", e, err)
	}
	// The repeat did not take a revision of its own with a change in it.
	if r, _ := kv.Revision(ctx, dister.Linearizable()); r < rev2 {
		t.Fatalf("revision %d", r)
	}
}

// TestNoQuorum stops two of three servers: linearizable reads on the
// survivor fail with ErrNoQuorum and the ctx error; a write fails with the
// ctx error and ErrNoQuorum when it never reached a log, or
// ErrUnknownOutcome when it did (it may still commit once a majority is
// back, as in any Raft system: it was never acknowledged, not rolled back).
func TestNoQuorum(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	if _, err := c.Node(1).KV().Put(ctx, "k", []byte("before")); err != nil {
		t.Fatal(err)
	}
	c.Stop(2)
	c.Stop(3)
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	_, err := c.Node(1).KV().Put(short, "k", []byte("minority"))
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, dister.ErrNoQuorum) == errors.Is(err, dister.ErrUnknownOutcome) {
		t.Fatalf("write on a minority: %v", err)
	}
	short2, cancel2 := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel2()
	if _, err := c.Node(1).KV().Get(short2, "k", dister.Linearizable()); !errors.Is(err, dister.ErrNoQuorum) {
		t.Fatalf("linearizable read on a minority: %v", err)
	}
	// A stale read still answers, with the old value.
	e, err := c.Node(1).KV().Get(ctx, "k", dister.Stale())
	if err != nil || string(e.Value) != "before" {
		t.Fatalf("stale read: %+v %v", e, err)
	}
	c.Restart(2)
	if _, err := c.Node(2).KV().Put(ctx, "k", []byte("after")); err != nil {
		t.Fatalf("write once a majority is back: %v", err)
	}
	e, err = c.Node(1).KV().Get(ctx, "k", dister.Linearizable())
	if err != nil || string(e.Value) != "after" {
		t.Fatalf("after quorum is back: %+v %v", e, err)
	}
}

// TestSessionAndMinRevision: a Node reads its own writes through a
// follower, and MinRevision carries a session to another server.
func TestSessionAndMinRevision(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	fs, _ := c.Followers()
	f1, f2 := fs[0], fs[1]
	for i := range 200 {
		v := []byte{byte(i)}
		rev, err := c.Node(f1).KV().Put(ctx, "s", v)
		if err != nil {
			t.Fatal(err)
		}
		e, err := c.Node(f1).KV().Get(ctx, "s") // session read (default)
		if err != nil || e.ModRevision < rev {
			t.Fatalf("own write not visible: rev %d, read %+v %v", rev, e, err)
		}
		e, err = c.Node(f2).KV().Get(ctx, "s", dister.Stale(), dister.MinRevision(rev))
		if err != nil || e.ModRevision < rev {
			t.Fatalf("MinRevision(%d) on another server: %+v %v", rev, e, err)
		}
	}
}

func TestCloseIdempotent(t *testing.T) {
	c := testcluster.New(t, 1)
	n := c.Node(1)
	c.Stop(1)
	if err := n.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := n.KV().Put(ctxT(t), "k", nil); !errors.Is(err, dister.ErrClosed) {
		t.Fatalf("put after close: %v", err)
	}
	if _, err := n.KV().Get(ctxT(t), "k"); !errors.Is(err, dister.ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
}

func TestOpenValidation(t *testing.T) {
	dir := t.TempDir()
	a, b := "127.0.0.1:1", "127.0.0.1:2"
	cases := []struct {
		name string
		o    dister.Options
	}{
		{"no data dir", dister.Options{NodeID: 1, RaftAddr: a, PeerAddr: b}},
		{"bad raft addr", dister.Options{NodeID: 1, DataDir: dir, RaftAddr: "nope", PeerAddr: b}},
		{"same addrs", dister.Options{NodeID: 1, DataDir: dir, RaftAddr: a, PeerAddr: a}},
		{"join without servers", dister.Options{DataDir: dir, RaftAddr: a, PeerAddr: b, Join: true}},
		{"self not in members", dister.Options{NodeID: 1, DataDir: dir, RaftAddr: a, PeerAddr: b,
			InitialMembers: map[uint64]dister.Peer{2: {RaftAddr: a, PeerAddr: b}}}},
		{"members addr mismatch", dister.Options{NodeID: 1, DataDir: dir, RaftAddr: a, PeerAddr: b,
			InitialMembers: map[uint64]dister.Peer{1: {RaftAddr: "127.0.0.1:3", PeerAddr: b}}}},
		{"unknown role", dister.Options{Role: 7, NodeID: 1, DataDir: dir, RaftAddr: a, PeerAddr: b}},
		{"no node id", dister.Options{DataDir: dir, RaftAddr: a, PeerAddr: b}},
		{"election too short", dister.Options{NodeID: 1, DataDir: dir, RaftAddr: a, PeerAddr: b, ElectionRTT: 2}},
		{"stale bound too short", dister.Options{NodeID: 1, DataDir: dir, RaftAddr: a, PeerAddr: b, BalancerStaleAfter: time.Millisecond}},
	}
	for _, tc := range cases {
		if _, err := dister.Open(ctxT(t), tc.o); !errors.Is(err, dister.ErrInvalid) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// A port in use is a configuration problem too, and nothing is left running.
	c := testcluster.New(t, 1)
	busy := c.Options(1)
	_, err := dister.Open(ctxT(t), dister.Options{NodeID: 2, DataDir: t.TempDir(), RaftAddr: testcluster.FreeAddr(t), PeerAddr: busy.PeerAddr})
	if !errors.Is(err, dister.ErrInvalid) {
		t.Errorf("peer port in use: %v", err)
	}
	_, err = dister.Open(ctxT(t), dister.Options{NodeID: 2, DataDir: t.TempDir(), RaftAddr: busy.RaftAddr, PeerAddr: testcluster.FreeAddr(t)})
	if !errors.Is(err, dister.ErrInvalid) {
		t.Errorf("raft port in use: %v", err)
	}
	// Restarting with another RaftAddr is refused.
	c.Stop(1)
	moved := busy
	moved.RaftAddr, moved.InitialMembers = testcluster.FreeAddr(t), nil
	if _, err := dister.Open(ctxT(t), moved); !errors.Is(err, dister.ErrInvalid) {
		t.Errorf("restart with a new RaftAddr: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	waitWithin(t, 20*time.Second, cond, func() string { return "condition not met" })
}

// waitWithin polls cond until it holds; after d it fails with what
// describe says of the state it was stuck in.
func waitWithin(t *testing.T, d time.Duration, cond func() bool, describe func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not met in %v: %s", d, describe())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestartAfterMissedGroupDelete: a server that was down while a group
// was deleted starts from the committed catalog, not from its stale local
// copy: it never runs the deleted group again (no zombie answers, no shard
// without a leader holding up WaitReady) and removes the group's data.
func TestRestartAfterMissedGroupDelete(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	n1 := c.Node(1)
	if err := n1.CreateGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.Group("g").KV().Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		e, err := c.Node(3).Group("g").KV().Get(ctx, "k", dister.Stale())
		return err == nil && string(e.Value) == "v"
	})
	sid := dister.ShardOf(c.Node(3), "g")
	if !slices.Contains(dister.StoredShards(c.Node(3)), sid) || !slices.Contains(dister.LocalShards(c.Node(3)), sid) {
		t.Fatalf("server 3 should hold g's shard %d: stored %v, local %v", sid, dister.StoredShards(c.Node(3)), dister.LocalShards(c.Node(3)))
	}
	c.Stop(3)
	if err := n1.DeleteGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	n3 := c.Restart(3)
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := n3.WaitReady(rctx); err != nil {
		t.Fatalf("restarted server not ready: %v", err)
	}
	if _, err := n3.Group("g").KV().Get(ctx, "k", dister.Stale()); !errors.Is(err, dister.ErrGroupNotFound) {
		t.Fatalf("deleted group on the restarted server once ready: %v", err)
	}
	if slices.Contains(dister.StoredShards(n3), sid) {
		t.Fatalf("state of the deleted group is left in the store: %v", dister.StoredShards(n3))
	}
	if slices.Contains(dister.LocalShards(n3), sid) {
		t.Fatalf("Raft data of the deleted group's shard %d is left: %v", sid, dister.LocalShards(n3))
	}
}

// TestLeftoverShardDataRemovedAtStart: a crash between applying a group's
// deletion and removing its data leaves a shard no catalog entry names;
// the next start removes it, and keeps the data of the groups that exist.
func TestLeftoverShardDataRemovedAtStart(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	if err := c.Node(1).CreateGroup(ctx, "keep"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Node(1).Group("keep").KV().Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	c.Stop(1)
	leftover := filepath.Join(c.Options(1).DataDir, "state", "shard-77")
	if err := os.MkdirAll(leftover, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(leftover, "CURRENT"), []byte("1"), 0o640); err != nil {
		t.Fatal(err)
	}
	// And state in the store of a shard no group names.
	if err := dister.SeedStoredShard(c.Options(1).DataDir, 78); err != nil {
		t.Fatal(err)
	}
	n := c.Restart(1)
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover state of an unknown shard: %v", err)
	}
	if slices.Contains(dister.LocalShards(n), 77) || slices.Contains(dister.LocalShards(n), 78) {
		t.Fatalf("unknown shards 77, 78 still listed: %v", dister.LocalShards(n))
	}
	if slices.Contains(dister.StoredShards(n), 78) {
		t.Fatalf("unknown shard 78 still in the store: %v", dister.StoredShards(n))
	}
	if e, err := n.Group("keep").KV().Get(ctx, "k", dister.Linearizable()); err != nil || string(e.Value) != "v" {
		t.Fatalf("existing group after the start-up cleanup: %+v %v", e, err)
	}
}

// TestDeleteGroupRemovesDataOnceClosed: dragonboat closes a stopped
// replica's state machine on a worker of its own, after the replica counts
// as stopped; a deleted group's state must stay until that Close returned
// (removing it under an open pebble crashed the process in a stress run).
func TestDeleteGroupRemovesDataOnceClosed(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	entered, release := make(chan struct{}), make(chan struct{})
	var enter, free sync.Once
	t.Cleanup(func() { free.Do(func() { close(release) }) }) // before the cluster closes
	var sid atomic.Uint64
	dister.SetCloseHook(n, func(shardID uint64) {
		if shardID == sid.Load() {
			enter.Do(func() { close(entered) })
			<-release
		}
	})
	if err := n.CreateGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	for k := range 100 {
		if _, err := n.Group("g").KV().Put(ctx, fmt.Sprint(k), make([]byte, 512)); err != nil {
			t.Fatal(err)
		}
	}
	sid.Store(dister.ShardOf(n, "g"))
	stored := func() bool { return slices.Contains(dister.StoredShards(n), sid.Load()) }
	errc := make(chan error, 1)
	go func() { errc <- n.DeleteGroup(ctx, "g") }()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the group's state machine was never closed")
	}
	// While its Close is held, the state must stay and DeleteGroup wait.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if !stored() {
			t.Fatal("state removed under an open state machine")
		}
		select {
		case err := <-errc:
			t.Fatalf("DeleteGroup returned (%v) before the state machine closed", err)
		default:
		}
	}
	free.Do(func() { close(release) })
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if stored() {
		t.Fatal("state of the deleted group is left in the store")
	}
}

// Creating groups does not make the system shard's leader re-check the
// membership of every shard each time: a group created after all shards
// were found in line has its own shard checked, so creating 12 groups
// costs about 12 membership checks, not one per shard per group (114
// before). A new shard is checked again while a pass finds it not in line
// yet (a replica still starting), so the bound is 3 per group: 20 to 29
// were seen on this machine, all of the same order, and far below the
// quadratic count.
func TestCreateGroupsChecksNewShardsOnly(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var checks atomic.Int64
	for _, id := range c.IDs() {
		dister.SetStepHook(c.Node(id), func(_ context.Context, step string, _ uint64) error {
			if step == "membership" {
				checks.Add(1)
			}
			return nil
		})
	}
	n := c.Node(c.IDs()[0])
	if err := n.CreateGroup(ctx, "warmup"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the passes of the first group end
	checks.Store(0)
	const groups = 12
	for i := range groups {
		if err := n.CreateGroup(ctx, fmt.Sprintf("g%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if got := checks.Load(); got > 3*groups {
		t.Fatalf("%d membership checks for %d groups created", got, groups)
	}
	t.Logf("%d membership checks for %d groups created", checks.Load(), groups)
	// The groups work: each has a leader and takes a write.
	for i := range groups {
		if _, err := n.Group(fmt.Sprintf("g%02d", i)).KV().Put(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
}
