package dister_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// written is what the writers of a test committed: per revision, the keys
// it touched, in op order.
type written struct {
	mu   sync.Mutex
	revs map[int64][]string
}

func (w *written) add(rev int64, keys ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.revs == nil {
		w.revs = map[int64][]string{}
	}
	w.revs[rev] = append(w.revs[rev], keys...)
}

// expect lists "rev key" of the writes under prefix within [from, to].
func (w *written) expect(prefix string, from, to int64) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	var revs []int64
	for r := range w.revs {
		if r >= from && r <= to {
			revs = append(revs, r)
		}
	}
	sort.Slice(revs, func(i, j int) bool { return revs[i] < revs[j] })
	for _, r := range revs {
		for _, k := range w.revs[r] {
			if strings.HasPrefix(k, prefix) {
				out = append(out, fmt.Sprintf("%d %s", r, k))
			}
		}
	}
	return out
}

// streamResult is what one watcher received.
type streamResult struct {
	got          []string // "rev key" of the events of complete revisions
	first        int64    // first revision with an event
	lastComplete int64    // last revision whose LastInRevision was seen
	err          error    // the final event's Err
	bad          error    // an order or framing violation
}

// consume reads a watch to its end, checking order and framing, sleeping
// slow per event (0 = none).
func consume(events <-chan dister.WatchEvent, slow time.Duration, stop func(streamResult) bool) streamResult {
	var r streamResult
	var cur int64 // revision of the open (incomplete) revision
	var pending []string
	var last int64 // highest revision seen (events or progress)
	for ev := range events {
		if ev.Err != nil {
			r.err = ev.Err
			// drain: the channel must close right after
			for range events {
				if r.bad == nil {
					r.bad = errors.New("event after the final one")
				}
			}
			return r
		}
		if slow > 0 {
			time.Sleep(slow)
		}
		if r.bad != nil {
			continue
		}
		switch ev.Type {
		case dister.EventProgress:
			if cur != 0 {
				r.bad = fmt.Errorf("progress %d inside revision %d", ev.Revision, cur)
			} else if ev.Revision < last {
				r.bad = fmt.Errorf("progress %d after revision %d", ev.Revision, last)
			}
			last = max(last, ev.Revision)
			continue
		case dister.EventPut, dister.EventDelete:
		default:
			r.bad = fmt.Errorf("event type %v", ev.Type)
			continue
		}
		if cur == 0 {
			if ev.Revision <= last {
				r.bad = fmt.Errorf("revision %d (%s) after %d", ev.Revision, ev.Entry.Key, last)
				continue
			}
			cur = ev.Revision
		} else if ev.Revision != cur {
			r.bad = fmt.Errorf("revision %d (%s) inside revision %d not marked complete", ev.Revision, ev.Entry.Key, cur)
			continue
		}
		if r.first == 0 {
			r.first = ev.Revision
		}
		pending = append(pending, fmt.Sprintf("%d %s", ev.Revision, ev.Entry.Key))
		last = ev.Revision
		if ev.LastInRevision {
			r.got = append(r.got, pending...)
			pending = pending[:0]
			r.lastComplete = cur
			cur = 0
			if stop != nil && stop(r) {
				return r
			}
		}
	}
	r.bad = errors.Join(r.bad, errors.New("channel closed without a final event"))
	return r
}

// diff compares got with want, both ordered.
func diff(got, want []string) error {
	gm := map[string]int{}
	for _, g := range got {
		gm[g]++
	}
	for _, w := range want {
		if gm[w] == 0 {
			return fmt.Errorf("missing %q (got %d events, want %d)", w, len(got), len(want))
		}
		gm[w]--
	}
	for k, n := range gm {
		if n > 0 {
			return fmt.Errorf("unexpected or duplicate %q (got %d events, want %d)", k, len(got), len(want))
		}
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Errorf("order: event %d is %q, want %q", i, got[i], want[i])
		}
	}
	return nil
}

// writeLoad runs puts and multi-key txns (several prefixes in one
// revision) through nodes until ctx ends or n revisions are written.
func writeLoad(ctx context.Context, t *testing.T, w *written, nodes []*dister.Node, writers, n int) {
	var wg sync.WaitGroup
	for wi := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kv := nodes[wi%len(nodes)].KV()
			for i := range n / writers {
				if ctx.Err() != nil {
					return
				}
				if i%3 == 0 {
					keys := []string{}
					var ops []dister.Op
					for j := range 2 + rand.IntN(25) {
						p := []string{"m/a/", "x/", "m/b/", "m"}[j%4]
						k := fmt.Sprintf("%s%d-%d-%d", p, wi, i, j)
						keys = append(keys, k)
						ops = append(ops, dister.Put(k, []byte("v")))
					}
					res, err := kv.Txn(ctx, dister.Txn{Then: ops})
					if err != nil {
						if ctx.Err() == nil {
							t.Errorf("txn: %v", err)
						}
						return
					}
					w.add(res.Revision, keys...)
					continue
				}
				k := fmt.Sprintf("m/a/%d-%d", wi, i)
				rev, err := kv.Put(ctx, k, nil)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("put: %v", err)
					}
					return
				}
				w.add(rev, k)
			}
		}()
	}
	wg.Wait()
}

