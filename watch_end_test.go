package dister_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// How watches end: at Close, when history is trimmed under them, when their
// group goes away, and what they leave behind.

// lastEvent reads events until the channel closes and returns the last
// one; the test fails if that takes longer than d.
func lastEvent(t *testing.T, events <-chan dister.WatchEvent, d time.Duration) dister.WatchEvent {
	t.Helper()
	last, err := drainWatch(events, d)
	if err != nil {
		t.Fatal(err)
	}
	return last
}

// drainWatch is lastEvent for any goroutine.
func drainWatch(events <-chan dister.WatchEvent, d time.Duration) (dister.WatchEvent, error) {
	deadline := time.After(d)
	var last dister.WatchEvent
	for {
		select {
		case ev, open := <-events:
			if !open {
				return last, nil
			}
			last = ev
		case <-deadline:
			return last, fmt.Errorf("watch channel not closed after %v; last event %+v", d, last)
		}
	}
}

// goroutineDump is every goroutine's stack, for a test that found one stuck.
func goroutineDump() string {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	return b.String()
}

// TestCloseEndsUnreadWatchFromThePast: a watch that starts in the past and
// is never read (so its catch-up is blocked on a full channel) does not
// hold up Close, and ends with ErrClosed.
func TestCloseEndsUnreadWatchFromThePast(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	for i := range 100 { // more than the channel holds
		if _, err := n.KV().Put(ctx, fmt.Sprintf("u/%03d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	// Never cancelled before Close returns: Close alone must end the watch.
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := n.KV().Watch(wctx, "", dister.FromRevision(1))
	for len(events) < cap(events) { // the catch-up now waits for room
		select {
		case <-ctx.Done():
			t.Fatalf("watch channel holds %d events of %d", len(events), cap(events))
		case <-time.After(time.Millisecond):
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("Close did not return in 60s behind an unread watch:\n%s", goroutineDump())
	}
	last := lastEvent(t, events, 10*time.Second)
	if !errors.Is(last.Err, dister.ErrClosed) {
		t.Fatalf("unread watch ended with %+v, want ErrClosed", last)
	}
}

// holdHubs holds n's watch fan-outs before they read anything the replica
// applied, until unblock; reached closes when one first waits there.
func holdHubs(n *dister.Node) (reached <-chan struct{}, unblock func()) {
	r, release := make(chan struct{}), make(chan struct{})
	var once, releaseOnce sync.Once
	dister.SetHubHook(n, func(uint64) {
		once.Do(func() { close(r) })
		<-release
	})
	return r, func() { releaseOnce.Do(func() { close(release) }) }
}

// TestHubBehindHistoryReportsCompactRevision: when a server's watch fan-out
// falls behind the retained history, its watches end with ErrCompacted and
// the true compact revision, from which a new watch resumes; and the next
// watch works again.
func TestHubBehindHistoryReportsCompactRevision(t *testing.T) {
	c := testcluster.New(t, 1, func(o *dister.Options) { o.EventHistory = 100 })
	ctx := ctxT(t)
	n := c.Node(1)
	kv := n.KV()
	reached, unblock := holdHubs(n)
	defer unblock()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := kv.Watch(wctx, "")
	if _, err := kv.Put(ctx, "h/first", nil); err != nil {
		t.Fatal(err)
	}
	select { // the hub is now held before it reads that write
	case <-reached:
	case <-ctx.Done():
		t.Fatal("the hub never woke up")
	}
	for i := range 2100 { // past a trim point (every 1024 entries)
		if _, err := kv.Put(ctx, "h/k", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	unblock()
	last := lastEvent(t, events, 20*time.Second)
	if !errors.Is(last.Err, dister.ErrCompacted) || last.CompactRevision <= 0 {
		t.Fatalf("watch behind the history ended with %+v (CompactRevision %d), want ErrCompacted with the compact revision",
			last.Err, last.CompactRevision)
	}
	// Nothing was written since, so the history starts where it said.
	again := <-kv.Watch(ctx, "", dister.FromRevision(1))
	if !errors.Is(again.Err, dister.ErrCompacted) || again.CompactRevision != last.CompactRevision {
		t.Fatalf("watch from 1 ended with %+v (CompactRevision %d), the ended watch said %d",
			again.Err, again.CompactRevision, last.CompactRevision)
	}
	resumed := kv.Watch(wctx, "", dister.FromRevision(last.CompactRevision))
	if ev := <-resumed; ev.Err != nil || ev.Type != dister.EventPut || ev.Revision != last.CompactRevision {
		t.Fatalf("watch from the compact revision %d: first event %+v", last.CompactRevision, ev)
	}
	// A new fan-out serves watches from now on.
	fresh := kv.Watch(wctx, "h/")
	rev, err := kv.Put(ctx, "h/after", nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-fresh:
		if ev.Err != nil || ev.Entry.Key != "h/after" || ev.Revision != rev {
			t.Fatalf("watch after the fan-out ended: %+v", ev)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("watch after the fan-out ended got nothing")
	}
}

// hubLoops counts the goroutines running a watch fan-out in this process.
func hubLoops() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "internal/cluster.(*hub).loop(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// TestDeletedGroupsLeaveNoHub: the watch fan-out of a deleted group stops
// with it, so creating and deleting watched groups leaves no goroutine.
func TestDeletedGroupsLeaveNoHub(t *testing.T) {
	// Not parallel: it counts the process's fan-out goroutines, and the
	// parallel tests start and stop their own (CI once saw the count not
	// grow for this test's first watch because another test's hubs ended).
	c := testcluster.New(t, 1)
	// 20 groups created and deleted in turn: 7 s alone, far more beside
	// the other parallel tests under -race.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n := c.Node(1)
	before := hubLoops()
	for i := range 20 {
		name := fmt.Sprintf("churn%d", i)
		if err := n.CreateGroup(ctx, name); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		events := n.Group(name).KV().Watch(wctx, "")
		if _, err := n.Group(name).KV().Put(ctx, "k", nil); err != nil {
			t.Fatal(err)
		}
		ev := <-events
		for ev.Type == dister.EventProgress { // one may come any time
			ev = <-events
		}
		if ev.Err != nil || ev.Type != dister.EventPut {
			t.Fatalf("group %s: first event %+v", name, ev)
		}
		if i == 0 && hubLoops() == 0 {
			t.Fatal("no fan-out goroutine found while a watch runs: hubLoops looks for the wrong function")
		}
		if err := n.DeleteGroup(ctx, name); err != nil {
			t.Fatal(err)
		}
		if last := lastEvent(t, events, 20*time.Second); !errors.Is(last.Err, dister.ErrGroupNotFound) {
			t.Fatalf("group %s deleted: watch ended with %+v", name, last)
		}
		cancel()
	}
	deadline := time.Now().Add(10 * time.Second)
	for hubLoops() > before {
		if time.Now().After(deadline) {
			t.Fatalf("%d watch fan-outs running after 20 watched groups were deleted, %d before",
				hubLoops(), before)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWatchDeliversWhatASnapshotBrought: a follower that catches up by
// installing a snapshot delivers, to a watch opened before the snapshot
// came, every event the snapshot brought, with no later write to wake it.
func TestWatchDeliversWhatASnapshotBrought(t *testing.T) {
	t.Parallel() // long, mostly waiting on timers: runs beside the others
	c := testcluster.New(t, 3, func(o *dister.Options) {
		o.SnapshotEntries = 20
		o.CompactionOverhead = 5
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fs, leader := c.Followers()
	f, kv := fs[0], c.Node(leader).KV()
	const writes = 300
	// The case that matters is a watch whose fan-out started before the
	// snapshot was installed; when the snapshot wins the race, try again.
	for attempt := 1; ; attempt++ {
		c.Stop(f)
		prefix := fmt.Sprintf("snap%d/", attempt)
		var first, last int64
		for i := range writes { // the leader's log is compacted past f meanwhile
			rev, err := kv.Put(ctx, fmt.Sprintf("%s%03d", prefix, i), nil)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = rev
			}
			last = rev
		}
		n := c.Restart(f)
		wctx, wcancel := context.WithCancel(ctx)
		events := n.KV().Watch(wctx, prefix, dister.FromRevision(first))
		applied, err := n.KV().Revision(ctx, dister.Stale())
		if err != nil {
			wcancel()
			t.Fatal(err)
		}
		before := applied < last // the watch's fan-out started before the snapshot
		t.Logf("attempt %d: follower at revision %d of %d when the watch started", attempt, applied, last)
		deadline := time.After(20 * time.Second)
		for i := 0; i < writes; {
			select {
			case ev := <-events:
				if ev.Type == dister.EventProgress {
					continue
				}
				if ev.Err != nil || ev.Type != dister.EventPut || ev.Entry.Key != fmt.Sprintf("%s%03d", prefix, i) {
					wcancel()
					t.Fatalf("event %d: %+v", i, ev)
				}
				i++
			case <-deadline:
				wcancel()
				now, _ := n.KV().Revision(ctx, dister.Stale())
				t.Fatalf("the watch on the follower got %d of %d events in 20s; the follower is at revision %d of %d (no write since)",
					i, writes, now, last)
			}
		}
		wcancel()
		lastEvent(t, events, 10*time.Second)
		if before || attempt == 5 {
			if !before {
				t.Log("the snapshot always arrived before the watch started")
			}
			return
		}
	}
}

// TestWatchesStartingDuringClose: watches started by many goroutines while
// Close runs either run and end, or fail to start, with ErrClosed; Close
// returns and no goroutine is left (run it with -race: a watch goroutine
// counted while Close waits for them is a data race there).
func TestWatchesStartingDuringClose(t *testing.T) {
	for round := range 5 {
		c := testcluster.New(t, 1)
		n := c.Node(1)
		ctx, cancel := context.WithCancel(context.Background())
		stop := make(chan struct{})
		started := make(chan struct{}, 1)
		errc := make(chan error, 16)
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						errc <- nil
						return
					default:
					}
					wctx, wcancel := context.WithCancel(ctx)
					events := n.KV().Watch(wctx, "")
					if g%2 == 0 { // half end at once, half run until Close
						wcancel()
					}
					last, err := drainWatch(events, 20*time.Second)
					wcancel()
					if err != nil {
						errc <- fmt.Errorf("round %d: %w", round, err)
						return
					}
					if last.Err == nil || !(errors.Is(last.Err, context.Canceled) || errors.Is(last.Err, dister.ErrClosed)) {
						errc <- fmt.Errorf("round %d: watch ended with %+v", round, last)
						return
					}
					select {
					case started <- struct{}{}:
					default:
					}
				}
			}()
		}
		<-started
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			c.Stop(1)
		}()
		select {
		case <-closed:
		case <-time.After(60 * time.Second):
			t.Fatalf("Close did not return in 60s:\n%s", goroutineDump())
		}
		close(stop)
		wg.Wait()
		cancel()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestWatchTakesABurstLargerThanItsQueue: when the fan-out finds more
// revisions at once than a watcher may have queued (it was held up here; a
// snapshot install does the same), a watcher that reads is not cancelled:
// it gets every event, then follows the fan-out again; one that starts at a
// later revision still starts there.
func TestWatchTakesABurstLargerThanItsQueue(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	kv := n.KV()
	start, err := kv.Put(ctx, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	reached, unblock := holdHubs(n)
	defer unblock()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const burst, skip = 1000, 500
	events := kv.Watch(wctx, "b/")
	later := kv.Watch(wctx, "b/", dister.FromRevision(start+skip))
	next := func(events <-chan dister.WatchEvent) dister.WatchEvent {
		t.Helper()
		for {
			select {
			case ev := <-events:
				if ev.Type == dister.EventProgress {
					continue
				}
				if ev.Err != nil || ev.Type != dister.EventPut {
					t.Fatalf("event %+v", ev)
				}
				return ev
			case <-time.After(20 * time.Second):
				t.Fatal("no event in 20s")
			}
		}
	}
	revs := make([]int64, burst+1)
	for i := range burst {
		if revs[i], err = kv.Put(ctx, fmt.Sprintf("b/%04d", i), nil); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			select { // the fan-out is now held before it reads that write
			case <-reached:
			case <-ctx.Done():
				t.Fatal("the fan-out never woke up")
			}
		}
	}
	unblock()
	for i := range burst {
		if ev := next(events); ev.Entry.Key != fmt.Sprintf("b/%04d", i) || ev.Revision != revs[i] {
			t.Fatalf("event %d: %+v, want revision %d", i, ev, revs[i])
		}
	}
	first := 0
	for revs[first] < start+skip {
		first++
	}
	if ev := next(later); ev.Revision != revs[first] {
		t.Fatalf("watch from revision %d: first event %+v, want revision %d", start+skip, ev, revs[first])
	}
	if revs[burst], err = kv.Put(ctx, fmt.Sprintf("b/%04d", burst), nil); err != nil {
		t.Fatal(err)
	}
	if ev := next(events); ev.Revision != revs[burst] {
		t.Fatalf("event after the burst: %+v, want revision %d", ev, revs[burst])
	}
}

// TestRequestProgressAfterWriteCarriesItsRevision: a progress note asked
// for after a write was applied reports at least that write's revision,
// also when the server's watch fan-out had not handed the write on yet.
// Before, the note carried where the fan-out stood (older), so the
// Balancer, which counts a note only at a revision it confirmed with the
// leader, fell back to an older confirmation under steady writes and
// views went stale on a healthy cluster at a short BalancerStaleAfter.
func TestRequestProgressAfterWriteCarriesItsRevision(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	kv := n.KV()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := kv.Watch(wctx, "p/")
	if _, err := kv.Put(ctx, "p/first", nil); err != nil {
		t.Fatal(err)
	}
	if ev := <-events; ev.Type != dister.EventPut {
		t.Fatalf("first event: %+v", ev)
	}
	reached, unblock := holdHubs(n)
	defer unblock()
	rev, err := kv.Put(ctx, "p/second", nil)
	if err != nil {
		t.Fatal(err)
	}
	<-reached // the fan-out is about to read the write, and waits
	if err := kv.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	unblock()
	for ev := range events {
		if ev.Err != nil {
			t.Fatal(ev.Err)
		}
		if ev.Type == dister.EventProgress {
			if ev.Revision < rev {
				t.Fatalf("progress note at %d, asked for after the write at %d", ev.Revision, rev)
			}
			return
		}
	}
}
