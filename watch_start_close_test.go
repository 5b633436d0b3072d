package dister_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestWatchesStartedDuringClose: watches (KV and service) started
// in a loop while the Node closes all end with ErrClosed, and leave no
// goroutine behind once read.
func TestWatchesStartedDuringClose(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	if err := n.Services().Register(ctx, dister.Instance{Service: "api", ID: "a", Address: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			if _, err := n.KV().Put(ctx, fmt.Sprintf("k/%d", i%50), nil); err != nil {
				return
			}
		}
	}()
	before := runtime.NumGoroutine()
	var mu sync.Mutex
	kinds := map[string]int{}
	note := func(what string, err error) {
		k := "ErrClosed"
		if !errors.Is(err, dister.ErrClosed) {
			k = what + ": " + err.Error()
		}
		mu.Lock()
		kinds[k]++
		mu.Unlock()
	}
	var started atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				wctx, cancel := context.WithCancel(context.Background())
				started.Add(1)
				if g%2 == 0 {
					last, err := drainWatch(n.KV().Watch(wctx, "k/"), 30*time.Second)
					if err != nil {
						note("kv (not ended)", err)
					} else {
						note("kv", last.Err)
					}
				} else {
					var last dister.ServiceEvent
					done := make(chan struct{})
					go func() {
						defer close(done)
						for ev := range n.Services().Watch(wctx, "api") {
							last = ev
						}
					}()
					select {
					case <-done:
						note("service", last.Err)
					case <-time.After(30 * time.Second):
						note("service (not ended)", errors.New("not ended"))
					}
				}
				cancel()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if err := n.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d watches started; ends: %v", started.Load(), kinds)
	for k := range kinds {
		if k != "ErrClosed" {
			t.Errorf("%d watch(es) ended with %q, want ErrClosed", kinds[k], k)
		}
	}
	// Goroutines left by the watches.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if leftovers() == "" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if l := leftovers(); l != "" {
		t.Errorf("goroutines left after Close (before: %d, now %d):\n%s", before, runtime.NumGoroutine(), l)
	}
}

// leftovers lists the goroutines in watch code.
func leftovers() string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "internal/cluster.(*hub)") || strings.Contains(g, "dister.(*KV).Watch") ||
			strings.Contains(g, "dister.(*Services).Watch") || strings.Contains(g, "dister.(*Services).feed") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
