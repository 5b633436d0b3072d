package dister_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestReview1RequestedProgressNotDropped: KV.RequestProgress "makes every
// watch of this group on this Node receive a progress event soon, at a
// revision no older than what the serving server's replica had applied
// when asked". A slow watch whose note was queued behind its pending
// revisions must still get one once it reads on: when the hub lets it go,
// the note is dropped with the rest of the pending list, and nothing
// replaces it (only the 15 s tick does, much later).
func TestReview1RequestedProgressNotDropped(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	kv := c.Node(1).KV()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := kv.Watch(wctx, "p/")
	asked := r1Fill(t, ctx, kv, "p/", 0, 100) // 16 in the channel, 84 pending
	if err := kv.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	// The note is queued behind the 84; once the hub has handed it on,
	// more writes fill the pending list and the watcher is let go.
	time.Sleep(200 * time.Millisecond)
	r1Fill(t, ctx, kv, "p/", 100, 300)
	got := 0
	var note int64
	deadline := time.After(5 * time.Second)
	for got < 400 || note < asked {
		select {
		case ev := <-events:
			if ev.Err != nil {
				t.Fatal(ev.Err)
			}
			if ev.Type == dister.EventProgress {
				note = max(note, ev.Revision)
				continue
			}
			if k := fmt.Sprintf("p/%04d", got); ev.Entry.Key != k {
				t.Fatalf("event %d is %q, want %q", got, ev.Entry.Key, k)
			}
			got++
		case <-deadline:
			t.Fatalf("%d of 400 events, and no progress note at %d or later (asked after that write) within 5s; newest note %d",
				got, asked, note)
		}
	}
}
