package dister_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestRevisionsCountChanges: a group's revision is a counter of the
// commands that changed a key, not the Raft index: writes get consecutive
// revisions whatever else goes through the log (lease grants, keepalives'
// checkpoints, lessor epochs, failed compare-and-swaps, deletes of missing
// keys, the catalog), and a watch sees every revision once with no gaps.
// Before, a revision was the Raft index and had gaps.
func TestRevisionsCountChanges(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	kv := c.Node(2).KV()
	start, err := kv.Put(ctx, "start", nil)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := kv.Watch(wctx, "w/", dister.FromRevision(start+1))

	const writers, each = 4, 25
	var mu sync.Mutex
	var revs []int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := c.Node(uint64(1 + w%3))
			for i := range each {
				r, err := n.KV().Put(ctx, fmt.Sprintf("w/%d/%d", w, i), []byte("v"))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				revs = append(revs, r)
				mu.Unlock()
				// Commands that change no key, in between.
				if _, err := n.Leases().Grant(ctx, time.Minute); err != nil {
					t.Error(err)
				}
				if _, err := n.KV().Put(ctx, "w/never", nil, dister.IfModRevision(1<<40)); err == nil {
					t.Error("a CAS on a revision that cannot exist succeeded")
				}
				if d, err := n.KV().Delete(ctx, "missing"); err != nil || d.Deleted != 0 {
					t.Errorf("delete of a missing key: %+v %v", d, err)
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	slices.Sort(revs)
	for i, r := range revs {
		if r != start+1+int64(i) {
			t.Fatalf("revision %d of the writes is %d, want %d (revisions have gaps or repeats: %v)", i, r, start+1+int64(i), revs)
		}
	}
	last := revs[len(revs)-1]
	if cur, err := c.Node(3).KV().Revision(ctx, dister.Linearizable()); err != nil || cur != last {
		t.Fatalf("group revision %d (%v), want the last write's %d", cur, err, last)
	}
	for want := start + 1; want <= last; want++ {
		ev := <-events
		if ev.Err != nil || ev.Revision != want || !ev.LastInRevision {
			t.Fatalf("watch event %+v, want revision %d", ev, want)
		}
	}
}
