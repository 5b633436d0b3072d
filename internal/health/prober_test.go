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
	if r.Status != Critical || !strings.Contains(r.Output, "no free slot") {
		t.Fatalf("queued probe: %v %q", r.Status, r.Output)
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
