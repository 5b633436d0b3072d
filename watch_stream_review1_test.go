package dister_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// r1Event is what a watch event says, for comparison.
type r1Event struct {
	Type     dister.EventType
	Rev      int64
	Key      string
	Value    string
	Create   int64
	Mod      int64
	Version  int64
	Last     bool
	HasPrev  bool
	PrevVal  string
	PrevMod  int64
	PrevVers int64
}

func r1Of(ev dister.WatchEvent) r1Event {
	e := r1Event{Type: ev.Type, Rev: ev.Revision, Key: ev.Entry.Key, Value: string(ev.Entry.Value),
		Create: ev.Entry.CreateRevision, Mod: ev.Entry.ModRevision, Version: ev.Entry.Version, Last: ev.LastInRevision}
	if ev.PrevEntry != nil {
		e.HasPrev, e.PrevVal, e.PrevMod, e.PrevVers = true, string(ev.PrevEntry.Value), ev.PrevEntry.ModRevision, ev.PrevEntry.Version
	}
	return e
}

// r1Collected is what one watch delivered: its change events, and for each
// progress note the note's revision and how many changes came before it.
type r1Collected struct {
	events   []r1Event
	progress [][2]int64 // revision, len(events) when it came
	err      error
}

// r1Collect reads events until it saw a change or a progress note at or
// past until() (once until() is non-zero), pausing as pause says before
// each read. It fails on the watch's end.
func r1Collect(ctx context.Context, events <-chan dister.WatchEvent, until func() int64, pause func(n int)) *r1Collected {
	c := &r1Collected{}
	for n := 0; ; n++ {
		if pause != nil {
			pause(n)
		}
		var ev dister.WatchEvent
		select {
		case ev = <-events:
		case <-ctx.Done():
			c.err = fmt.Errorf("collect: %w", ctx.Err())
			return c
		}
		if ev.Err != nil {
			c.err = ev.Err
			return c
		}
		if ev.Type == dister.EventProgress {
			c.progress = append(c.progress, [2]int64{ev.Revision, int64(len(c.events))})
		} else {
			c.events = append(c.events, r1Of(ev))
		}
		if u := until(); u > 0 && ev.Revision >= u && (ev.Type == dister.EventProgress || ev.LastInRevision) {
			return c
		}
	}
}

// r1Check compares got with the reference want (every change of the
// prefix from want's start): the same changes, in order, none twice, none
// missing, and every progress note after exactly the changes at or below
// its revision.
func r1Check(t *testing.T, name string, got *r1Collected, want []r1Event, from int64) {
	t.Helper()
	var ref []r1Event
	for _, e := range want {
		if e.Rev >= from {
			ref = append(ref, e)
		}
	}
	if got.err != nil {
		t.Errorf("%s: ended with %v after %d events", name, got.err, len(got.events))
		return
	}
	for i := range max(len(got.events), len(ref)) {
		switch {
		case i >= len(got.events):
			t.Errorf("%s: %d events, want %d; first missing %+v", name, len(got.events), len(ref), ref[i])
			return
		case i >= len(ref):
			t.Errorf("%s: %d events, want %d; first extra %+v", name, len(got.events), len(ref), got.events[i])
			return
		case got.events[i] != ref[i]:
			t.Errorf("%s: event %d is %+v, want %+v (previous %+v)", name, i, got.events[i], ref[i], ref[max(i-1, 0)])
			return
		}
	}
	for _, p := range got.progress {
		n := int64(0)
		for _, e := range ref {
			if e.Rev <= p[0] {
				n++
			}
		}
		if n != p[1] {
			t.Errorf("%s: progress note at %d came after %d events, but %d events are at or below it", name, p[0], p[1], n)
			return
		}
	}
}

