package dister_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// gateHubs makes every advance of n's watch hubs wait for a token from
// admit; entered receives one value each time an advance waits there.
// open lets every advance through from then on.
func gateHubs(t *testing.T, n *dister.Node) (entered <-chan struct{}, admit chan<- struct{}, open func()) {
	in, tokens, done := make(chan struct{}, 16), make(chan struct{}), make(chan struct{})
	dister.SetHubHook(n, func(uint64) {
		select {
		case in <- struct{}{}:
		default:
		}
		select {
		case <-tokens:
		case <-done:
		}
	})
	opened := false
	open = func() {
		if !opened {
			opened = true
			dister.SetHubHook(n, nil)
			close(done)
		}
	}
	t.Cleanup(open)
	return in, tokens, open
}

// readAll reads want put events of keys prefix+0000.. in order from events.
func readAll(t *testing.T, events <-chan dister.WatchEvent, prefix string, want int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for got := 0; got < want; {
		select {
		case ev := <-events:
			if ev.Err != nil {
				t.Fatalf("the watch ended after %d of %d events: %v", got, want, ev.Err)
			}
			if ev.Type != dister.EventPut {
				continue
			}
			if k := fmt.Sprintf("%s%04d", prefix, got); ev.Entry.Key != k {
				t.Fatalf("event %d is %q, want %q", got, ev.Entry.Key, k)
			}
			got++
		case <-deadline:
			t.Fatalf("%d of %d events in 30s", got, want)
		}
	}
}

// TestWatchCatchesUpOverSeveralAdvances: a replica that catches up in
// several advances of fewer than 256 revisions each (a server that just
// restarted, while writes go on) gets ahead of a watcher that reads at its
// own pace. The watcher leaves the live stream and reads on from the
// history, as etcd's unsynced watchers do: every event, in order, and no
// ErrWatchOverflow (which ended it before, after the second advance).
func TestWatchCatchesUpOverSeveralAdvances(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	kv := n.KV()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := kv.Watch(wctx, "u/")
	if err := kv.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := <-events; ev.Err != nil || ev.Type != dister.EventProgress {
		t.Fatalf("first event %+v", ev)
	}
	entered, admit, open := gateHubs(t, n)
	const advances, each = 3, 200 // each advance alone stays under 256
	for a := range advances {
		for i := range each {
			if _, err := kv.Put(ctx, fmt.Sprintf("u/%04d", a*each+i), nil); err != nil {
				t.Fatal(err)
			}
		}
		select { // the hub waits before reading these
		case <-entered:
		case <-ctx.Done():
			t.Fatal("the hub never woke up")
		}
		admit <- struct{}{}
	}
	open()
	readAll(t, events, "u/", advances*each)
}

// TestSlowWatcherCatchesUpFromHistory: a watcher that does not read while
// 2,000 revisions commit leaves the live stream (writes and a fast watcher
// go on, unslowed) and, once it reads, gets every event in order from the
// history.
func TestSlowWatcherCatchesUpFromHistory(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	kv := c.Node(1).KV()
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	slow := kv.Watch(sctx, "s/")
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fast := kv.Watch(fctx, "s/")
	fastDone := make(chan error, 1)
	go func() {
		n := 0
		for ev := range fast {
			if ev.Err != nil {
				fastDone <- ev.Err
				return
			}
			if n++; n == 2000 {
				fastDone <- nil
				return
			}
		}
	}()
	for i := range 2000 {
		if _, err := kv.Put(ctx, fmt.Sprintf("s/%04d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-fastDone:
		if err != nil {
			t.Fatalf("fast watcher: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("fast watcher did not get every event")
	}
	readAll(t, slow, "s/", 2000)
}

// TestSlowWatcherPastHistoryCompacted: a watcher that fell behind and whose
// revisions left the history meanwhile ends with ErrCompacted and the
// revision to resume from, not with a gap.
func TestSlowWatcherPastHistoryCompacted(t *testing.T) {
	c := testcluster.New(t, 1, func(o *dister.Options) { o.EventHistory = 100 })
	ctx := ctxT(t)
	kv := c.Node(1).KV()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	slow := kv.Watch(wctx, "p/")
	if err := kv.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := <-slow; ev.Err != nil || ev.Type != dister.EventProgress {
		t.Fatalf("first event %+v", ev)
	}
	for i := range 2100 { // past a trim point (every 1024 revisions)
		if _, err := kv.Put(ctx, fmt.Sprintf("p/%04d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	var last int64
	for ev := range slow {
		if ev.Err != nil {
			if !errors.Is(ev.Err, dister.ErrCompacted) || ev.CompactRevision <= last+1 {
				t.Fatalf("after revision %d: %v (compact revision %d), want ErrCompacted above %d", last, ev.Err, ev.CompactRevision, last+1)
			}
			break
		}
		if ev.Type == dister.EventPut {
			if ev.Revision != last+1 && last != 0 {
				t.Fatalf("gap: revision %d after %d", ev.Revision, last)
			}
			last = ev.Revision
		}
	}
	if last == 0 {
		t.Fatal("no event before the end")
	}
}

// TestProgressAskedDuringCatchUp: a progress note asked for while a
// watcher reads history (it started far back) comes once it has caught
// up, at a revision no lower than the one applied when asked; before, the
// hub asked only the watchers on its live stream and the note waited for
// the 15 s tick.
func TestProgressAskedDuringCatchUp(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	kv := c.Node(1).KV()
	var asked int64
	for i := range 1500 {
		rev, err := kv.Put(ctx, fmt.Sprintf("q/%04d", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		asked = rev
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := kv.Watch(wctx, "q/", dister.FromRevision(1))
	waitUntil(t, "the watcher's buffer full (it reads history)", func() bool { return len(events) == cap(events) })
	if err := kv.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	got := 0
	for {
		select {
		case ev := <-events:
			if ev.Err != nil {
				t.Fatalf("the watch ended after %d events: %v", got, ev.Err)
			}
			if ev.Type == dister.EventProgress {
				if got < 1500 || ev.Revision < asked {
					t.Fatalf("progress note at %d after %d of 1500 events, asked at %d", ev.Revision, got, asked)
				}
				return
			}
			got++
		case <-deadline:
			t.Fatalf("no progress note within 5s of asking (%d of 1500 events read)", got)
		}
	}
}
