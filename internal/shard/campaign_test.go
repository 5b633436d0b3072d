package shard

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"
)

// A group's first leader comes from the campaign WaitFirstLeader starts,
// not from an election timeout: with a timeout of 20-40 s (ElectionRTT
// 1,000), three replicas that start at once elect the creating server's
// replica within the 10 s the call is given. Without the campaign no
// election could start before 20 s.
func TestFirstLeaderWithoutElectionTimeout(t *testing.T) {
	addrs := map[uint64]string{1: freeAddr(t), 2: freeAddr(t), 3: freeAddr(t)}
	hosts := map[uint64]*Host{}
	for id, addr := range addrs {
		h, err := NewHost(Config{NodeID: id, DataDir: t.TempDir(), RaftAddr: addr, ElectionRTT: 1000,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close)
		hosts[id] = h
	}
	for shard := uint64(10); shard < 13; shard++ {
		for _, h := range hosts {
			if err := h.StartShard(shard, addrs, false); err != nil {
				t.Fatal(err)
			}
		}
		creator := hosts[shard-9]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := creator.WaitFirstLeader(ctx, shard)
		cancel()
		if err != nil {
			t.Fatalf("shard %d: no leader within 10 s of an election timeout of 20 s: %v", shard, err)
		}
		if id, _ := creator.Leader(shard); id != shard-9 {
			t.Fatalf("shard %d: leader %d, want the replica that campaigned (%d)", shard, id, shard-9)
		}
	}
}
