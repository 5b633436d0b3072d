package dister_test

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// A client's load goes on through the leader's Close: calls succeed after
// re-routing within their ctx, no acknowledged write is lost and none is
// applied twice (each key's Version counts its applied writes), writes go
// on under the new leader, and a ttl instance the client keeps alive
// survives the leader change.
func TestClientServerCloseAndLeaderChange(t *testing.T) {
	t.Parallel() // waits on a ttl instance's TTL: runs beside the others
	c := testcluster.New(t, 3)
	cl := openClient(t, c, 0)
	ctx := ctxT(t)
	const ttl = 2 * time.Second
	inst := dister.Instance{Service: "svc", ID: "a", Address: "127.0.0.1:9000",
		Check: dister.Check{Type: dister.CheckTTL, TTL: ttl}}
	if err := cl.Services().Register(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if err := cl.Services().Heartbeat(ctx, "svc", "a"); err != nil {
		t.Fatal(err)
	}

	type writer struct {
		acked, unknown int64
		lastAcked      int64 // sequence number of the last acknowledged put
		afterStop      int64 // acknowledged after the leader closed
	}
	const writers = 6
	ws := make([]*writer, writers)
	var stopped atomic.Bool
	var total atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for i := range ws {
		w := &writer{lastAcked: -1}
		ws[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("load/%d", i)
			for seq := int64(0); ; seq++ {
				select {
				case <-done:
					return
				default:
				}
				_, err := cl.KV().Put(ctx, key, []byte(strconv.FormatInt(seq, 10)))
				switch {
				case err == nil:
					w.acked++
					w.lastAcked = seq
					total.Add(1)
					if stopped.Load() {
						atomic.AddInt64(&w.afterStop, 1)
					}
				case errors.Is(err, dister.ErrUnknownOutcome):
					w.unknown++
				default:
					errc <- fmt.Errorf("writer %d put %d: %w", i, seq, err)
					return
				}
			}
		}()
	}
	waitUntil(t, "writes before the close", func() bool { return total.Load() >= 60 })
	leader := c.Leader()
	stopped.Store(true)
	c.Stop(leader)
	closedAt := time.Now()
	waitUntil(t, "writes under the new leader", func() bool {
		select {
		case err := <-errc:
			t.Fatal(err)
		default:
		}
		for _, w := range ws {
			if atomic.LoadInt64(&w.afterStop) < 10 {
				return false
			}
		}
		return true
	})
	close(done)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for i, w := range ws {
		e, err := cl.KV().Get(ctx, fmt.Sprintf("load/%d", i), dister.Linearizable())
		if err != nil {
			t.Fatal(err)
		}
		seq, _ := strconv.ParseInt(string(e.Value), 10, 64)
		// Each write, retried or not, applied once: the version counts the
		// acknowledged ones and at most the unknown ones.
		if e.Version < w.acked || e.Version > w.acked+w.unknown {
			t.Errorf("writer %d: version %d after %d acknowledged and %d unknown puts", i, e.Version, w.acked, w.unknown)
		}
		if seq < w.lastAcked {
			t.Errorf("writer %d: value %d is older than the last acknowledged %d", i, seq, w.lastAcked)
		}
	}
	// Six writers over two calls in flight: writes were coalesced, so the
	// checks above held for batched writes across the leader change too.
	if _, manys, carried := dister.ClientWriteCalls(cl); manys == 0 {
		t.Errorf("no ProposeMany calls (%d commands): the batch path was not under test", carried)
	}

	// The instance's lease outlived the leader that granted it by more
	// than twice its TTL: the client renewed it at the new leader.
	if d := 2*ttl + ttl/2 - time.Since(closedAt); d > 0 {
		time.Sleep(d)
	}
	got, err := cl.Services().Get(ctx, "svc")
	if err != nil || len(got) != 1 || got[0].Status != dister.StatusPassing {
		t.Fatalf("ttl instance after the leader change: %+v, %v", got, err)
	}
	if l, err := cl.Group("").Leader(ctx); err != nil || l == leader || l == 0 {
		t.Fatalf("client sees leader %d (%v); the closed one was %d", l, err, leader)
	}
}

// The server streaming the client's cache feed closes: the feed resumes
// on another server without a gap, and the cache, updated by the events
// it missed meanwhile, answers correctly (and from cache again).
func TestClientWatchLossKeepsCacheCorrect(t *testing.T) {
	c := testcluster.New(t, 3)
	cl := openClient(t, c, 0)
	ctx := ctxT(t)
	kv := cl.KV()
	const keys = 10
	for i := range keys {
		if _, err := kv.Put(ctx, fmt.Sprintf("k%d", i), []byte("old")); err != nil {
			t.Fatal(err)
		}
	}
	// Fill the cache, and wait until each key is answered from it.
	for i := range keys {
		waitUntil(t, "a cache hit", func() bool {
			var hit bool
			e, err := kv.Get(ctx, fmt.Sprintf("k%d", i), dister.CacheInfo(&hit))
			if err != nil || string(e.Value) != "old" {
				t.Fatalf("k%d: %v, %v", i, e, err)
			}
			return hit
		})
	}
	feed := dister.ClientFeedServer(cl, "default")
	var feedID uint64
	for _, id := range c.IDs() {
		if c.Options(id).PeerAddr == feed {
			feedID = id
		}
	}
	if feedID == 0 {
		t.Fatalf("feed server %q is none of the servers", feed)
	}
	c.Stop(feedID)
	// Another node changes every cached key while the feed is moving.
	var other *dister.Node
	for _, id := range c.IDs() {
		other = c.Node(id)
	}
	var last int64
	for i := range keys {
		r, err := other.KV().Put(ctx, fmt.Sprintf("k%d", i), []byte("new"))
		if err != nil {
			t.Fatal(err)
		}
		last = r
	}
	for i := range keys {
		key := fmt.Sprintf("k%d", i)
		// Bounded reads see the new value; a stale one may see either.
		for _, o := range []dister.ReadOption{dister.Linearizable(), dister.MinRevision(last), dister.Stale()} {
			e, err := kv.Get(ctx, key, o)
			if err != nil {
				t.Fatal(err)
			}
			if v := string(e.Value); v != "new" && v != "old" {
				t.Fatalf("%s: %q", key, v)
			}
		}
		for _, o := range []dister.ReadOption{dister.Linearizable(), dister.MinRevision(last)} {
			if e, err := kv.Get(ctx, key, o); err != nil || string(e.Value) != "new" {
				t.Fatalf("%s after the feed's server closed: %v, %v", key, e, err)
			}
		}
		waitUntil(t, "a cache hit with the new value", func() bool {
			var hit bool
			e, err := kv.Get(ctx, key, dister.Linearizable(), dister.CacheInfo(&hit))
			if err != nil || string(e.Value) != "new" {
				t.Fatalf("%s: %v, %v", key, e, err)
			}
			return hit
		})
	}
	if now := dister.ClientFeedServer(cl, "default"); now == feed || now == "" {
		t.Fatalf("feed still on %q", now)
	}
	if st := cl.Status(); st.Groups[0].Revision < last {
		t.Fatalf("status %+v: cache revision below %d", st, last)
	}
}

// waitUntil polls cond for up to 30 seconds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
