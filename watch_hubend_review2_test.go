package dister_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestReview2WatchesStartingAsGroupDeleted: watches that start while their
// group is deleted (their hub ends, or has just ended) each end with one
// final event, ErrGroupNotFound (or, if the group was gone before the
// start, the start's own error), and close; none keeps waiting on a hub
// that nothing will end.
func TestReview2WatchesStartingAsGroupDeleted(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	for round := range 4 {
		name := fmt.Sprintf("hubend%d", round)
		if err := n.CreateGroup(ctx, name); err != nil {
			t.Fatal(err)
		}
		kv := n.Group(name).KV()
		if _, err := kv.Put(ctx, "k", nil); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithCancel(ctx)
		var mu sync.Mutex
		var chans []<-chan dister.WatchEvent
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					var opts []dister.WatchOption
					if (g+i)%2 == 0 {
						opts = append(opts, dister.FromRevision(1)) // reads history first
					}
					ch := kv.Watch(wctx, "", opts...)
					mu.Lock()
					chans = append(chans, ch)
					mu.Unlock()
					time.Sleep(200 * time.Microsecond)
				}
			}()
		}
		time.Sleep(20 * time.Millisecond)
		if err := n.DeleteGroup(ctx, name); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		close(stop)
		wg.Wait()
		var (
			rest    sync.WaitGroup
			bad     []string
			badMu   sync.Mutex
			counted = map[string]int{}
		)
		for _, ch := range chans {
			rest.Add(1)
			go func() {
				defer rest.Done()
				finals, notes, puts := 0, 0, 0
				var last dister.WatchEvent
				deadline := time.After(8 * time.Second)
				for {
					select {
					case ev, open := <-ch:
						if !open {
							badMu.Lock()
							defer badMu.Unlock()
							switch {
							case finals != 1:
								bad = append(bad, fmt.Sprintf("%d final events", finals))
							case !errors.Is(last.Err, dister.ErrGroupNotFound):
								bad = append(bad, fmt.Sprintf("ended with %v", last.Err))
							}
							counted[fmt.Sprintf("%d puts", puts)]++
							_ = notes
							return
						}
						if ev.Err != nil {
							finals++
							last = ev
						} else if ev.Type == dister.EventProgress {
							notes++
						} else {
							puts++
						}
					case <-deadline:
						badMu.Lock()
						defer badMu.Unlock()
						bad = append(bad, fmt.Sprintf("no end in 8s after the group's deletion (%d puts, %d notes, %d finals)", puts, notes, finals))
						return
					}
				}
			}()
		}
		rest.Wait()
		cancel()
		if len(bad) > 0 {
			t.Fatalf("round %d: %d of %d watches wrong, e.g. %q (all: %v)", round, len(bad), len(chans), bad[0], bad)
		}
		t.Logf("round %d: %d watches ended with ErrGroupNotFound (%v)", round, len(chans), counted)
	}
}

// TestReview2CancelRacesCloseOnLetGoWatchers: let-go watchers (unread,
// then stopped by w.stop from three sides: their ctx's AfterFunc, the
// Engine's, and the hub's end) whose ctxs are cancelled while the Node
// closes: Close returns, and each channel ends with at most one final
// event (the ctx error or ErrClosed; exactly one, ErrClosed, for those
// not cancelled), after its events in order.
func TestReview2CancelRacesCloseOnLetGoWatchers(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	kv := n.KV()
	const watches = 8
	var chans []<-chan dister.WatchEvent
	var cancels []context.CancelFunc
	for range watches {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		chans = append(chans, kv.Watch(wctx, "c/", dister.FromRevision(1)))
		cancels = append(cancels, cancel)
	}
	r2Puts(t, ctx, kv, "c/", 0, 400) // 16 + 256 and more: every watcher let go
	var wg sync.WaitGroup
	for i := range watches {
		if i%2 == 0 {
			wg.Add(1)
			go func() { defer wg.Done(); cancels[i]() }()
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	wg.Wait()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		for _, cancel := range cancels {
			cancel()
		}
		<-closed
		t.Fatal("Close did not return in 10s")
	}
	for i, ch := range chans {
		finals, puts := 0, 0
		var last dister.WatchEvent
		var rev int64
		deadline := time.After(5 * time.Second)
	read:
		for {
			select {
			case ev, open := <-ch:
				if !open {
					break read
				}
				if ev.Err != nil {
					finals++
					last = ev
					continue
				}
				if finals > 0 {
					t.Fatalf("watch %d: event %+v after the final one", i, ev)
				}
				if ev.Type != dister.EventProgress {
					if ev.Revision <= rev {
						t.Fatalf("watch %d: revision %d after %d", i, ev.Revision, rev)
					}
					rev = ev.Revision
					puts++
				}
			case <-deadline:
				t.Fatalf("watch %d: channel not closed 5s after Close (%d puts, %d finals)", i, puts, finals)
			}
		}
		if i%2 == 0 && finals == 0 {
			// Cancelled with its channel full: endWatch gives the final
			// event up with the ctx (it predates the let-go change).
			continue
		}
		if finals != 1 || !(errors.Is(last.Err, context.Canceled) || errors.Is(last.Err, dister.ErrClosed)) {
			t.Fatalf("watch %d: %d final events, last %v", i, finals, last.Err)
		}
		if i%2 == 1 && !errors.Is(last.Err, dister.ErrClosed) {
			t.Fatalf("watch %d (ctx not cancelled): ended with %v, want ErrClosed", i, last.Err)
		}
	}
}