// TestWatchFromOldRevisionWhileWriting: on a follower, watchers that
// start from an old revision (catching up from history while writes go
// on), from now, with an empty prefix, a short prefix of several txn keys,
// and a 4 KiB prefix, all see every event of their prefix exactly once, in
// order, with revisions framed by LastInRevision.
func TestWatchFromOldRevisionWhileWriting(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	fs, leader := c.Followers()
	f := c.Node(fs[0])
	var w written
	// Some history first.
	writeLoad(ctx, t, &w, []*dister.Node{c.Node(leader)}, 4, 400)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	long := "m/" + strings.Repeat("z", 4094)
	type watch struct {
		name   string
		prefix string
		from   int64
		slow   time.Duration
		ch     <-chan dister.WatchEvent
	}
	watches := []*watch{
		{name: "old m/", prefix: "m/", from: 1},
		{name: "old empty slowish", prefix: "", from: 5, slow: 50 * time.Microsecond},
		{name: "now m/a/", prefix: "m/a/"},
		{name: "now m", prefix: "m"},
		{name: "old x/", prefix: "x/", from: 200},
		{name: "4KiB", prefix: long},
	}
	for _, wt := range watches {
		wt.ch = f.KV().Watch(wctx, wt.prefix, dister.FromRevision(wt.from))
	}
	var endAt atomic.Int64
	results := make([]chan streamResult, len(watches))
	for i, wt := range watches {
		results[i] = make(chan streamResult, 1)
		go func() {
			results[i] <- consume(wt.ch, wt.slow, func(r streamResult) bool {
				e := endAt.Load()
				return e > 0 && r.lastComplete >= e
			})
		}()
	}
	writeLoad(ctx, t, &w, []*dister.Node{c.Node(leader), c.Node(fs[1]), f}, 8, 3000)
	// Mark the end with a put every watcher sees last.
	endRev, err := c.Node(leader).KV().Put(ctx, "m/a/zz-end", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.add(endRev, "m/a/zz-end")
	endAt.Store(endRev)
	// Nudge the streams that do not see the end key.
	_ = f.KV().RequestProgress(ctx)
	for i, wt := range watches {
		var r streamResult
		if wt.prefix == long || wt.prefix == "x/" {
			cancel()
		}
		select {
		case r = <-results[i]:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: not at the end revision in 30s", wt.name)
		}
		if r.bad != nil {
			t.Errorf("%s: %v", wt.name, r.bad)
			continue
		}
		if r.err != nil && !errors.Is(r.err, context.Canceled) {
			t.Errorf("%s: ended with %v before the end (last complete %d of %d)", wt.name, r.err, r.lastComplete, endRev)
		}
		from := wt.from
		if from == 0 {
			from = r.first // "now": from its first event on
			if from == 0 {
				from = endRev + 1
			}
		}
		if err := diff(r.got, w.expect(wt.prefix, from, r.lastComplete)); err != nil {
			t.Errorf("%s (from %d to %d): %v", wt.name, from, r.lastComplete, err)
		}
		if wt.prefix != long && r.lastComplete < endRev && strings.HasPrefix("m/a/zz-end", wt.prefix) {
			t.Errorf("%s: last complete revision %d, the end is at %d", wt.name, r.lastComplete, endRev)
		}
		t.Logf("%s: %d events, revisions %d..%d, end %v", wt.name, len(r.got), r.first, r.lastComplete, r.err)
	}
}

// TestWatchHubHeldThenBurst: the fan-out of a server is held while 600
// revisions commit (as when a snapshot is installed); watchers that had
// nothing queued are let go to read history and still see everything once
// and in order.
func TestWatchHubHeldThenBurst(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	var w written
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	first, err := n.KV().Put(ctx, "m/a/first", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.add(first, "m/a/first")
	var chans []<-chan dister.WatchEvent
	prefixes := []string{"", "m/", "m/a/", "x/", "m/b/"}
	for _, p := range prefixes {
		chans = append(chans, n.KV().Watch(wctx, p, dister.FromRevision(first)))
	}
	results := make([]chan streamResult, len(chans))
	for i := range chans {
		results[i] = make(chan streamResult, 1)
		go func() { results[i] <- consume(chans[i], 0, nil) }()
	}
	time.Sleep(300 * time.Millisecond) // joined
	reached, unblock := holdHubs(n)
	defer unblock()
	r1, _ := n.KV().Put(ctx, "m/a/second", nil)
	w.add(r1, "m/a/second")
	<-reached
	writeLoad(ctx, t, &w, []*dister.Node{n}, 8, 1200)
	unblock()
	dister.SetHubHook(n, nil)
	endRev, _ := n.KV().Put(ctx, "m/a/zz-end", nil)
	w.add(endRev, "m/a/zz-end")
	time.Sleep(2 * time.Second)
	cancel()
	for i, p := range prefixes {
		r := <-results[i]
		if r.bad != nil {
			t.Errorf("%q: %v", p, r.bad)
			continue
		}
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("%q: ended with %v before the end (last complete %d of %d)", p, r.err, r.lastComplete, endRev)
		}
		if err := diff(r.got, w.expect(p, first, r.lastComplete)); err != nil {
			t.Errorf("%q: %v", p, err)
		}
		t.Logf("%q: %d events up to %d, end %v", p, len(r.got), r.lastComplete, r.err)
	}
}

var _ = runtime.NumGoroutine
var _ = testcluster.New
