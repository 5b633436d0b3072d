package dister_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestKeptAliveLeaseSurvivesLeaderChanges: keepalives move the deadline in
// the leader's memory only; a checkpoint of the remaining TTL taken before
// a keepalive must not outlive it, or the next leader starts the renewed
// lease at that stale remainder. Reproduced before: LeaseCheckpoint 1s,
// TTL 4s, the leader closed shortly after a keepalive → the key was gone
// after the failover, before the client's next keepalive was due.
func TestKeptAliveLeaseSurvivesLeaderChanges(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	c := testcluster.New(t, 3, func(o *dister.Options) { o.LeaseCheckpoint = time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const ttl = 4 * time.Second
	id, err := c.Node(1).Leases().Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Node(1).KV().Put(ctx, "alive", []byte("x"), dister.WithLease(id)); err != nil {
		t.Fatal(err)
	}
	// keepAlive renews through whichever server answers, as a client that
	// follows the cluster would, and returns when it succeeded.
	keepAlive := func() time.Time {
		t.Helper()
		for ctx.Err() == nil {
			for _, sid := range c.IDs() {
				kctx, kcancel := context.WithTimeout(ctx, time.Second)
				err := c.Node(sid).Leases().KeepAlive(kctx, id)
				kcancel()
				if err == nil {
					return time.Now()
				}
				if errors.Is(err, dister.ErrLeaseNotFound) {
					t.Fatalf("keepalive: %v", err)
				}
			}
		}
		t.Fatal("no keepalive succeeded")
		return time.Time{}
	}

	last := keepAlive()
	for round := range 5 {
		// The client renews at three quarters of the TTL: by then the
		// checkpoints record little time left. The leader dies at a random
		// moment shortly after the renewal, before the next checkpoint.
		time.Sleep(time.Until(last.Add(3 * ttl / 4)))
		last = keepAlive()
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		leader := c.Leader()
		c.Stop(leader)
		c.Leader() // a new one among the other two
		time.Sleep(time.Until(last.Add(3 * ttl / 4)))
		var reader *dister.Node
		for _, sid := range c.IDs() {
			reader = c.Node(sid)
		}
		if _, err := reader.KV().Get(ctx, "alive", dister.Linearizable()); err != nil {
			t.Fatalf("round %d (leader %d closed): key of a kept-alive lease: %v", round, leader, err)
		}
		last = keepAlive()
		c.Restart(leader)
	}
	// Without keepalives it still expires.
	waitFor(t, func() bool {
		_, err := c.Node(c.Leader()).KV().Get(ctx, "alive", dister.Linearizable())
		return errors.Is(err, dister.ErrNotFound)
	})
}
