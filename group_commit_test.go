package dister_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestGroupCommit: concurrent writes to one group share Raft entries
// (fewer proposals reach the engine than writes), yet each write keeps its
// own result and revision: the revisions are consecutive with no write
// sharing one, a watcher on another server sees each write once at its
// revision, and a retry of every command after it committed (as after a
// lost reply) applies nothing twice.
func TestGroupCommit(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	leader := c.Leader()
	n := c.Node(leader)
	kv := n.KV()
	const writers, each = 64, 40
	start, err := kv.Put(ctx, "start", nil)
	if err != nil {
		t.Fatal(err)
	}
	var watcher *dister.Node
	for _, id := range c.IDs() {
		if id != leader {
			watcher = c.Node(id)
			break
		}
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events := watcher.KV().Watch(wctx, "gc/", dister.FromRevision(start+1))
	got := make(chan []dister.WatchEvent, 1)
	go func() { // read while the writes run: a watcher that falls behind is ended
		var evs []dister.WatchEvent
		defer func() { got <- evs }()
		for ev := range events {
			if ev.Type != dister.EventProgress {
				evs = append(evs, ev)
			}
			if ev.Err != nil || len(evs) == writers*each {
				return
			}
		}
	}()

	var submitted atomic.Int64
	dister.SetSubmitHook(n, func(uint64) { submitted.Add(1) })
	var retried, retriedOK atomic.Int64
	dister.SetProposeHook(n, func(ctx context.Context, shardID uint64, cmd []byte) {
		// Every third command is sent again once it committed.
		if retried.Add(1)%3 != 0 {
			return
		}
		if _, _, err := dister.ProposeAgain(ctx, n, shardID, cmd); err == nil {
			retriedOK.Add(1)
		}
	})
	revs := make([]int64, writers*each)
	var wg sync.WaitGroup
	var failed atomic.Value
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				k := w*each + i
				rev, err := kv.Put(ctx, fmt.Sprintf("gc/%04d", k), []byte(fmt.Sprint(k)))
				if err != nil {
					failed.Store(err)
					return
				}
				revs[k] = rev
			}
		}()
	}
	wg.Wait()
	dister.SetSubmitHook(n, nil)
	dister.SetProposeHook(n, nil)
	if err, _ := failed.Load().(error); err != nil {
		t.Fatal(err)
	}
	total := int64(writers * each)
	// Without group commit each write (and each retry) is a proposal.
	if s := submitted.Load(); s >= total/2 {
		t.Fatalf("%d proposals for %d writes and %d retries: writes were not batched", s, total, retriedOK.Load())
	}
	t.Logf("%d writes (+%d retries) in %d proposals", total, retriedOK.Load(), submitted.Load())
	sorted := slices.Clone(revs)
	slices.Sort(sorted)
	for i, r := range sorted {
		if r != start+1+int64(i) {
			t.Fatalf("revision %d of the sorted writes is %d, want %d (shared or skipped revisions)", i, r, start+1+int64(i))
		}
	}
	var evs []dister.WatchEvent
	select {
	case evs = <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("the watcher did not see every write")
	}
	if len(evs) != int(total) {
		t.Fatalf("watcher saw %d of %d writes (last %+v)", len(evs), total, evs[len(evs)-1])
	}
	for i, ev := range evs {
		var k int
		if _, err := fmt.Sscanf(ev.Entry.Key, "gc/%04d", &k); err != nil || revs[k] != ev.Revision ||
			ev.Entry.Version != 1 || ev.Revision != start+1+int64(i) {
			t.Fatalf("event %d %+v: want revision %d, the write's, and version 1", i, ev, start+1+int64(i))
		}
	}
	if r, err := kv.Revision(ctx, dister.Linearizable()); err != nil || r != start+total {
		t.Fatalf("revision %d (%v), want %d: a retry applied again", r, err, start+total)
	}
}

// TestGroupCommitCloseMidBatch closes the leader while 64 writers keep
// batches in flight: every Put returns (no hang), with success, ErrClosed
// or ErrUnknownOutcome; each acknowledged write is on the other servers
// and none that was reported as not applied (ErrClosed) is.
func TestGroupCommitCloseMidBatch(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	leader := c.Leader()
	n := c.Node(leader)
	kv := n.KV()
	const writers = 64
	var (
		mu     sync.Mutex
		acked  []string
		closed []string
		wg     sync.WaitGroup
		count  atomic.Int64
	)
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				key := fmt.Sprintf("cm/%02d/%05d", w, i)
				_, err := kv.Put(ctx, key, nil)
				count.Add(1)
				mu.Lock()
				switch {
				case err == nil:
					acked = append(acked, key)
				case errors.Is(err, dister.ErrClosed) && !errors.Is(err, dister.ErrUnknownOutcome):
					closed = append(closed, key)
				case errors.Is(err, dister.ErrUnknownOutcome):
				default:
					t.Errorf("put %s: %v", key, err)
				}
				mu.Unlock()
				if err != nil {
					return
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	waitFor(t, func() bool { return count.Load() > 500 })
	c.Stop(leader)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		close(stop)
		t.Fatal("writers still blocked 30 s after Close")
	}
	var other *dister.Node
	for _, id := range c.IDs() {
		other = c.Node(id)
	}
	for _, key := range acked {
		if e, err := other.KV().Get(ctx, key, dister.Linearizable()); err != nil || e == nil {
			t.Fatalf("acknowledged %s lost: %v", key, err)
		}
	}
	for _, key := range closed {
		if _, err := other.KV().Get(ctx, key, dister.Linearizable()); !errors.Is(err, dister.ErrNotFound) {
			t.Fatalf("%s reported as not applied (ErrClosed) but is there: %v", key, err)
		}
	}
	t.Logf("%d acknowledged, %d not applied, %d writers", len(acked), len(closed), writers)
}
