package shard

import (
	"context"
	"testing"
	"time"
)

// MoveLeadership moves a shard's leadership off the replica RemoveMember
// is about to remove, so that a shard of two voters keeps one that knows
// the change committed. (A leader that applies its own removal stops at
// once; the other voter, if it had not learned that the change committed,
// counts the removed one for good: TestRemoveLiveServerOfTwo failed so.
// This test does not reproduce that race; it checks the move.)
func TestRemoveLeaderOfTwo(t *testing.T) {
	h1, h2 := twoHosts(t, 7)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	makeLeader(ctx, t, h1, 7, 2)
	// A transfer request still pending makes dragonboat answer the next
	// one ErrSystemBusy; MoveLeadership must wait it out, not fail (it did
	// in CI, right after makeLeader's last request).
	h2.nh.RequestLeaderTransfer(7, 2)
	if err := h2.MoveLeadership(ctx, 7, 2); err != nil {
		t.Fatal(err)
	}
	if leader, ok := h2.Leader(7); !ok || leader != 1 {
		t.Fatalf("leader after MoveLeadership off 2: %d %v, want 1", leader, ok)
	}
	if err := h1.RemoveMember(ctx, 7, 2); err != nil {
		t.Fatalf("remove replica 2: %v", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if _, err := h1.Propose(wctx, 7, txnCmd(t, 1)); err != nil {
		t.Fatalf("write after the removal: %v", err)
	}
	if m, err := h1.Membership(wctx, 7); err != nil || len(m.Voters) != 1 {
		t.Fatalf("membership after the removal: %+v %v", m, err)
	}
}