// r1Writes runs a mix of writes through kv for d: puts under prefix and
// outside it, txns of many keys in and out of it, deletes, prefix deletes.
// It returns the last revision written.
func r1Writes(t *testing.T, ctx context.Context, kv *dister.KV, prefix string, d time.Duration, pad int) int64 {
	padding := string(make([]byte, pad))
	t.Helper()
	var last atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; time.Now().Before(stop); i++ {
				var rev int64
				var err error
				switch x := rng.IntN(20); {
				case x < 10:
					rev, err = kv.Put(ctx, fmt.Sprintf("%sk%02d", prefix, rng.IntN(40)), []byte(fmt.Sprintf("v%d-%d%s", g, i, padding)))
				case x < 12:
					rev, err = kv.Put(ctx, fmt.Sprintf("other/%d", rng.IntN(40)), []byte("o"))
				case x < 16:
					var ops []dister.Op
					for j := range 2 + rng.IntN(30) {
						k := fmt.Sprintf("%st%02d", prefix, rng.IntN(60))
						if j%4 == 3 {
							k = fmt.Sprintf("other/t%d", j)
						}
						if rng.IntN(6) == 0 {
							ops = append(ops, dister.Del(k))
						} else {
							ops = append(ops, dister.Put(k, []byte(fmt.Sprintf("t%d-%d-%d%s", g, i, j, padding))))
						}
					}
					var r *dister.TxnResult
					if r, err = kv.Txn(ctx, dister.Txn{Then: ops}); err == nil {
						rev = r.Revision
					}
				case x < 19:
					var r dister.DeleteResult
					if r, err = kv.Delete(ctx, fmt.Sprintf("%sk%02d", prefix, rng.IntN(40))); err == nil {
						rev = r.Revision
					}
				default:
					var r dister.DeleteResult
					if r, err = kv.Delete(ctx, fmt.Sprintf("%st%d", prefix, rng.IntN(6)), dister.WithPrefix()); err == nil {
						rev = r.Revision
					}
				}
				if err != nil {
					t.Errorf("write: %v", err)
					return
				}
				for {
					l := last.Load()
					if rev <= l || last.CompareAndSwap(l, rev) {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	return last.Load()
}

// r1SlowStream runs writes through writer for d while watches on watcher
// read prefix: a slow one (long pauses: let go and joined again many
// times), with prev entries, a reference read fast, and one that starts
// in the future. Progress is requested all along. Each must deliver the
// reference's changes exactly; the reference itself must add up to the
// final List.
func r1SlowStream(t *testing.T, writer, watcher *dister.Node, d time.Duration, pad int, scale time.Duration) {
	ctx := ctxT(t)
	prefix := "w/"
	wkv, rkv := writer.KV(), watcher.KV()
	start, err := wkv.Put(ctx, "w/start", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rkv.Get(ctx, "w/start", dister.MinRevision(start)); err != nil {
		t.Fatal(err)
	}
	from := start + 1
	future := start + 300
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	fast := rkv.Watch(wctx, prefix, dister.FromRevision(from), dister.WithPrevEntry())
	slow := rkv.Watch(wctx, prefix, dister.FromRevision(from), dister.WithPrevEntry())
	slowNoPrev := rkv.Watch(wctx, prefix, dister.FromRevision(from))
	ahead := rkv.Watch(wctx, prefix, dister.FromRevision(future), dister.WithPrevEntry())

	var end atomic.Int64
	until := func() int64 { return end.Load() }
	results := make([]*r1Collected, 4)
	var wg sync.WaitGroup
	// Pauses by the clock: long enough, often enough, for the slow ones
	// to be let go many times while the writes go on.
	every := func(period, pause time.Duration, small bool) func(int) {
		next := time.Now().Add(period)
		return func(n int) {
			if time.Now().After(next) {
				time.Sleep(pause)
				next = time.Now().Add(period)
			} else if small && n%50 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}
	pauses := []func(int){
		nil,
		every(500*time.Millisecond, 300*time.Millisecond*scale, true),
		every(700*time.Millisecond, 400*time.Millisecond*scale, false),
		every(600*time.Millisecond, 350*time.Millisecond*scale, false),
	}
	for i, ch := range []<-chan dister.WatchEvent{fast, slow, slowNoPrev, ahead} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = r1Collect(ctx, ch, until, pauses[i])
		}()
	}
	progDone := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		for {
			select {
			case <-progDone:
				return
			case <-time.After(3 * time.Millisecond):
			}
			_ = rkv.RequestProgress(ctx)
		}
	}()
	last := r1Writes(t, ctx, wkv, prefix, d, pad)
	close(progDone)
	pwg.Wait()
	// Every watch ends at a change of last or a progress note past it.
	if _, err := rkv.Get(ctx, "w/start", dister.MinRevision(last)); err != nil {
		t.Fatal(err)
	}
	end.Store(last)
	stopAsk := make(chan struct{})
	go func() {
		for {
			select {
			case <-stopAsk:
				return
			case <-time.After(20 * time.Millisecond):
				_ = rkv.RequestProgress(ctx)
			}
		}
	}()
	wg.Wait()
	close(stopAsk)
	if t.Failed() {
		return
	}
	ref := results[0]
	if ref.err != nil {
		t.Fatalf("reference watch: %v", ref.err)
	}
	t.Logf("revisions %d..%d, %d changes under %s", from, last, len(ref.events), prefix)
	// The reference adds up to the final state.
	state := map[string]r1Event{}
	for _, e := range ref.events {
		if e.Type == dister.EventDelete {
			delete(state, e.Key)
		} else {
			state[e.Key] = e
		}
	}
	entries, _, err := wkv.List(ctx, prefix, dister.MinRevision(last))
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if en.Key == "w/start" {
			continue
		}
		e, ok := state[en.Key]
		if !ok || e.Mod != en.ModRevision || !bytes.Equal([]byte(e.Value), en.Value) {
			t.Fatalf("reference: %s is %+v, list says mod %d", en.Key, e, en.ModRevision)
		}
		delete(state, en.Key)
	}
	if len(state) != 0 {
		t.Fatalf("reference: %d keys the list has not", len(state))
	}
	noPrev := make([]r1Event, len(ref.events))
	for i, e := range ref.events {
		e.HasPrev, e.PrevVal, e.PrevMod, e.PrevVers = false, "", 0, 0
		noPrev[i] = e
	}
	r1Check(t, "slow watch", results[1], ref.events, from)
	r1Check(t, "slow watch without prev", results[2], noPrev, from)
	r1Check(t, "watch from the future", results[3], ref.events, future)
	r1Check(t, "reference", ref, ref.events, from)
}

// TestReview1SlowWatchStreamExactLeader: a slow consumer on the leader,
// let go and joined again many times under continuous mixed writes.
func TestReview1SlowWatchStreamExactLeader(t *testing.T) {
	c := testcluster.New(t, 1)
	r1SlowStream(t, c.Node(1), c.Node(1), 2*time.Second, 0, 1)
}

// TestReview1SlowWatchStreamExactFollower: the same on a follower.
func TestReview1SlowWatchStreamExactFollower(t *testing.T) {
	c := testcluster.New(t, 3)
	followers, leader := c.Followers()
	r1SlowStream(t, c.Node(leader), c.Node(followers[0]), 2*time.Second, 0, 1)
}

// TestReview1SlowWatchStreamExactClient: the same through a client node.
func TestReview1SlowWatchStreamExactClient(t *testing.T) {
	c := testcluster.New(t, 1)
	cl := openClient(t, c, 0)
	r1SlowStream(t, c.Node(1), cl, 3*time.Second, 2048, 4)
}
