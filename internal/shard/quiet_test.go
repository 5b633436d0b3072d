package shard

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// threeHosts starts shard 7 on three hosts with quiesce on.
func threeHosts(t *testing.T) []*Host {
	t.Helper()
	addrs := map[uint64]string{1: freeAddr(t), 2: freeAddr(t), 3: freeAddr(t)}
	var hosts []*Host
	for id := uint64(1); id <= 3; id++ {
		h, err := NewHost(Config{NodeID: id, DataDir: t.TempDir(), RaftAddr: addrs[id],
			Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
			Quiesce: func(uint64) bool { return true }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close)
		if err := h.StartShard(7, addrs, false); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	return hosts
}

func waitQuiet(t *testing.T, hosts []*Host, shardID uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, h := range hosts {
		for !h.Quiet(shardID) {
			if time.Now().After(deadline) {
				t.Fatalf("host %d: shard %d not quiet after 30s", h.NodeID(), shardID)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// A quiet shard's followers do not notice that its leader died (no
// heartbeats). A write on a survivor must still succeed: a try that timed
// out wakes the local replica, which then elects a new leader.
func TestQuietShardWriteAfterLeaderDied(t *testing.T) {
	hosts := threeHosts(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := hosts[0].WaitLeader(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if _, err := hosts[0].Propose(ctx, 7, txnCmd(t, 1)); err != nil {
		t.Fatal(err)
	}
	waitQuiet(t, hosts, 7)
	leader, _ := hosts[0].Leader(7)
	var survivor *Host
	for _, h := range hosts {
		if h.NodeID() == leader {
			h.Close()
		} else {
			survivor = h
		}
	}
	if !survivor.Quiet(7) {
		t.Fatal("the survivor left quiesce before any request: the test would prove nothing")
	}
	if _, err := survivor.Propose(ctx, 7, txnCmd(t, 2)); err != nil {
		t.Fatalf("write on a survivor of a quiet shard whose leader died: %v", err)
	}
	if l, _ := survivor.Leader(7); l == leader || l == 0 {
		t.Fatalf("leader after the write: %d (the dead one was %d)", l, leader)
	}
}
