package dister_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// burstOnce holds server 1's watch fan-out while `revs` revisions of `keys`
// keys each commit under "b/", then lets it go; a watcher of "b/" that
// had nothing queued and keeps up with the writes must see them all (the
// burst is "read from the history instead", README), not be cancelled
// with ErrWatchOverflow.
func burstOnce(t *testing.T, revs, keys int) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	kv := n.KV()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start, err := kv.Put(ctx, "b/start", nil)
	if err != nil {
		t.Fatal(err)
	}
	events := kv.Watch(wctx, "b/", dister.FromRevision(start))
	if ev := <-events; ev.Err != nil || ev.Revision != start {
		t.Fatalf("first event %+v", ev)
	}
	// The watcher is joined and idle: nothing queued.
	reached, unblock := holdHubs(n)
	defer unblock()
	if _, err := kv.Put(ctx, "b/held", nil); err != nil {
		t.Fatal(err)
	}
	<-reached
	var last int64
	for i := range revs {
		var ops []dister.Op
		for j := range keys {
			ops = append(ops, dister.Put(fmt.Sprintf("b/%04d/%02d", i, j), nil))
		}
		res, err := kv.Txn(ctx, dister.Txn{Then: ops})
		if err != nil {
			t.Fatal(err)
		}
		last = res.Revision
	}
	unblock()
	dister.SetHubHook(n, nil)
	// Read as a real consumer does: a few microseconds of work per event
	// (50,000 events/s, far more than this test writes per second).
	want := 1 + revs*keys // b/held and the txns
	got := 0
	deadline := time.After(30 * time.Second)
	for got < want {
		select {
		case ev := <-events:
			if ev.Err != nil {
				t.Fatalf("%d revisions of %d keys at once: the watch ended after %d of %d events (last revision %d): %v",
					revs, keys, got, want, last, ev.Err)
			}
			got++
			for t0 := time.Now(); time.Since(t0) < 20*time.Microsecond; {
			}
		case <-deadline:
			t.Fatalf("%d of %d events in 30s", got, want)
		}
	}
	t.Logf("%d revisions of %d keys: all %d events delivered", revs, keys, want)
}

func TestWatchBurstOfSingleKeyRevisions(t *testing.T) { burstOnce(t, 1200, 1) }

func TestWatchBurstOfTxnRevisions(t *testing.T) { burstOnce(t, 400, 8) }
