package dister_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestJoinAfterCompaction: with a small snapshot interval the log no
// longer holds the early writes, so a joining server must install a
// snapshot of the pebble state to serve them.
func TestJoinAfterCompaction(t *testing.T) {
	c := testcluster.New(t, 3, func(o *dister.Options) {
		o.SnapshotEntries = 20
		o.CompactionOverhead = 5
	})
	ctx := ctxT(t)
	if err := c.Node(1).CreateGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		if _, err := c.Node(1).KV().Put(ctx, fmt.Sprintf("k%03d", i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			c.Node(1).Group("g").KV().Put(ctx, fmt.Sprintf("g%03d", i), nil)
		}
	}
	if _, err := c.Node(1).KV().Delete(ctx, "k00", dister.WithPrefix()); err != nil { // k000..k009
		t.Fatal(err)
	}
	n4 := c.Join(0)
	l, rev, err := n4.KV().List(ctx, "", dister.Linearizable())
	if err != nil || len(l) != 290 {
		t.Fatalf("joined server lists %d keys (rev %d): %v", len(l), rev, err)
	}
	e, err := n4.KV().Get(ctx, "k150", dister.Stale())
	if err != nil || string(e.Value) != "150" || e.Version != 1 {
		t.Fatalf("k150 on the joined server: %+v %v", e, err)
	}
	if gl, _, err := n4.Group("g").KV().List(ctx, "", dister.Linearizable()); err != nil || len(gl) != 30 {
		t.Fatalf("group g on the joined server: %d %v", len(gl), err)
	}
	waitVoters(t, c.Node(1), 4)
	// Once promoted it counts toward the quorum: with two of the original
	// three stopped, the remaining two of four cannot write, with three they can.
	c.Stop(2)
	if _, err := n4.KV().Put(ctx, "after-join", []byte("x")); err != nil {
		t.Fatalf("write with 3 of 4 up: %v", err)
	}
	// Restart of the joined server keeps its role and data.
	c.Stop(n4.ID())
	n4 = c.Restart(4)
	if e, err := n4.KV().Get(ctx, "after-join", dister.Linearizable()); err != nil || string(e.Value) != "x" {
		t.Fatalf("joined server after restart: %+v %v", e, err)
	}
}

func TestRemoveServer(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	n4 := c.Join(0)
	waitVoters(t, c.Node(1), 4)
	if err := c.Node(1).RemoveServer(ctx, 4); err != nil {
		t.Fatal(err)
	}
	ms, err := c.Node(2).Members(ctx)
	if err != nil || len(ms) != 3 {
		t.Fatalf("members after remove: %+v %v", ms, err)
	}
	// The cluster is 3 voters again: it writes with server 4 closed.
	c.Stop(n4.ID())
	if _, err := c.Node(3).KV().Put(ctx, "k", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(1).RemoveServer(ctx, 4); !errors.Is(err, dister.ErrNotFound) {
		t.Fatalf("remove twice: %v", err)
	}
	// Removed ids are never reused.
	p := dister.Peer{RaftAddr: testcluster.FreeAddr(t), PeerAddr: testcluster.FreeAddr(t)}
	if _, err := c.Node(1).AddServer(ctx, 4, p); !errors.Is(err, dister.ErrConflict) {
		t.Fatalf("reuse of a removed id: %v", err)
	}
	if id, err := c.Node(1).AddServer(ctx, 0, p); err != nil || id != 5 {
		t.Fatalf("next free id after a removal: %d %v", id, err)
	}
}
