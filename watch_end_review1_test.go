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

// r1Fill writes n puts of prefix+%04d (from i0) through kv.
func r1Fill(t *testing.T, ctx context.Context, kv *dister.KV, prefix string, i0, n int) int64 {
	t.Helper()
	var rev int64
	for i := i0; i < i0+n; i++ {
		var err error
		if rev, err = kv.Put(ctx, fmt.Sprintf("%s%04d", prefix, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	return rev
}

// r1ReadPuts reads put events of prefix+0000.. in order until the watch
// ends, and returns how many came and the final event.
func r1ReadPuts(t *testing.T, events <-chan dister.WatchEvent, prefix string, d time.Duration) (int, dister.WatchEvent) {
	t.Helper()
	deadline := time.After(d)
	got := 0
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("channel closed without a final event after %d events", got)
			}
			if ev.Err != nil {
				for range events { // closes after the final event
				}
				return got, ev
			}
			if ev.Type != dister.EventPut {
				continue
			}
			if k := fmt.Sprintf("%s%04d", prefix, got); ev.Entry.Key != k {
				t.Fatalf("event %d is %q, want %q", got, ev.Entry.Key, k)
			}
			got++
		case <-deadline:
			t.Fatalf("no final event in %v (%d events)", d, got)
		}
	}
}

// r1LetGoInDeletedGroup starts a watch of "d/" in a new group "g" on a one-server
// cluster and writes 400 keys under it (the unread watch is let go after
// 16+256), then deletes the group.
func r1LetGoInDeletedGroup(t *testing.T) (n *dister.Node, events <-chan dister.WatchEvent, cancel context.CancelFunc) {
	t.Helper()
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n = c.Node(1)
	if err := n.CreateGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	kv := n.Group("g").KV()
	wctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	events = kv.Watch(wctx, "d/")
	r1Fill(t, ctx, kv, "d/", 0, 400)
	if err := n.DeleteGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	return n, events, cancel
}

// TestReview1DeleteGroupEndsLetGoWatcher: a watcher the hub let go (its
// consumer stalled) ends with ErrGroupNotFound once its group is deleted
// and it reads on: in order, no gap, one final event.
func TestReview1DeleteGroupEndsLetGoWatcher(t *testing.T) {
	_, events, _ := r1LetGoInDeletedGroup(t)
	got, last := r1ReadPuts(t, events, "d/", 20*time.Second)
	if !errors.Is(last.Err, dister.ErrGroupNotFound) {
		t.Fatalf("after %d events the watch ended with %v, want ErrGroupNotFound", got, last.Err)
	}
	t.Logf("%d events, then %v", got, last.Err)
}

// TestReview1DeleteGroupThenCloseWithUnreadLetGoWatcher: the hub's end
// (group deleted) must reach a watcher it let go whose consumer does not
// read, as it reaches the registered ones: else that watch's goroutine
// stays, and the Node's Close waits for it.
func TestReview1DeleteGroupThenCloseWithUnreadLetGoWatcher(t *testing.T) {
	n, events, cancel := r1LetGoInDeletedGroup(t)
	if !closeWithin(t, n, 10*time.Second, cancel) {
		t.Fatal("Node.Close did not return in 10s: the deleted group's unread, let-go watch still held a goroutine (returned once the watch's ctx was cancelled)")
	}
	_, last := r1ReadPuts(t, events, "d/", 10*time.Second)
	if last.Err == nil {
		t.Fatal("no final error")
	}
}

