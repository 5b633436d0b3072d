package dister_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// shardVotersR3 reads the voters and non-voters of group g through n.
func shardVotersR3(ctx context.Context, n *dister.Node, g string) ([]uint64, []uint64, error) {
	return dister.ShardMembers(ctx, n, dister.ShardOf(n, g))
}

// TestMembershipGhostWithMemberPeerAddrNotPromoted: AddServer of a server that
// never starts, whose PeerAddr is (by a typo, or reuse) the peer address of
// a running member. The ghost has applied nothing: it must stay a non-voter
// ("promoted once it has caught up"), and the cluster must keep writing.
func TestMembershipGhostWithMemberPeerAddrNotPromoted(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n1 := c.Node(1)
	ghost := dister.Peer{RaftAddr: testcluster.FreeAddr(t), PeerAddr: c.Options(1).PeerAddr}
	id, err := n1.AddServer(ctx, 0, ghost)
	if err != nil {
		// Refusing a PeerAddr that another member has is also fine (etcd
		// refuses a duplicate peer URL).
		t.Logf("AddServer refused: %v", err)
		return
	}
	t.Logf("ghost server got id %d", id)
	// Give the reconciler a few passes.
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		for _, g := range []string{"_system", "default"} {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			v, nv, err := shardVotersR3(cctx, n1, g)
			cancel()
			if err == nil && slices.Contains(v, id) {
				t.Fatalf("group %q: the ghost server %d (never started, applied nothing) was promoted: voters %v non-voters %v", g, id, v, nv)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := n1.KV().Put(wctx, "after-ghost", []byte("x")); err != nil {
		t.Fatalf("write after adding a ghost server: %v", err)
	}
	// The catalog (system shard) must still commit: create a group.
	if err := n1.CreateGroup(wctx, "after-ghost"); err != nil {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		t.Logf("RemoveServer of the ghost to recover: %v", n1.RemoveServer(rctx, id))
		t.Fatalf("create a group after adding ghost server %d: %v", id, err)
	}
}

// TestMembershipGhostInThreeCostsNoFaultTolerance: the same in a cluster of
// three: a server that never started must not become a voter, so the
// cluster still tolerates one server down.
func TestMembershipGhostInThreeCostsNoFaultTolerance(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	n1 := c.Node(1)
	ghost := dister.Peer{RaftAddr: testcluster.FreeAddr(t), PeerAddr: c.Options(2).PeerAddr}
	id, err := n1.AddServer(ctx, 0, ghost)
	if err != nil {
		t.Logf("AddServer refused: %v", err)
		return
	}
	time.Sleep(4 * time.Second)
	v, nv, err := shardVotersR3(ctx, n1, "default")
	t.Logf("default: voters %v non-voters %v (%v)", v, nv, err)
	ms, _ := n1.Members(ctx)
	t.Logf("members: %+v", ms)
	c.Stop(3)
	wctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	if _, err := n1.KV().Put(wctx, "one-down", []byte("x")); err != nil {
		t.Fatalf("write with one of three real servers down, after adding ghost %d: %v", id, err)
	}
}

// TestMembershipRemoveTwiceConcurrently: two RemoveServer calls of the same
// server at once, through two servers: both succeed (or one says
// NotFound), the server is out of every shard, and the cluster writes.
func TestMembershipRemoveTwiceConcurrently(t *testing.T) {
	c := testcluster.New(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := c.Node(1).CreateGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	for _, id := range c.IDs() {
		waitRunsGroup(t, c.Node(id), "g")
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, via := range []uint64{1, 2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Node(via).RemoveServer(ctx, 4)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil && !errors.Is(err, dister.ErrNotFound) {
			t.Errorf("removal %d: %v", i, err)
		}
	}
	putEverywhere(t, c.Node(3), "after", "g")
	wantConfig(t, c.Node(1), []uint64{1, 2, 3}, "g")
	waitFor(t, func() bool { return len(c.Node(4).Status().Groups) == 0 })
}

// TestMembershipRemovedWhileDownRestarts: a server removed while it was down
// and restarted with its old data dir must not rejoin, nor disturb the
// cluster.
func TestMembershipRemovedWhileDownRestarts(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	n1 := c.Node(1)
	if err := n1.CreateGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	for _, id := range c.IDs() {
		waitRunsGroup(t, c.Node(id), "g")
	}
	putEverywhere(t, n1, "before", "g")
	c.Stop(3)
	if err := n1.RemoveServer(ctx, 3); err != nil {
		t.Fatal(err)
	}
	putEverywhere(t, n1, "removed", "g")
	n3 := c.Restart(3)
	// Writes go on for a while; membership stays {1,2}.
	for i := range 20 {
		putEverywhere(t, n1, fmt.Sprintf("k%d", i), "g")
		putEverywhere(t, c.Node(2), fmt.Sprintf("j%d", i), "g")
		time.Sleep(100 * time.Millisecond)
	}
	wantConfig(t, n1, []uint64{1, 2}, "g")
	if ms, err := n1.Members(ctx); err != nil || len(ms) != 2 {
		t.Fatalf("members: %+v %v", ms, err)
	}
	t.Logf("restarted removed server's status: %+v", n3.Status())
	// Its own view: it must not serve a linearizable read.
	rctx, rcancel := context.WithTimeout(ctx, 3*time.Second)
	defer rcancel()
	if e, err := n3.KV().Get(rctx, "removed", dister.Linearizable()); err == nil {
		t.Fatalf("the removed server serves linearizable reads: %+v", e)
	}
}

// TestMembershipFailedJoinLeavesNoPhantom: a joining server whose Open fails
// after its Join was accepted (its Raft port is taken) and that is then
// started again with another port must not leave a phantom member behind:
// Members lists the servers that exist, and writes are still batched
// (group commit is on only while every server records that it applies
// batches; a server that never started records nothing).
func TestMembershipFailedJoinLeavesNoPhantom(t *testing.T) {
	c := testcluster.New(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	busy, err := net.Listen("tcp", testcluster.FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var seeds []string
	for _, id := range c.IDs() {
		seeds = append(seeds, c.Options(id).PeerAddr)
	}
	o := dister.Options{Join: true, Servers: seeds, DataDir: c.DataDir(),
		RaftAddr: busy.Addr().String(), PeerAddr: testcluster.FreeAddr(t), Logger: testcluster.Logger()}
	if n, err := dister.Open(ctx, o); err == nil {
		n.Close()
		t.Fatal("a join on a busy Raft port started")
	} else {
		t.Logf("first start: %v", err)
	}
	o.RaftAddr = testcluster.FreeAddr(t)
	n, err := dister.Open(ctx, o)
	if err != nil {
		t.Fatalf("second start with a free port: %v", err)
	}
	c.Adopt(n, o)
	waitFor(t, func() bool {
		v, _, err := shardVotersR3(ctx, c.Node(1), "default")
		return err == nil && slices.Contains(v, n.ID())
	})
	ms, err := c.Node(1).Members(ctx)
	t.Logf("joined as %d; members %+v (%v)", n.ID(), ms, err)
	var phantom []uint64
	for _, m := range ms {
		if c.Node(m.ID) == nil {
			phantom = append(phantom, m.ID)
		}
	}
	// Group commit: 64 writers through the leader share proposals, once
	// every server recorded that it applies batches (a phantom never does:
	// group commit stayed off for good).
	leader := c.Leader()
	ln := c.Node(leader)
	const writers, each = 64, 20
	var submitted atomic.Int64
	batched := false
	for attempt := 0; attempt < 20 && !batched; attempt++ {
		submitted.Store(0)
		dister.SetSubmitHook(ln, func(uint64) { submitted.Add(1) })
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					if _, err := ln.KV().Put(ctx, fmt.Sprintf("gc/%d/%d", w, i), []byte("x")); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		dister.SetSubmitHook(ln, nil)
		t.Logf("%d writes in %d proposals", writers*each, submitted.Load())
		batched = submitted.Load() < writers*each/2
		if !batched {
			time.Sleep(500 * time.Millisecond)
		}
	}
	if len(phantom) > 0 {
		t.Errorf("members %v never started (a failed first start): phantom members of the cluster", phantom)
	}
	if !batched {
		t.Errorf("%d proposals for %d writes, 20 times over 10 s: group commit is off", submitted.Load(), writers*each)
	}
	// Three real servers: one of them may stop.
	for _, id := range c.IDs() {
		if id != leader {
			c.Stop(id)
			break
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 8*time.Second)
	defer wcancel()
	if _, err := ln.KV().Put(wctx, "one-of-three-down", nil); err != nil {
		t.Errorf("write with two of three real servers up: %v", err)
	}
}

// TestMembershipPromotionAcrossLeaderClose: a server joins; the system
// shard's leader closes while it is being added and promoted, then the
// joiner itself closes and restarts mid-way. It ends a voter everywhere,
// and the cluster writes throughout.
func TestMembershipPromotionAcrossLeaderClose(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Node(1).CreateGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	for _, id := range c.IDs() {
		waitRunsGroup(t, c.Node(id), "g")
	}
	putEverywhere(t, c.Node(1), "before", "g")
	var sysLeader uint64
	waitFor(t, func() bool {
		sysLeader = dister.SystemLeader(c.Node(1))
		return sysLeader != 0
	})
	n4 := c.Join(0)
	c.Stop(sysLeader)
	var other uint64
	for _, id := range []uint64{1, 2, 3} {
		if id != sysLeader {
			other = id
			break
		}
	}
	time.Sleep(300 * time.Millisecond)
	c.Stop(n4.ID())
	n4 = c.Restart(n4.ID())
	on := c.Node(other)
	waitWithin(t, 60*time.Second, func() bool {
		for _, g := range []string{"_system", "default", "g"} {
			v, nv, err := shardVotersR3(ctx, on, g)
			if err != nil || !slices.Contains(v, n4.ID()) || len(nv) != 0 {
				return false
			}
		}
		return true
	}, func() string {
		var s string
		for _, g := range []string{"_system", "default", "g"} {
			v, nv, err := shardVotersR3(ctx, on, g)
			s += fmt.Sprintf("%s: %v %v %v; ", g, v, nv, err)
		}
		return s
	})
	putEverywhere(t, n4, "after", "g")
	if err := c.Restart(sysLeader).WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	putEverywhere(t, c.Node(sysLeader), "back", "g")
	// Restart the joiner once more: its roles (joined as a non-voter,
	// promoted since) must survive.
	c.Stop(n4.ID())
	n4 = c.Restart(n4.ID())
	putEverywhere(t, n4, "again", "g")
}

// TestMembershipCloseWhileRemoving closes the server being removed, and the
// server that asked, while the removal is under way; the cluster finishes
// it and writes.
func TestMembershipCloseWhileRemoving(t *testing.T) {
	c := testcluster.New(t, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Node(1).CreateGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	for _, id := range c.IDs() {
		waitRunsGroup(t, c.Node(id), "g")
	}
	putEverywhere(t, c.Node(1), "before", "g")
	var sysLeader uint64
	waitFor(t, func() bool {
		sysLeader = dister.SystemLeader(c.Node(1))
		return sysLeader != 0
	})
	var asker, victim uint64
	for _, id := range []uint64{1, 2, 3, 4, 5} {
		if id == sysLeader {
			continue
		}
		if asker == 0 {
			asker = id
		} else if victim == 0 {
			victim = id
		}
	}
	started := make(chan struct{})
	var once sync.Once
	for _, id := range c.IDs() {
		dister.SetStepHook(c.Node(id), func(hctx context.Context, step string, id uint64) error {
			if step == "leaving" && id == victim {
				once.Do(func() { close(started) })
				select {
				case <-hctx.Done():
					return hctx.Err()
				case <-time.After(500 * time.Millisecond):
				}
			}
			return nil
		})
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Node(asker).RemoveServer(ctx, victim) }()
	select {
	case <-started:
	case err := <-errc:
		t.Fatalf("removal ended before its steps: %v", err)
	}
	c.Stop(victim)
	c.Stop(asker)
	t.Logf("RemoveServer through the closed server: %v", <-errc)
	ln := c.Node(sysLeader)
	waitWithin(t, 60*time.Second, func() bool {
		ms, err := ln.Members(ctx)
		if err != nil {
			return false
		}
		for _, m := range ms {
			if m.ID == victim {
				return false
			}
		}
		return true
	}, func() string { return "victim still a member" })
	// Now 4 voters, one (asker) down: writes work.
	putEverywhere(t, ln, "after", "g")
	wantConfigLive := func() {
		for _, g := range []string{"_system", "default", "g"} {
			v, nv, err := shardVotersR3(ctx, ln, g)
			if err != nil || slices.Contains(v, victim) || slices.Contains(nv, victim) {
				t.Fatalf("%s: %v %v %v", g, v, nv, err)
			}
		}
	}
	wantConfigLive()
	if err := c.Restart(asker).WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	putEverywhere(t, c.Node(asker), "asker-back", "g")
	// The removed server restarted with its data dir must learn it left.
	nv := c.Restart(victim)
	putEverywhere(t, ln, "victim-restarted", "g")
	t.Logf("victim status after restart: %+v", nv.Status())
}

// TestMembershipRemoveRacesJoin: a removal and a join at once. The result is
// voters {1, 2, new} everywhere, and every group writes.
func TestMembershipRemoveRacesJoin(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Node(1).CreateGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	for _, id := range c.IDs() {
		waitRunsGroup(t, c.Node(id), "g")
	}
	putEverywhere(t, c.Node(1), "before", "g")
	errc := make(chan error, 1)
	go func() { errc <- c.Node(2).RemoveServer(ctx, 3) }()
	n4 := c.Join(0)
	if err := <-errc; err != nil {
		t.Fatalf("remove server 3 during a join: %v", err)
	}
	want := []uint64{1, 2, n4.ID()}
	waitWithin(t, 60*time.Second, func() bool {
		for _, g := range []string{"_system", "default", "g"} {
			v, nv, err := shardVotersR3(ctx, c.Node(1), g)
			if err != nil || !slices.Equal(v, want) || len(nv) != 0 {
				return false
			}
		}
		return true
	}, func() string { return "config not {1,2,new}" })
	putEverywhere(t, n4, "after", "g")
	waitFor(t, func() bool { return len(c.Node(3).Status().Groups) == 0 })
	c.Stop(3)
	c.Stop(2)
	// {1, new} of {1, 2, new}: a majority.
	putEverywhere(t, c.Node(1), "one-down", "g")
}
