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
	t.Parallel() // long, mostly waiting on timers: runs beside the others
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 1))
	c := testcluster.New(t, 3, func(o *dister.Options) { o.LeaseCheckpoint = time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const ttl = 4 * time.Second
	var id dister.LeaseID
	// grant starts over with a new lease and its key.
	grant := func() time.Time {
		t.Helper()
		var err error
		if id, err = c.Node(c.Leader()).Leases().Grant(ctx, ttl); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Node(c.Leader()).KV().Put(ctx, "alive", []byte("x"), dister.WithLease(id)); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	// keepAlive renews through whichever server answers, as a client that
	// follows the cluster would. ok is false when the lease expired after
	// the client could not renew it within its TTL (a machine too loaded
	// to elect a leader in time): the round proves nothing then. An expiry
	// within the TTL of the last renewal fails the test.
	keepAlive := func(last time.Time) (renewed time.Time, ok bool) {
		t.Helper()
		for ctx.Err() == nil {
			for _, sid := range c.IDs() {
				kctx, kcancel := context.WithTimeout(ctx, time.Second)
				err := c.Node(sid).Leases().KeepAlive(kctx, id)
				kcancel()
				if err == nil {
					return time.Now(), true
				}
				if errors.Is(err, dister.ErrLeaseNotFound) {
					if since := time.Since(last); since < ttl {
						t.Fatalf("keepalive %v after the last renewal: %v", since, err)
					}
					return time.Time{}, false
				}
			}
		}
		t.Fatal("no keepalive succeeded")
		return time.Time{}, false
	}

	last := grant()
	for round, attempts := 0, 0; round < 5; attempts++ {
		if attempts == 15 {
			t.Fatalf("only %d of 5 rounds in %d attempts: the keepalives were late every time", round, attempts)
		}
		// The client renews at three quarters of the TTL: by then the
		// checkpoints record little time left. The leader dies at a random
		// moment shortly after the renewal, before the next checkpoint.
		time.Sleep(time.Until(last.Add(3 * ttl / 4)))
		var ok bool
		if last, ok = keepAlive(last); !ok {
			last = grant()
			continue
		}
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
			if since := time.Since(last); since < ttl {
				t.Fatalf("round %d (leader %d closed): key of a lease renewed %v ago: %v", round, leader, since, err)
			}
			t.Logf("round %d: the read came %v after the renewal, too late to tell; again", round, time.Since(last))
			c.Restart(leader)
			last = grant()
			continue
		}
		if last, ok = keepAlive(last); !ok {
			t.Logf("round %d: the keepalive came too late to tell; again", round)
			c.Restart(leader)
			last = grant()
			continue
		}
		c.Restart(leader)
		round++
	}
	// Without keepalives it still expires.
	waitFor(t, func() bool {
		_, err := c.Node(c.Leader()).KV().Get(ctx, "alive", dister.Linearizable())
		return errors.Is(err, dister.ErrNotFound)
	})
}