// TestReview1CloseMidCatchUp: Close while a let-go watcher reads history
// slowly: Close returns at once, and the watch ends with ErrClosed after
// events in order.
func TestReview1CloseMidCatchUp(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	kv := n.KV()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := kv.Watch(wctx, "m/")
	r1Fill(t, ctx, kv, "m/", 0, 2000)
	// Read slowly: the watcher is let go and catches up from history.
	for i := range 400 {
		ev := <-events
		if ev.Err != nil || ev.Entry.Key != fmt.Sprintf("m/%04d", i) {
			t.Fatalf("event %d: %+v", i, ev)
		}
		if i%40 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	if !closeWithin(t, n, 10*time.Second, cancel) {
		t.Fatal("Close did not return in 10s with a watcher mid-catch-up")
	}
	got, last := 400, dister.WatchEvent{}
	for ev := range events {
		if ev.Err != nil {
			last = ev
			continue
		}
		if k := fmt.Sprintf("m/%04d", got); ev.Entry.Key != k {
			t.Fatalf("event %d is %q, want %q", got, ev.Entry.Key, k)
		}
		got++
	}
	if !errors.Is(last.Err, dister.ErrClosed) {
		t.Fatalf("watch ended with %v after %d events, want ErrClosed", last.Err, got)
	}
}

// TestReview1HubCompactedWhileLetGo: the hub ends with ErrCompacted (it
// fell behind the history) while a watcher it let go waits for its
// consumer. Once read, the watch delivers what it had, in order, and ends
// with ErrCompacted at a compact revision above what it delivered.
func TestReview1HubCompactedWhileLetGo(t *testing.T) {
	c := testcluster.New(t, 1, func(o *dister.Options) { o.EventHistory = 100 })
	ctx := ctxT(t)
	n := c.Node(1)
	kv := n.KV()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := kv.Watch(wctx, "h/")
	first := r1Fill(t, ctx, kv, "h/", 0, 400) - 399
	reached, unblock := holdHubs(n)
	defer unblock()
	r1Fill(t, ctx, kv, "h/", 400, 1)
	<-reached
	r1Fill(t, ctx, kv, "h/", 401, 1700) // past a trim point
	unblock()
	got, last := r1ReadPuts(t, events, "h/", 20*time.Second)
	if !errors.Is(last.Err, dister.ErrCompacted) || last.CompactRevision <= first+int64(got) {
		t.Fatalf("after %d events (up to revision %d): %v, compact revision %d", got, first+int64(got)-1, last.Err, last.CompactRevision)
	}
}

// TestReview1BurstWithPendingAndProgress: a burst larger than the queue
// (the hub held) lets every watcher go, also one with revisions and
// progress notes pending, one from the future, and one with nothing
// pending; each then gets every event once, in order.
func TestReview1BurstWithPendingAndProgress(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	kv := n.KV()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start, err := kv.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pending := kv.Watch(wctx, "b/")
	idle := kv.Watch(wctx, "b/")
	future := kv.Watch(wctx, "b/", dister.FromRevision(start+150))
	// idle reads all along; pending not yet.
	idleGot := make(chan int, 1)
	go func() {
		got, _ := readPutsN(idle, "b/", 0, 1000)
		idleGot <- got
	}()
	for i := range 100 {
		r1Fill(t, ctx, kv, "b/", i, 1)
		if i%10 == 0 {
			if err := kv.RequestProgress(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	reached, unblock := holdHubs(n)
	defer unblock()
	r1Fill(t, ctx, kv, "b/", 100, 1)
	<-reached
	r1Fill(t, ctx, kv, "b/", 101, 899)
	unblock()
	if got := <-idleGot; got != 1000 {
		t.Fatalf("idle watcher: %d events of 1000", got)
	}
	if got, err := readPutsN(pending, "b/", 0, 1000); err != nil {
		t.Fatalf("pending watcher: %v after %d events", err, got)
	}
	if got, err := readPutsN(future, "b/", 149, 1000); err != nil {
		t.Fatalf("future watcher: %v after %d events", err, got)
	}
}

// readPutsN reads put events prefix+%04d from i0 up to want-1, in order;
// progress notes must never go back.
func readPutsN(events <-chan dister.WatchEvent, prefix string, i0, want int) (int, error) {
	deadline := time.After(20 * time.Second)
	var rev int64
	for got := i0; got < want; {
		select {
		case ev := <-events:
			if ev.Err != nil {
				return got, ev.Err
			}
			if ev.Revision < rev {
				return got, fmt.Errorf("revision %d (%v) after %d", ev.Revision, ev.Type, rev)
			}
			rev = ev.Revision
			if ev.Type != dister.EventPut {
				continue
			}
			if k := fmt.Sprintf("%s%04d", prefix, got); ev.Entry.Key != k {
				return got, fmt.Errorf("event %q, want %q", ev.Entry.Key, k)
			}
			got++
		case <-deadline:
			return got, errors.New("timeout")
		}
	}
	return want, nil
}
