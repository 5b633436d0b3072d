package dister_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// writeMany puts n keys through kv with a few writers; it returns the
// highest revision.
func writeMany(ctx context.Context, t *testing.T, kv *dister.KV, n int) int64 {
	t.Helper()
	var max atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				rev, err := kv.Put(ctx, fmt.Sprintf("k%05d", i), make([]byte, 512))
				if err != nil {
					errc <- err
					return
				}
				for {
					cur := max.Load()
					if rev <= cur || max.CompareAndSwap(cur, rev) {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	return max.Load()
}

// A follower that restarts far behind (the leader sends it a snapshot)
// serves a read at a MinRevision the group has reached: the check that
// answers ErrInvalid must not take the follower's own lag for the group's.
func TestMinRevisionOnRestartedFollower(t *testing.T) {
	c := testcluster.New(t, 3, func(o *dister.Options) { o.SnapshotEntries, o.CompactionOverhead = 50, 10 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	followers, leader := c.Followers()
	f := followers[0]
	c.Stop(f)
	rev := writeMany(ctx, t, c.Node(leader).KV(), 1500)
	n := c.Restart(f)
	for _, opt := range []dister.ReadOption{dister.SessionRead(), dister.Stale()} {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		start := time.Now()
		e, err := n.KV().Get(rctx, "k00000", opt, dister.MinRevision(rev))
		rcancel()
		if err != nil || e.ModRevision == 0 {
			t.Fatalf("restarted follower, get at min revision %d (reached): %v, %v after %v", rev, e, err, time.Since(start))
		}
		t.Logf("served after %v", time.Since(start))
	}
}

// Reads at a reached MinRevision on a follower that restarted far behind,
// while the group has no leader: the leader stops as the follower comes
// back, so the follower cannot catch up until the other follower is
// elected, and each read's check (250 ms, then a ReadIndex) meets the
// election. It must wait for the new leader and serve the read, never
// answer ErrInvalid.
func TestMinRevisionDuringLeaderClose(t *testing.T) {
	c := testcluster.New(t, 3, func(o *dister.Options) { o.SnapshotEntries, o.CompactionOverhead = 50, 10 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	followers, leader := c.Followers()
	f := followers[0]
	c.Stop(f)
	rev := writeMany(ctx, t, c.Node(leader).KV(), 1500)
	n := c.Restart(f)
	c.Stop(leader)
	if at, err := n.KV().Revision(ctx, dister.Stale()); err != nil || at >= rev {
		t.Fatalf("the restarted follower is at revision %d (%v), not behind %d: the test has no window", at, err, rev)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
			defer rcancel()
			start := time.Now()
			if _, err := n.KV().Get(rctx, fmt.Sprintf("k%05d", i), dister.MinRevision(rev)); err != nil {
				errc <- fmt.Errorf("reader %d, min revision %d (reached), after %v: %w", i, rev, time.Since(start), err)
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}
