package health

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func itoa(i int) string { return strconv.Itoa(i) }

func atoi(s string) int { i, _ := strconv.Atoi(s); return i }

func TestConcurrencyBound(t *testing.T) {
	const limit, probes = 3, 24
	var inFlight, maxSeen atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxSeen.Load()
			if n <= m || maxSeen.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(30 * time.Millisecond)
	}))
	defer srv.Close()

	p := newProber(t, Options{MaxConcurrent: limit})
	var wg sync.WaitGroup
	for range probes {
		wg.Go(func() {
			if r := p.Probe(context.Background(), Check{Type: TypeHTTP, Target: srv.URL, Timeout: 5 * time.Second}); r.Status != Passing {
				t.Errorf("probe: %v %q", r.Status, r.Output)
			}
		})
	}
	wg.Wait()
	if m := maxSeen.Load(); m > limit || m < 2 {
		t.Fatalf("max in flight %d, want 2..%d", m, limit)
	}
}

func TestProbeWaitsForSlotWithinCtx(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	p := newProber(t, Options{MaxConcurrent: 1})
	done := make(chan Result)
	go func() {
		done <- p.Probe(context.Background(), Check{Type: TypeHTTP, Target: srv.URL, Timeout: 5 * time.Second})
	}()
	time.Sleep(50 * time.Millisecond) // let it take the only slot

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	r := p.Probe(ctx, Check{Type: TypeTCP, Target: "127.0.0.1:1"})
	if !r.NotRun || r.Status != 0 || !strings.Contains(r.Output, "no free probe slot") {
		t.Fatalf("queued probe: %v %v %q, want not run", r.NotRun, r.Status, r.Output)
	}
	// Without a ctx deadline the wait is bounded by the check's timeout.
	r = p.Probe(context.Background(), Check{Type: TypeTCP, Target: "127.0.0.1:1", Timeout: 100 * time.Millisecond})
	if !r.NotRun || !strings.Contains(r.Output, "no free probe slot") {
		t.Fatalf("queued probe without a deadline: %v %v %q, want not run", r.NotRun, r.Status, r.Output)
	}
	close(release)
	if r := <-done; r.Status != Passing {
		t.Fatalf("slow probe: %v %q", r.Status, r.Output)
	}
}

func TestProbeHonoursCtx(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer srv.Close()
	p := newProber(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	r := p.Probe(ctx, Check{Type: TypeHTTP, Target: srv.URL, Timeout: 10 * time.Second})
	if r.Status != Critical || time.Since(start) > 2*time.Second {
		t.Fatalf("%v %q after %v", r.Status, r.Output, time.Since(start))
	}
}

// TestLanesKeepGroupsApart: one group's hanging probes hold at most half of
// the server's slots; another group's healthy probe still runs and passes.
// Before lanes, the hanging group took every slot and the healthy probe
// came back critical "no free slot" (issue 11, item 7).
func TestLanesKeepGroupsApart(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	ok := codeServer(t, 200)
	p := newProber(t, Options{MaxConcurrent: 4})
	slow, fast := p.Lane(), p.Lane()
	var wg sync.WaitGroup
	defer wg.Wait()
	for range 8 {
		wg.Go(func() {
			slow.Probe(context.Background(), Check{Type: TypeHTTP, Target: hang.URL, Timeout: 3 * time.Second})
		})
	}
	time.Sleep(100 * time.Millisecond) // let them take their slots
	if r := fast.Probe(context.Background(), Check{Type: TypeHTTP, Target: ok.URL, Timeout: 2 * time.Second}); r.Status != Passing {
		t.Fatalf("healthy probe of another lane: %v %v %q", r.NotRun, r.Status, r.Output)
	}
	r := slow.Probe(context.Background(), Check{Type: TypeHTTP, Target: ok.URL, Timeout: 100 * time.Millisecond})
	if !r.NotRun || r.Status != 0 {
		t.Fatalf("probe of the full lane: %v %v %q, want not run", r.NotRun, r.Status, r.Output)
	}
}
