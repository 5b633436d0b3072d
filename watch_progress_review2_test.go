package dister_test

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// r2Note waits up to d for a progress note on events, counting the put
// events of prefix+%04d from i0 on (in order) meanwhile; it returns the
// note's revision (-1 = none) and the puts read.
func r2Note(t *testing.T, events <-chan dister.WatchEvent, prefix string, i0 int, d time.Duration) (int64, int) {
	t.Helper()
	deadline := time.After(d)
	got := i0
	for {
		select {
		case ev := <-events:
			if ev.Err != nil {
				t.Fatalf("the watch ended after %d events: %v", got, ev.Err)
			}
			if ev.Type == dister.EventProgress {
				return ev.Revision, got - i0
			}
			if k := fmt.Sprintf("%s%04d", prefix, got); ev.Entry.Key != k {
				t.Fatalf("event %d is %q, want %q", got, ev.Entry.Key, k)
			}
			got++
		case <-deadline:
			return -1, got - i0
		}
	}
}

// r2Sync returns once n's hub has finished what it was doing: a write of
// a fresh z/ key reaches the canary (a watch of z/ read by nobody else)
// in a later advance of the hub's loop.
func r2Sync(t *testing.T, ctx context.Context, kv *dister.KV, canary <-chan dister.WatchEvent) {
	t.Helper()
	key := fmt.Sprintf("z/sync%d", r2Seq.Add(1))
	if _, err := kv.Put(ctx, key, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-canary:
			if ev.Err != nil {
				t.Fatal(ev.Err)
			}
			if ev.Type == dister.EventPut && ev.Entry.Key == key {
				return
			}
		case <-deadline:
			t.Fatalf("setup: the canary did not get %s", key)
		}
	}
}

var r2Seq atomic.Int64

// r2Live returns once every one of the watches (the last is the canary)
// is on the hub's live stream (a progress note came; asked again until
// one did: a watcher whose goroutine had not started yet misses a
// request), with nothing left in their channels.
func r2Live(t *testing.T, ctx context.Context, kv *dister.KV, chans ...<-chan dister.WatchEvent) {
	t.Helper()
	got := make([]bool, len(chans))
	for try := 0; ; try++ {
		if try == 50 {
			t.Fatal("setup: no progress note in 50 requests")
		}
		if err := kv.RequestProgress(ctx); err != nil {
			t.Fatal(err)
		}
		all := true
		for i, ch := range chans {
			if !got[i] {
				rev, _ := r2Note(t, ch, "-", 0, 100*time.Millisecond)
				got[i] = rev >= 0
			}
			all = all && got[i]
		}
		if all {
			break
		}
	}
	r2Sync(t, ctx, kv, chans[len(chans)-1])
	for _, ch := range chans[:len(chans)-1] {
		for len(ch) > 0 {
			if ev := <-ch; ev.Err != nil || ev.Type != dister.EventProgress {
				t.Fatalf("setup: unexpected %+v", ev)
			}
		}
	}
}

// TestReview2ProgressAskedWithQueueFull: KV.RequestProgress "makes every
// watch of this group on this Node receive a progress event soon". A watch
// whose consumer is behind by exactly 16 (its channel) + 256 (the hub's
// queue for it) revisions when the note is asked for is let go by the
// note's own offer, and the note is lost: it is not queued, not the head,
// and not marked owed (letGo marks owed only for notes it drops from the
// queue). The consumer reads every event and then gets no note until the
// 15 s tick.
func TestReview2ProgressAskedWithQueueFull(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	kv := c.Node(1).KV()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := kv.Watch(wctx, "f/")
	canary := kv.Watch(wctx, "z/") // read at once: tells what the hub did
	r2Live(t, ctx, kv, events, canary)
	// 16 in the channel, 256 queued: full, but still live (one at a
	// time, so the hub sees no burst).
	asked := r1Fill(t, ctx, kv, "f/", 0, 16+256)
	if err := kv.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	// The hub offered the note to both (one progress call, under h.mu)
	// once the canary has it; and it has returned from that call once
	// the canary has the next write's event.
	if rev, _ := r2Note(t, canary, "-", 0, 5*time.Second); rev < asked {
		t.Fatalf("setup: canary's note at %d, want %d or later", rev, asked)
	}
	r2Sync(t, ctx, kv, canary)
	note, got := r2Note(t, events, "f/", 0, 4*time.Second)
	if note < 0 {
		t.Fatalf("read %d of 272 events, then no progress note within 4s of asking (asked after revision %d): "+
			"the note's own offer found the queue full and let the watcher go, dropping the note", got, asked)
	}
	if note < asked || got != 272 {
		t.Fatalf("progress note at %d after %d of 272 events, asked after revision %d", note, got, asked)
	}
}

