package dister_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// clientGoroutines are the stacks of goroutines running the client
// engine's or cache's code.
func clientGoroutines() []string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "dister/internal/client.") || strings.Contains(g, "dister/internal/cache.") {
			out = append(out, g)
		}
	}
	return out
}

// Client nodes closed mid-read, mid-fill and while their feed reconnects
// (its server just stopped): Close returns, every call in flight returns,
// no goroutine of the client engine is left and nothing panics.
func TestClientCloseUnderLoad(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := c.Node(1).KV()
	for i := range 50 {
		if _, err := srv.Put(ctx, fmt.Sprintf("c/%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	stopped := map[uint64]bool{}
	for round := range 6 {
		var cls []*dister.Node
		for i := range 3 {
			if i == 2 {
				cls = append(cls, openClientUnfiltered(t, c, 10))
			} else {
				cls = append(cls, openClient(t, c, 10+i*100))
			}
		}
		done := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for _, cl := range cls {
			for r := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					kv := cl.KV()
					for j := 0; ; j++ {
						select {
						case <-done:
							return
						default:
						}
						k := fmt.Sprintf("c/%d", rand.IntN(60))
						var err error
						switch (r + j) % 4 {
						case 0:
							_, err = kv.Get(ctx, k, dister.Linearizable())
						case 1:
							_, err = kv.Get(ctx, k)
						case 2:
							_, err = kv.Get(ctx, k, dister.Stale())
						default:
							_, err = kv.Put(ctx, k, []byte(fmt.Sprint(j)))
						}
						if err != nil && !errors.Is(err, dister.ErrNotFound) && !errors.Is(err, dister.ErrClosed) {
							select {
							case errs <- fmt.Errorf("round %d: %w", round, err):
							default:
							}
						}
						if errors.Is(err, dister.ErrClosed) {
							return
						}
					}
				}()
			}
		}
		time.Sleep(time.Duration(200+rand.IntN(300)) * time.Millisecond)
		// In odd rounds the feed's server of the first client stops just
		// before the close: its feed is reconnecting.
		if round%2 == 1 {
			feed := dister.ClientFeedServer(cls[0], "default")
			for _, id := range c.IDs() {
				if c.Options(id).PeerAddr == feed && len(stopped) == 0 {
					c.Stop(id)
					stopped[id] = true
				}
			}
			time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
		}
		closed := make(chan struct{})
		go func() {
			var cwg sync.WaitGroup
			for _, cl := range cls {
				cwg.Add(1)
				go func() { defer cwg.Done(); cl.Close() }()
			}
			cwg.Wait()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(20 * time.Second):
			t.Fatalf("round %d: client Close hung", round)
		}
		returned := make(chan struct{})
		go func() { wg.Wait(); close(returned) }()
		select {
		case <-returned:
		case <-time.After(20 * time.Second):
			close(done)
			t.Fatalf("round %d: calls in flight did not return after Close", round)
		}
		close(done)
		close(errs)
		for err := range errs {
			t.Logf("call error: %v", err)
		}
		// Goroutines the closed engines left.
		var left []string
		for range 100 {
			if left = clientGoroutines(); len(left) == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(left) > 0 {
			t.Fatalf("round %d: %d goroutines of closed client nodes left, first:\n%s", round, len(left), left[0])
		}
		for id := range stopped {
			c.Restart(id)
			delete(stopped, id)
		}
	}
}

// Node.Close promises that calls in flight end with ErrClosed: a client
// node's reads in flight at Close must not end with context.Canceled
// while the caller's ctx is live (a caller would take it for its own
// cancellation).
func TestClientCloseEndsCallsWithErrClosed(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var bad []error
	for round := range 5 {
		cl := openClient(t, c, 10)
		var wg sync.WaitGroup
		var mu sync.Mutex
		for r := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; ; j++ {
					_, err := cl.KV().Get(ctx, fmt.Sprintf("x/%d-%d", r, j), dister.Linearizable())
					if err == nil || errors.Is(err, dister.ErrNotFound) {
						continue
					}
					if !errors.Is(err, dister.ErrClosed) {
						mu.Lock()
						bad = append(bad, fmt.Errorf("round %d: %w (caller's ctx: %v)", round, err, ctx.Err()))
						mu.Unlock()
					}
					return
				}
			}()
		}
		time.Sleep(200 * time.Millisecond)
		cl.Close()
		wg.Wait()
	}
	for i, err := range bad {
		if i < 5 {
			t.Errorf("read in flight at Close: %v", err)
		}
	}
	if len(bad) > 0 {
		t.Errorf("%d reads in flight ended without ErrClosed", len(bad))
	}
}
