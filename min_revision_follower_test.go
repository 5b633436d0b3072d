package dister_test

import (
	"context"
	"errors"
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

// Reads at a reached MinRevision on a follower while the group's leader
// closes: the check may fail with the leader's absence (a timeout, no
// quorum) but never answer ErrInvalid.
func TestMinRevisionDuringLeaderClose(t *testing.T) {
	c := testcluster.New(t, 3, func(o *dister.Options) { o.SnapshotEntries, o.CompactionOverhead = 50, 10 })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	followers, leader := c.Followers()
	f := followers[0]
	c.Stop(f)
	rev := writeMany(ctx, t, c.Node(leader).KV(), 1500)
	n := c.Restart(f)
	var wg sync.WaitGroup
	var invalid atomic.Int64
	var other sync.Map
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, rcancel := context.WithTimeout(ctx, 8*time.Second)
			defer rcancel()
			start := time.Now()
			_, err := n.KV().Get(rctx, fmt.Sprintf("k%05d", i), dister.MinRevision(rev))
			t.Logf("reader %d: %v after %v", i, err, time.Since(start))
			if errors.Is(err, dister.ErrInvalid) {
				invalid.Add(1)
				t.Logf("reader %d: %v", i, err)
			} else if err != nil {
				other.Store(err.Error(), true)
			}
		}()
	}
	time.Sleep(400 * time.Millisecond)
	t.Logf("stopping leader %d", leader)
	c.Stop(leader)
	wg.Wait()
	other.Range(func(k, _ any) bool { t.Logf("other error: %v", k); return true })
	if invalid.Load() > 0 {
		t.Fatalf("%d reads at a reached min revision %d answered ErrInvalid", invalid.Load(), rev)
	}
}
