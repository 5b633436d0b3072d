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

// The feeds of two client nodes (filtered, unfiltered) stall: every
// server's hub is held. Linearizable and MinRevision reads must not be
// answered from the stalled caches. Meanwhile more than 1,024 revisions
// go by with a history of 16, so when the hubs go on the history no longer
// reaches back: the caches start again, empty, and every read agrees with
// the servers.
func TestClientCacheStalledThenCompacted(t *testing.T) {
	c := testcluster.New(t, 3, func(o *dister.Options) { o.EventHistory = 16 })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srv := c.Node(1).KV()
	const keys = 10
	var last int64
	for i := range keys {
		r, err := srv.Put(ctx, fmt.Sprintf("l/%d", i), []byte("old"))
		if err != nil {
			t.Fatal(err)
		}
		last = r
	}
	cls := map[string]*dister.Node{"filtered": openClient(t, c, 100), "unfiltered": openClientUnfiltered(t, c, 100)}
	for name, cl := range cls {
		for i := range keys {
			waitUntil(t, name+" cache hit", func() bool {
				var hit bool
				e, err := cl.KV().Get(ctx, fmt.Sprintf("l/%d", i), dister.MinRevision(last), dister.CacheInfo(&hit))
				if err != nil || string(e.Value) != "old" {
					t.Fatalf("%v %v", e, err)
				}
				return hit
			})
		}
	}
	// Hold every hub.
	gate := make(chan struct{})
	var once sync.Once
	open := func() { once.Do(func() { close(gate) }) }
	defer open()
	for _, id := range c.IDs() {
		dister.SetHubHook(c.Node(id), func(uint64) { <-gate })
	}
	defer func() {
		for _, id := range c.IDs() {
			if n := c.Node(id); n != nil {
				dister.SetHubHook(n, nil)
			}
		}
	}()
	check := func(phase string) {
		t.Helper()
		for i := range keys {
			k := fmt.Sprintf("l/%d", i)
			want, err := srv.Get(ctx, k, dister.Linearizable())
			if err != nil && !errors.Is(err, dister.ErrNotFound) {
				t.Fatal(err)
			}
			for name, cl := range cls {
				for _, o := range []struct {
					n   string
					opt dister.ReadOption
				}{{"linearizable", dister.Linearizable()}, {"min revision", dister.MinRevision(last)}} {
					var hit bool
					e, err := cl.KV().Get(ctx, k, o.opt, dister.CacheInfo(&hit))
					if err != nil && !errors.Is(err, dister.ErrNotFound) {
						t.Fatalf("%s: %s: %v", phase, k, err)
					}
					if (e == nil) != (want == nil) || (e != nil && (string(e.Value) != string(want.Value) || e.ModRevision != want.ModRevision)) {
						t.Errorf("%s: %s %s read of %s (hit %v): %v; the servers hold %v", phase, name, o.n, k, hit, e, want)
					}
				}
			}
		}
	}
	// Changes while the feeds stall, then past a trim.
	for i := range keys {
		r, err := srv.Put(ctx, fmt.Sprintf("l/%d", i), []byte("new"))
		if err != nil {
			t.Fatal(err)
		}
		last = r
	}
	check("stalled")
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 140 {
				if _, err := srv.Put(ctx, fmt.Sprintf("fill/%d", w), []byte(fmt.Sprint(j))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if r, err := srv.Delete(ctx, "l/3"); err != nil {
		t.Fatal(err)
	} else {
		last = r.Revision
	}
	if r, err := srv.Put(ctx, "l/4", []byte("newer")); err != nil {
		t.Fatal(err)
	} else {
		last = r
	}
	t.Logf("revision %d", last)
	check("stalled past a trim")
	open()
	time.Sleep(500 * time.Millisecond)
	check("after the hubs went on")
	// The caches answer again.
	for name, cl := range cls {
		waitUntil(t, name+" cache hit after the restart", func() bool {
			var hit bool
			e, err := cl.KV().Get(ctx, "l/4", dister.Linearizable(), dister.CacheInfo(&hit))
			if err != nil || string(e.Value) != "newer" {
				t.Fatalf("%s: %v %v", name, e, err)
			}
			return hit
		})
	}
	check("end")
}
