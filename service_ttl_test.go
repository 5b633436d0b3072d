package dister_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestTTLInstanceComesBackAfterLeaseLoss: while its Node runs, a ttl
// instance whose lease was lost (here: revoked behind its back, as an
// expiry during a long partition would) turns critical, then is
// registered again with a new lease and passes; one deregistered on
// purpose (through any Node) stays gone. Before the fix the Node stopped
// renewing at the first ErrLeaseNotFound and the instance stayed critical
// for good.
func TestTTLInstanceComesBackAfterLeaseLoss(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	owner, other := c.Node(1), c.Node(2)
	s := other.Services()
	for _, id := range []string{"lost", "gone"} {
		in := dister.Instance{Service: "worker", ID: id, Address: "127.0.0.1:7",
			Check: dister.Check{Type: dister.CheckTTL, TTL: time.Second}}
		if err := owner.Services().Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	lease, err := dister.InstanceLease(ctx, other, "default", "worker", "lost")
	if err != nil || lease == 0 {
		t.Fatalf("lease of worker/lost: %v %v", lease, err)
	}
	if err := other.Leases().Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if err := s.Deregister(ctx, "worker", "gone"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		got, err := dister.InstanceLease(ctx, other, "default", "worker", "lost")
		return err == nil && got != 0 && got != lease && instanceStatus(t, s, "worker", "lost") == dister.StatusPassing
	})
	// Still kept alive with the new lease, past several TTLs.
	time.Sleep(3 * time.Second)
	if st := instanceStatus(t, s, "worker", "lost"); st != dister.StatusPassing {
		t.Fatalf("re-registered instance is %q after 3 TTLs", st)
	}
	if _, ok := getInstance(t, s, "worker", "gone"); ok {
		t.Fatal("an instance deregistered on purpose came back")
	}
	// Deregistered through its own Node: gone too, and stays gone.
	if err := owner.Services().Deregister(ctx, "worker", "lost"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if _, ok := getInstance(t, s, "worker", "lost"); ok {
		t.Fatal("an instance deregistered through its Node came back")
	}
}

// TestKeeperBatchesPerGroup: a Node keeping many ttl instances alive
// renews them in one KeepAliveBatch per group and tick, not one call per
// lease, and keeps every one passing.
func TestKeeperBatchesPerGroup(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	owner := c.Node(c.Leader()%3 + 1) // a follower: renewals cross the network
	const n, ttl = 40, 3 * time.Second
	for i := range n {
		in := dister.Instance{Service: "worker", ID: fmt.Sprint(i), Address: "127.0.0.1:7",
			Check: dister.Check{Type: dister.CheckTTL, TTL: ttl}}
		if err := owner.Services().Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	before := dister.KeepAliveBatches(owner)
	const window = 2 * ttl // every lease is renewed about 6 times
	time.Sleep(window)
	batches := dister.KeepAliveBatches(owner) - before
	t.Logf("%d leases, TTL %v: %d batches in %v (one call per lease would be about %d)", n, ttl, batches, window, n*6)
	if batches >= n {
		t.Fatalf("%d keepalive calls for %d leases in %v: not batched", batches, n, window)
	}
	insts, err := c.Node(1).Services().Get(ctx, "worker", dister.WithRead(dister.Linearizable()))
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range insts {
		if in.Status != dister.StatusPassing {
			t.Fatalf("%s is %s", in.ID, in.Status)
		}
	}
	if len(insts) != n {
		t.Fatalf("%d instances, want %d", len(insts), n)
	}
}
