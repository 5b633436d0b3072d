package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Concurrent use of one client node (writes, cached and linearizable
// reads, lists, watches, leases) over 3 servers while a server that is not
// the leader closes: for the race detector, and goleak after Close.
func TestConcurrentUse(t *testing.T) {
	c := testcluster.New(t, 3)
	var seeds []string
	for _, id := range c.IDs() {
		seeds = append(seeds, c.Options(id).PeerAddr)
	}
	cl, err := dister.Open(context.Background(), dister.Options{Role: dister.RoleClient, Servers: seeds,
		CacheSize: 100, Logger: testcluster.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := cl.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	events := cl.KV().Watch(wctx, "k")
	id, err := cl.Leases().Grant(ctx, 5*time.Second, dister.AutoRenew())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kv := cl.KV()
			for i := range 60 {
				key := fmt.Sprintf("k%d", (i+w)%20)
				var err error
				switch i % 4 {
				case 0:
					_, err = kv.Put(ctx, key, []byte("v"), dister.WithLease(id))
				case 1:
					_, err = kv.Get(ctx, key, dister.Linearizable())
				case 2:
					_, err = kv.Get(ctx, key)
				default:
					_, _, err = kv.List(ctx, "k")
				}
				if err != nil && !errors.Is(err, dister.ErrNotFound) {
					errc <- err
					return
				}
			}
		}()
	}
	_, leader := c.Followers()
	for _, id := range c.IDs() {
		if id != leader {
			c.Stop(id)
			break
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev.Err != nil {
			t.Fatalf("watch ended: %v", ev.Err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no watch event")
	}
	_ = cl.Status()
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.KV().Get(ctx, "k1"); !errors.Is(err, dister.ErrClosed) {
		t.Fatalf("get after Close: %v", err)
	}
}
