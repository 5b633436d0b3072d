package dister_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestLeaderCloseMidWrite closes the leader while writers run: writes go on
// through the survivors and every acknowledged write is readable after.
func TestLeaderCloseMidWrite(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	survivors, leader := c.Followers()

	var (
		mu    sync.Mutex
		acked = map[string]string{}
		wg    sync.WaitGroup
		stop  atomic.Bool
		after atomic.Int64 // acknowledged writes after the leader closed
		down  atomic.Bool
	)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := c.Node(survivors[w%2])
			for i := 0; !stop.Load(); i++ {
				k, v := fmt.Sprintf("w%d/%06d", w, i), fmt.Sprintf("v%d", i)
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := n.KV().Put(wctx, k, []byte(v))
				cancel()
				if err != nil {
					continue // unacknowledged: may or may not have applied
				}
				mu.Lock()
				acked[k] = v
				mu.Unlock()
				if down.Load() {
					after.Add(1)
				}
			}
		}()
	}
	// Writes must be flowing when the leader goes.
	for start := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 100 {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("only %d writes acknowledged before the failure", n)
		}
	}
	c.Stop(leader)
	down.Store(true)
	deadline := time.Now().Add(20 * time.Second)
	for after.Load() < 200 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if after.Load() < 200 {
		t.Fatalf("only %d writes acknowledged after the leader closed", after.Load())
	}
	for _, id := range survivors {
		for k, v := range acked {
			e, err := c.Node(id).KV().Get(ctx, k, dister.Linearizable())
			if err != nil || string(e.Value) != v {
				t.Fatalf("server %d: acknowledged %s=%s reads %v %v", id, k, v, e, err)
			}
		}
	}
	t.Logf("%d writes acknowledged, %d after the leader closed", len(acked), after.Load())
}

// TestRestartAll closes every server and opens them again from DataDir
// alone: data, revisions, groups and membership come back.
func TestRestartAll(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	if err := c.Node(1).CreateGroup(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for i := range 50 {
		k := fmt.Sprintf("k%02d", i)
		rev, err := c.Node(uint64(i%3+1)).KV().Put(ctx, k, []byte(k))
		if err != nil {
			t.Fatal(err)
		}
		want[k] = rev
	}
	if _, err := c.Node(2).Group("orders").KV().Put(ctx, "o1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	ids := c.IDs()
	for _, id := range ids {
		c.Stop(id)
	}
	for _, id := range ids {
		c.Restart(id) // one after another in one goroutine: Open does not wait for a leader
	}
	c.WaitReady()
	for _, id := range ids {
		kv := c.Node(id).KV()
		for k, rev := range want {
			e, err := kv.Get(ctx, k, dister.Linearizable())
			if err != nil || string(e.Value) != k || e.ModRevision != rev {
				t.Fatalf("server %d after restart: %s -> %+v %v (want rev %d)", id, k, e, err, rev)
			}
		}
		if e, err := c.Node(id).Group("orders").KV().Get(ctx, "o1", dister.Linearizable()); err != nil || string(e.Value) != "x" {
			t.Fatalf("server %d: group data after restart: %v %v", id, e, err)
		}
	}
	ms, err := c.Node(1).Members(ctx)
	if err != nil || len(ms) != 3 {
		t.Fatalf("members after restart: %+v %v", ms, err)
	}
	for _, m := range ms {
		if !m.Alive {
			t.Errorf("member %d not alive after restart", m.ID)
		}
	}
}

// TestOpenOneAfterAnother opens a 3-server cluster sequentially in one
// goroutine, with no wait between: Open must not wait for a leader.
func TestOpenOneAfterAnother(t *testing.T) {
	members := map[uint64]dister.Peer{}
	for id := uint64(1); id <= 3; id++ {
		members[id] = dister.Peer{RaftAddr: testcluster.FreeAddr(t), PeerAddr: testcluster.FreeAddr(t)}
	}
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()} // before the Cleanup below, so removed after it
	var nodes []*dister.Node
	t.Cleanup(func() {
		for _, n := range nodes {
			n.Close()
		}
	})
	for id := uint64(1); id <= 3; id++ {
		n, err := dister.Open(ctxT(t), dister.Options{NodeID: id, DataDir: dirs[id-1],
			RaftAddr: members[id].RaftAddr, PeerAddr: members[id].PeerAddr, InitialMembers: members,
			Logger: testcluster.Logger()})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	ctx := ctxT(t)
	if _, err := nodes[0].KV().Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	e, err := nodes[2].KV().Get(ctx, "k", dister.Linearizable())
	if err != nil || string(e.Value) != "v" {
		t.Fatalf("read through server 3: %v %v", e, err)
	}
}

// TestAddServerAndJoin adds a 4th server with AddServer, opens it with
// Join, and reads old data through it linearizably; then a 5th joins with
// NodeID 0 through Servers and gets the next free id.
func TestAddServerAndJoin(t *testing.T) {
	t.Parallel() // long, mostly waiting on timers: runs beside the others
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	if err := c.Node(1).CreateGroup(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if _, err := c.Node(1).KV().Put(ctx, fmt.Sprintf("old/%03d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	c.Node(1).Group("g1").KV().Put(ctx, "g", []byte("1"))

	p := dister.Peer{RaftAddr: testcluster.FreeAddr(t), PeerAddr: testcluster.FreeAddr(t)}
	id, err := c.Node(2).AddServer(ctx, 4, p)
	if err != nil || id != 4 {
		t.Fatalf("AddServer: %d %v", id, err)
	}
	if _, err := c.Node(2).AddServer(ctx, 5, p); !errors.Is(err, dister.ErrConflict) {
		t.Fatalf("AddServer with a taken Raft address and another id: %v", err)
	}
	o := dister.Options{NodeID: 4, DataDir: c.DataDir(), RaftAddr: p.RaftAddr, PeerAddr: p.PeerAddr,
		Join: true, Servers: []string{c.Options(1).PeerAddr}, Logger: testcluster.Logger()}
	n4, err := dister.Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	c.Adopt(n4, o)
	l, _, err := n4.KV().List(ctx, "old/", dister.Linearizable())
	if err != nil || len(l) != 100 {
		t.Fatalf("server 4 linearizable list: %d %v", len(l), err)
	}
	if e, err := n4.Group("g1").KV().Get(ctx, "g", dister.Linearizable()); err != nil || string(e.Value) != "1" {
		t.Fatalf("server 4 reads group g1: %v %v", e, err)
	}

	n5 := c.Join(0)
	if n5.ID() != 5 {
		t.Fatalf("joined with NodeID 0, got id %d, want 5", n5.ID())
	}
	if _, err := n5.KV().Put(ctx, "from5", []byte("x")); err != nil {
		t.Fatal(err)
	}
	waitVoters(t, c.Node(1), 5)
	ms, err := n5.Members(ctx)
	if err != nil || len(ms) != 5 {
		t.Fatalf("members: %+v %v", ms, err)
	}
}

// waitVoters waits until n reports want members, all alive voters.
func waitVoters(t *testing.T, n *dister.Node, want int) {
	t.Helper()
	ctx := ctxT(t)
	for {
		ms, err := n.Members(ctx)
		ok := 0
		for _, m := range ms {
			if m.Alive && m.Voter {
				ok++
			}
		}
		if err == nil && ok == want && len(ms) == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("members: %+v %v", ms, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
