package dister_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// A warm-up page never evicts keys that reads put in the cache while it
// was on its way: it fills free room only. (Before the fix a page asked
// for the room the cache had when it was requested and entered every
// listed key, evicting the keys the application read for arbitrary
// listed ones: 39 of 60 here, in 3 of 3 runs.)
func TestClientWarmUpNeverEvictsReadKeys(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := c.Node(c.IDs()[0]).KV()
	big := make([]byte, 40<<10)
	for i := range 600 {
		if _, err := srv.Put(ctx, fmt.Sprintf("a/%04d", i), big); err != nil {
			t.Fatal(err)
		}
	}
	const hot = 60
	for i := range hot {
		if _, err := srv.Put(ctx, fmt.Sprintf("z/%02d", i), []byte("hot")); err != nil {
			t.Fatal(err)
		}
	}
	const size = 520
	cl := openClient(t, c, size)
	kv := cl.KV()
	// The first read starts the feed (and its warm-up); once the feed runs
	// (its Reset done) the hot keys are read at once, while the first page
	// (500 keys of 40 KiB) is on its way.
	if _, err := kv.Get(ctx, "a/0000"); err != nil {
		t.Fatal(err)
	}
	for dister.ClientFeedServer(cl, "default") == "" {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(2 * time.Millisecond)
	var wg sync.WaitGroup
	for i := range hot {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := kv.Get(ctx, fmt.Sprintf("z/%02d", i)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	read := dister.ClientCacheLen(cl, "default")
	hitsNow := 0
	for i := range hot {
		var hit bool
		if _, err := kv.Get(ctx, fmt.Sprintf("z/%02d", i), dister.CacheInfo(&hit)); err == nil && hit {
			hitsNow++
		}
	}
	t.Logf("right after the hot reads: cache %d keys, %d of %d hot keys cached", read, hitsNow, hot)
	// The warm-up is done once the cache is full: it stops at the first
	// key without room.
	waitFor(t, func() bool { return dister.ClientCacheLen(cl, "default") >= size })
	// Newest first, so a miss's own fill evicts a listed key, not a hot
	// key not yet looked at.
	missed := 0
	for i := hot - 1; i >= 0; i-- {
		var hit bool
		if _, err := kv.Get(ctx, fmt.Sprintf("z/%02d", i), dister.CacheInfo(&hit)); err != nil {
			t.Fatal(err)
		}
		if !hit {
			missed++
		}
	}
	t.Logf("cache held %d keys after the hot reads; %d of %d hot keys read before were evicted by the warm-up",
		read, missed, hot)
	if missed > 0 {
		t.Fatalf("%d of %d keys the application read were evicted by warm-up pages", missed, hot)
	}
}
