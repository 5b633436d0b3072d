package dister_test

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestReview1ClientCacheFreshAcrossLetGo: the server's hub is held again
// and again while writes go on, so every time it goes on it has a burst
// larger than a watcher's queue and lets every watcher go, the client
// caches' feeds among them, which then read on from history. A client's
// linearizable read never returns a value older than a write acknowledged
// before the read began, nor one of its own writes (session read), and the
// caches are used (hits).
func TestReview1ClientCacheFreshAcrossLetGo(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	srv := c.Node(1)
	cls := map[string]*dister.Node{"filtered": openClient(t, c, 100), "unfiltered": openClientUnfiltered(t, c, 100)}
	const keys = 8
	var acked [keys]atomic.Int64 // newest acknowledged revision per key
	for i := range keys {
		if _, err := srv.KV().Put(ctx, fmt.Sprintf("f/%d", i), []byte("0")); err != nil {
			t.Fatal(err)
		}
	}
	// A hook that holds the hub while gate is open.
	var gmu sync.Mutex
	gate := make(chan struct{})
	close(gate)
	dister.SetHubHook(srv, func(uint64) {
		gmu.Lock()
		g := gate
		gmu.Unlock()
		<-g
	})
	defer dister.SetHubHook(srv, nil)
	hold := func() {
		gmu.Lock()
		gate = make(chan struct{})
		gmu.Unlock()
	}
	unhold := func() {
		gmu.Lock()
		select {
		case <-gate:
		default:
			close(gate)
		}
		gmu.Unlock()
	}
	defer unhold()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var seq atomic.Int64
	for w := range 3 { // writers through the server
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; ; i += 3 {
				select {
				case <-stop:
					return
				default:
				}
				k := i % keys
				s := seq.Add(1)
				rev, err := srv.KV().Put(ctx, fmt.Sprintf("f/%d", k), []byte(strconv.FormatInt(s, 10)))
				if err != nil {
					t.Error(err)
					return
				}
				for {
					a := acked[k].Load()
					if rev <= a || acked[k].CompareAndSwap(a, rev) {
						break
					}
				}
			}
		}()
	}
	var hits, reads atomic.Int64
	for name, cl := range cls {
		wg.Add(1)
		go func() { // linearizable reads through the client
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := i % keys
				floor := acked[k].Load()
				var hit bool
				e, err := cl.KV().Get(ctx, fmt.Sprintf("f/%d", k), dister.Linearizable(), dister.CacheInfo(&hit))
				if err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				reads.Add(1)
				if hit {
					hits.Add(1)
				}
				if e.ModRevision < floor {
					t.Errorf("%s: linearizable read of f/%d (hit %v) is of revision %d, but a write at %d was acknowledged before the read", name, k, hit, e.ModRevision, floor)
					return
				}
			}
		}()
		wg.Add(1)
		go func() { // the client's own writes, read back (session)
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("own/%s/%d", name, i%4)
				v := []byte(strconv.Itoa(i))
				if _, err := cl.KV().Put(ctx, k, v); err != nil {
					t.Errorf("%s: %v", name, err)
					return
				}
				e, err := cl.KV().Get(ctx, k)
				if err != nil || string(e.Value) != string(v) {
					t.Errorf("%s: read of own write %s=%s: %v %v", name, k, v, e, err)
					return
				}
			}
		}()
	}
	for range 8 { // bursts: the hub held for 300 ms each time
		time.Sleep(200 * time.Millisecond)
		hold()
		time.Sleep(300 * time.Millisecond)
		unhold()
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d writes, %d linearizable reads, %d cache hits", seq.Load(), reads.Load(), hits.Load())
}