// TestReview2ProgressAskedRightAfterWatch: a note asked for right after
// Watch returned. Watch returns once the watcher's goroutine is started,
// but the goroutine joins the hub's attached set (which progress asks)
// only when it runs: a hub that serves the request first leaves the new
// watch without a note, for good (until the 15 s tick). With one P the
// hub's goroutine, readied by the request, runs before the watcher's.
func TestReview2ProgressAskedRightAfterWatch(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	kv := c.Node(1).KV()
	// The hub exists and idles.
	w0ctx, cancel0 := context.WithCancel(ctx)
	defer cancel0()
	r2Live(t, ctx, kv, kv.Watch(w0ctx, "z/"))
	const tries = 10 // under -race the hub wins about every other time
	missed, i := 0, 0
	for ; i < tries && missed == 0; i++ {
		wctx, cancel := context.WithCancel(ctx)
		prev := runtime.GOMAXPROCS(1)
		events := kv.Watch(wctx, fmt.Sprintf("b%d/", i))
		err := kv.RequestProgress(ctx)
		rev := int64(-1)
		if err == nil {
			rev, _ = r2Note(t, events, "-", 0, time.Second)
		}
		runtime.GOMAXPROCS(prev)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if rev < 0 {
			missed++
		}
	}
	if missed > 0 {
		t.Fatalf("watch %d of %d got no progress note within 1s of a RequestProgress made after its Watch returned "+
			"(the hub served the request before the watch's goroutine attached)", i, tries)
	}
}

// r2Puts writes n puts of prefix+%04d (from i0) through kv from 8
// goroutines (not in key order).
func r2Puts(t *testing.T, ctx context.Context, kv *dister.KV, prefix string, i0, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := i0 + g; i < i0+n; i += 8 {
				if _, err := kv.Put(ctx, fmt.Sprintf("%s%04d", prefix, i), nil); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestReview2OwedNoteForFutureStart: watches that start in the future and
// are let go by a burst (the hub was held) while a progress note is asked
// for get the note once level (owed), at a revision no lower than the one
// applied when asked and below their start when nothing of theirs came
// yet: one whose start the burst crossed gets its events from the start,
// in order, and then the note; one whose start is still ahead gets a note
// at start-1 (as the live stream would say), not later.
func TestReview2OwedNoteForFutureStart(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	kv := n.KV()
	zctx, zcancel := context.WithCancel(ctx)
	defer zcancel()
	canary := kv.Watch(zctx, "z/")
	r2Live(t, ctx, kv, canary)
	base, err := kv.Put(ctx, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	midFrom, farFrom := base+100, base+1000
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	mid := kv.Watch(wctx, "m/", dister.FromRevision(midFrom))
	far := kv.Watch(wctx, "m/", dister.FromRevision(farFrom))
	r2Live(t, ctx, kv, mid, far, canary)
	base, err = kv.Put(ctx, "x", nil) // r2Live wrote
	if err != nil {
		t.Fatal(err)
	}
	if base+300 < midFrom || base >= midFrom {
		t.Fatalf("setup: revision %d, mid start %d", base, midFrom)
	}
	reached, unblock := holdHubs(n)
	defer unblock()
	if _, err := kv.Put(ctx, "x", nil); err != nil {
		t.Fatal(err)
	}
	<-reached
	r1Fill(t, ctx, kv, "m/", 0, 300) // one burst: release lets both go
	asked, err := kv.Put(ctx, "x", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	unblock()
	dister.SetHubHook(n, nil)
	// mid: the events from its start, then a note at asked or later.
	skip := int(midFrom - base - 2) // m/0000 is at base+2
	note, got := r2Note(t, mid, "m/", skip, 5*time.Second)
	if note < 0 || note < asked || got != 300-skip {
		t.Fatalf("mid (from %d): note %d after %d of %d events, asked at %d", midFrom, note, got, 300-skip, asked)
	}
	farNote, got := r2Note(t, far, "-", 0, 5*time.Second)
	if farNote < 0 || got != 0 || farNote < asked || farNote >= farFrom {
		t.Fatalf("far (from %d): note %d after %d events, asked at %d; want a note in [%d, %d)", farFrom, farNote, got, asked, asked, farFrom)
	}
	t.Logf("mid note %d, far note %d, asked %d", note, farNote, asked)
}
