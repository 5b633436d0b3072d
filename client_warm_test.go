package dister_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// A client's feed warms its empty cache from a list of the group: keys
// written before the client came are read from its cache without a trip
// to a server, never past the cache's size, and a later write still
// reaches them.
func TestClientCacheWarmsFromList(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := c.Node(c.IDs()[0]).KV()
	mods := map[string]int64{}
	for i := range 120 {
		key := fmt.Sprintf("warm/%03d", i)
		rev, err := srv.Put(ctx, key, []byte(fmt.Sprintf("v%03d", i)))
		if err != nil {
			t.Fatal(err)
		}
		mods[key] = rev
	}
	const size = 100
	cl := openClient(t, c, size)
	kv := cl.KV()
	if _, err := kv.Get(ctx, "warm/000"); err != nil { // starts the feed
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for dister.ClientCacheLen(cl, "default") < size {
		if time.Now().After(deadline) {
			t.Fatalf("cache holds %d keys, want %d from the warm-up", dister.ClientCacheLen(cl, "default"), size)
		}
		time.Sleep(10 * time.Millisecond)
	}
	changed, err := srv.Put(ctx, "warm/001", []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	var hit bool
	e, err := kv.Get(ctx, "warm/001", dister.Linearizable(), dister.CacheInfo(&hit))
	if err != nil || string(e.Value) != "new" || e.ModRevision != changed {
		t.Fatalf("warmed key after a write: %+v %v (hit %v), want new at %d", e, err, hit, changed)
	}
	for i := 2; i < size; i++ {
		key := fmt.Sprintf("warm/%03d", i)
		e, err := kv.Get(ctx, key, dister.CacheInfo(&hit))
		if err != nil {
			t.Fatal(err)
		}
		if !hit {
			t.Fatalf("%s missed the warmed cache", key)
		}
		if string(e.Value) != fmt.Sprintf("v%03d", i) || e.ModRevision != mods[key] {
			t.Fatalf("%s from cache: %q at %d, want v%03d at %d", key, e.Value, e.ModRevision, i, mods[key])
		}
	}
	if n := dister.ClientCacheLen(cl, "default"); n > size {
		t.Fatalf("cache of %d holds %d keys", size, n)
	}
}
