package dister_test

import (
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

// A small cache (warm-up, puts entering free room, evictions) under writes
// from servers, with the feed's server stopped midway: a linearizable read
// never returns a mod revision below a write acknowledged before it began,
// and a session read never one below the client's own write.
func TestClientCacheFreshUnderFaults(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const keys = 300
	var mu sync.Mutex
	acked := map[string]int64{}
	ack := func(k string, rev int64) {
		mu.Lock()
		acked[k] = max(acked[k], rev)
		mu.Unlock()
	}
	for i := range keys {
		k := fmt.Sprintf("s/%03d", i)
		rev, err := c.Node(c.IDs()[0]).KV().Put(ctx, k, []byte("0"))
		if err != nil {
			t.Fatal(err)
		}
		ack(k, rev)
	}
	cl := openClient(t, c, 150)
	kv := cl.KV()
	if _, err := kv.Get(ctx, "s/000"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var stopped atomic.Uint64
	var wg sync.WaitGroup
	var bad atomic.Int64
	var hits, gets atomic.Int64
	fail := func(format string, a ...any) {
		if bad.Add(1) <= 10 {
			t.Errorf(format, a...)
		}
	}
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := uint64(w + 1)
				if id == stopped.Load() {
					id = 3
				}
				if id == stopped.Load() {
					id = uint64(w%2 + 1)
				}
				n := c.Node(id)
				if n == nil {
					continue
				}
				k := fmt.Sprintf("s/%03d", rand.IntN(keys))
				rev, err := n.KV().Put(ctx, k, []byte(fmt.Sprint(i)))
				if err == nil {
					ack(k, rev)
				}
			}
		}()
	}
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("s/%03d", rand.IntN(keys))
				if r == 0 { // own writes, then session reads
					rev, err := kv.Put(ctx, k, []byte("c"))
					if err != nil {
						continue
					}
					ack(k, rev)
					var hit bool
					e, err := kv.Get(ctx, k, dister.CacheInfo(&hit))
					if err == nil && e.ModRevision < rev {
						fail("session read of %s at %d (hit %v) after own write at %d", k, e.ModRevision, hit, rev)
					}
					continue
				}
				mu.Lock()
				want := acked[k]
				mu.Unlock()
				var hit bool
				e, err := kv.Get(ctx, k, dister.Linearizable(), dister.CacheInfo(&hit))
				if err != nil {
					continue
				}
				gets.Add(1)
				if hit {
					hits.Add(1)
				}
				if e.ModRevision < want {
					fail("linearizable read of %s at %d (hit %v) after a write acked at %d", k, e.ModRevision, hit, want)
				}
			}
		}()
	}
	time.Sleep(3 * time.Second)
	feed := dister.ClientFeedServer(cl, "default")
	for _, id := range c.IDs() {
		if c.Options(id).PeerAddr == feed {
			stopped.Store(id)
			c.Stop(id)
			t.Logf("stopped feed server %d", id)
		}
	}
	time.Sleep(4 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("%d linearizable gets, %d from cache; cache %d keys", gets.Load(), hits.Load(), dister.ClientCacheLen(cl, "default"))
	if hits.Load() == 0 {
		t.Fatal("no linearizable read came from the cache: the test checked nothing of it")
	}
}
