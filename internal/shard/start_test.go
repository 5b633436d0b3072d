package shard

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

func quietHost(t *testing.T, id uint64, addr string) *Host {
	t.Helper()
	h, err := NewHost(Config{NodeID: id, DataDir: t.TempDir(), RaftAddr: addr,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// A request that comes while StartShard is under way, once the replica's
// state machine exists (Running is true) but before dragonboat knows the
// replica (it answers ErrShardNotFound), waits for the start instead of
// failing with ErrGroupNotFound: CI's TestAddServerAndJoin once read a
// group on a server starting it and got "group not found".
func TestRequestWhileShardStarts(t *testing.T) {
	addr := freeAddr(t)
	h := quietHost(t, 1, addr)
	entered, held := make(chan struct{}), make(chan struct{})
	h.SetStartHook(func(uint64) {
		close(entered)
		<-held
	})
	started := make(chan error, 1)
	go func() { started <- h.StartShard(7, map[uint64]string{1: addr}, false) }()
	<-entered
	h.SetStartHook(nil)
	if !h.Running(7) {
		t.Fatal("the state machine exists but Running is false")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := txnCmd(t, 1)
	calls := map[string]func() error{
		"propose": func() error { _, err := h.Propose(ctx, 7, cmd); return err },
		"read":    func() error { _, err := h.Read(ctx, 7, fsm.GetQuery{Key: "k"}); return err },
		"stale read": func() error {
			_, err := h.StaleRead(ctx, 7, fsm.GetQuery{Key: "k"})
			return err
		},
		"membership": func() error { _, err := h.Membership(ctx, 7); return err },
	}
	errc := make(chan error, len(calls))
	for name, call := range calls {
		go func() {
			if err := call(); err != nil {
				errc <- errors.New(name + ": " + err.Error())
				return
			}
			errc <- nil
		}()
	}
	time.Sleep(300 * time.Millisecond) // the calls meet the replica starting
	close(held)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	for range calls {
		if err := <-errc; err != nil {
			t.Error(err)
		}
	}
}

// A replica that stopped, or that applied its own removal (dragonboat
// dropped it; its state machine is still listed), answers ErrGroupNotFound
// at once: only a start under way is worth waiting for.
func TestRequestToGoneReplicaFailsFast(t *testing.T) {
	h1, h2 := twoHosts(t, 7, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h1.WaitLeader(ctx, 8); err != nil {
		t.Fatal(err)
	}
	// Shard 7: host 2 leads it and removes its own replica, which then
	// applies its removal (RemoveMember would move the leadership first).
	makeLeader(ctx, t, h1, 7, 2)
	err := h2.configChange(ctx, 7, func(t time.Duration) (*dragonboat.RequestState, error) {
		return h2.nh.RequestDeleteReplica(7, 2, 0, t)
	}, func(m Membership) bool { return !m.has(2) })
	if err != nil && !errors.Is(err, errs.Closed) && !h2.RemovedHere(7) {
		t.Fatalf("remove replica 2 of shard 7: %v", err)
	}
	for !h2.RemovedHere(7) {
		select {
		case <-ctx.Done():
			t.Fatal("replica 2 of shard 7 did not apply its removal")
		case <-time.After(10 * time.Millisecond):
		}
	}
	// Shard 8: host 2 stops its replica.
	if err := h2.StopShard(8); err != nil {
		t.Fatal(err)
	}
	for _, s := range []uint64{7, 8} {
		begin := time.Now()
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		_, rerr := h2.Read(rctx, s, fsm.GetQuery{Key: "k"})
		_, serr := h2.StaleRead(rctx, s, fsm.GetQuery{Key: "k"})
		_, merr := h2.Membership(rctx, s)
		got := []error{rerr, serr, merr}
		if s == 8 {
			// A proposal to a replica that removed itself waits for a
			// leader until ctx ends (attempt's no-leader wait, older than
			// this test): only the stopped one is checked.
			_, perr := h2.Propose(rctx, s, txnCmd(t, 2))
			got = append(got, perr)
		}
		rcancel()
		for _, err := range got {
			if !errors.Is(err, errs.GroupNotFound) {
				t.Errorf("shard %d gone from host 2: %v, want ErrGroupNotFound", s, err)
			}
		}
		if d := time.Since(begin); d > time.Second {
			t.Errorf("shard %d gone from host 2: the calls took %v", s, d)
		}
	}
}

// makeLeader waits until replica id leads shard, as h sees it, asking
// for a leader transfer to it meanwhile.
// twoHosts starts hosts 1 and 2 with the given shards, both voters of each.
func twoHosts(t *testing.T, shards ...uint64) (*Host, *Host) {
	t.Helper()
	a1, a2 := freeAddr(t), freeAddr(t)
	h1, h2 := quietHost(t, 1, a1), quietHost(t, 2, a2)
	members := map[uint64]string{1: a1, 2: a2}
	for _, h := range []*Host{h1, h2} {
		for _, shard := range shards {
			if err := h.StartShard(shard, members, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	return h1, h2
}

func makeLeader(ctx context.Context, t *testing.T, h *Host, shard, id uint64) {
	t.Helper()
	for {
		if err := h.WaitLeader(ctx, shard); err != nil {
			t.Fatal(err)
		}
		if leader, _ := h.Leader(shard); leader == id {
			return
		}
		if err := h.nh.RequestLeaderTransfer(shard, id); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("replica %d did not take the lead of shard %d", id, shard)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
