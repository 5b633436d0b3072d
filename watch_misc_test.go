package dister_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestWatchLeaseExpiryOneRevision: the keys of an expired lease go in
// one revision; a watcher of a sub-prefix sees its part of it framed as
// one revision, the empty prefix sees all of it, and reserved prefixes are
// refused.
func TestWatchLeaseExpiryOneRevision(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	n := c.Node(1)
	id, err := n.Leases().Grant(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	for i := range 30 {
		p := "l/a/"
		if i%3 == 0 {
			p = "l/b/"
		}
		if last, err = n.KV().Put(ctx, fmt.Sprintf("%s%02d", p, i), nil, dister.WithLease(id)); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sub := c.Node(2).KV().Watch(wctx, "l/a/", dister.FromRevision(last+1))
	all := c.Node(3).KV().Watch(wctx, "", dister.FromRevision(last+1))
	read := func(ch <-chan dister.WatchEvent, want int) {
		t.Helper()
		var rev int64
		for i := range want {
			var ev dister.WatchEvent
			select {
			case ev = <-ch:
			case <-time.After(15 * time.Second):
				t.Fatalf("event %d of %d not in 15s", i, want)
			}
			if ev.Err != nil || ev.Type != dister.EventDelete {
				t.Fatalf("event %d: %+v", i, ev)
			}
			if rev == 0 {
				rev = ev.Revision
			}
			if ev.Revision != rev || ev.LastInRevision != (i == want-1) {
				t.Fatalf("event %d of %d: revision %d (first %d), last %v", i, want, ev.Revision, rev, ev.LastInRevision)
			}
		}
	}
	read(sub, 20)
	read(all, 30)
	for _, p := range []string{"\x00", "\x00svc/"} {
		if ev := <-n.KV().Watch(ctx, p); !errors.Is(ev.Err, dister.ErrInvalid) {
			t.Errorf("watch of reserved prefix %q: %+v", p, ev)
		}
	}
}

// TestWatchManyCancelledAtOnce: 2,000 watchers, half never read
// (full channels), all cancelled at once while writes go on: writes are not
// held up, every channel ends and closes, no goroutine stays.
func TestWatchManyCancelledAtOnce(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	base := runtime.NumGoroutine()
	wctx, cancel := context.WithCancel(ctx)
	var chans []<-chan dister.WatchEvent
	for i := range 2000 {
		chans = append(chans, n.KV().Watch(wctx, fmt.Sprintf("c/%d", i%4)))
	}
	readers := make(chan struct{}, 1000)
	for i := 0; i < len(chans); i += 2 {
		go func() {
			for range chans[i] {
			}
			readers <- struct{}{}
		}()
	}
	for i := range 400 {
		if _, err := n.KV().Put(ctx, fmt.Sprintf("c/%d/%d", i%4, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	start := time.Now()
	for i := range 50 {
		if _, err := n.KV().Put(ctx, fmt.Sprintf("c/0/after%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("50 puts right after the cancel: %v", time.Since(start))
	for i := 1; i < len(chans); i += 2 {
		if _, err := drainWatch(chans[i], 10*time.Second); err != nil {
			t.Fatalf("unread watcher %d: %v", i, err)
		}
	}
	for range 1000 {
		select {
		case <-readers:
		case <-time.After(10 * time.Second):
			t.Fatal("a read watcher did not end")
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base+20 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > base+20 {
		t.Fatalf("%d goroutines, %d before the watches:\n%s", g, base, leftovers())
	}
}
