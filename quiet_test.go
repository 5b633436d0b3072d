package dister_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// An idle group goes quiet: no heartbeats, so its followers cannot see its
// leader die. With no request to the group at all, the survivors must
// still elect a new leader (each server probes the others and wakes the
// groups a dead server led), and a lease in it must still expire: its
// countdown restarts under the new leader.
//
// Not parallel: whether a replica is quiet is read from dragonboat's log,
// which names it by shard and replica id only, ids that the clusters of
// parallel tests share.
func TestQuietGroupRecoversWithoutRequests(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	first := c.Node(c.IDs()[0])
	if err := first.CreateGroup(ctx, "quiet"); err != nil {
		t.Fatal(err)
	}
	g := first.Group("quiet")
	const ttl = 10 * time.Second
	lease, err := g.Leases().Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.KV().Put(ctx, "owned", []byte("v"), dister.WithLease(lease)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, id := range c.IDs() {
		for !dister.GroupQuiet(c.Node(id), "quiet") {
			if time.Now().After(deadline) {
				t.Fatalf("server %d: group not quiet 30s after its last write", id)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	leader, err := g.Leader(ctx)
	if err != nil || leader == 0 {
		t.Fatalf("leader %d, %v", leader, err)
	}
	c.Stop(leader)
	var survivors []uint64
	for _, id := range c.IDs() {
		if id != leader {
			survivors = append(survivors, id)
		}
	}
	// Only the local view of the leader is read: no request reaches the
	// group, so nothing but the probes can wake it.
	deadline = time.Now().Add(30 * time.Second)
	for _, id := range survivors {
		for {
			l, err := c.Node(id).Group("quiet").Leader(ctx)
			if err == nil && l != 0 && l != leader {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("server %d: leader of the quiet group is %d (%v) 30s after server %d closed", id, l, err, leader)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	kv := c.Node(survivors[0]).Group("quiet").KV()
	deadline = time.Now().Add(ttl + 30*time.Second)
	for {
		_, err := kv.Get(ctx, "owned")
		if errors.Is(err, dister.ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leased key is still there %v after the leader closed: %v", ttl+30*time.Second, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// DeleteGroup frees what the group held on every server: its goroutines
// (pebble's, the checker's) as well as its data (see
// TestDeleteGroupRemovesDataOnceClosed). Not parallel: it counts the
// process's goroutines.
func TestDeleteGroupFreesGoroutines(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n := c.Node(c.IDs()[0])
	cycle := func(prefix string) {
		for i := range 4 {
			name := fmt.Sprintf("%s%d", prefix, i)
			if err := n.CreateGroup(ctx, name); err != nil {
				t.Fatal(err)
			}
			if _, err := n.Group(name).KV().Put(ctx, "k", []byte("v")); err != nil {
				t.Fatal(err)
			}
		}
		grown := ownGoroutines()
		for i := range 4 {
			if err := n.DeleteGroup(ctx, fmt.Sprintf("%s%d", prefix, i)); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("%s: %d goroutines with the groups", prefix, grown)
	}
	cycle("warm")
	settle := func() int {
		last, stable := ownGoroutines(), 0
		for deadline := time.Now().Add(30 * time.Second); stable < 10 && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
			if now := ownGoroutines(); now == last {
				stable++
			} else {
				last, stable = now, 0
			}
		}
		return last
	}
	before := settle()
	cycle("g")
	after := settle()

	t.Logf("goroutines: %d before, %d after creating and deleting 4 groups", before, after)
	// 4 groups on 3 servers held 4 pebble goroutines each per replica before
	// they were shared (now 1) and a checker each: 16 or more.
	if after > before+4 {
		t.Fatalf("goroutines: %d before, %d after creating and deleting 4 groups", before, after)
	}
}

// ownGoroutines counts the goroutines of the process except those of
// dragonboat's transport: it spreads shards over up to 4 connections per
// pair of servers, opened and closed as shards come and go.
func ownGoroutines() int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if !bytes.Contains(g, []byte("dragonboat/v4/internal/transport.")) {
			n++
		}
	}
	return n
}
