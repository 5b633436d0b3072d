package svc

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/dister/dister/internal/health"
)

// steadyTTL puts n passing ttl instances with live heartbeats: a steady
// group in which nothing is due.
func steadyTTL(t *testing.T, st *fakeStore, n int) {
	now := time.Now().UnixMilli()
	for i := range n {
		r := &Record{Service: "big", ID: fmt.Sprint("i", i), Address: "10.0.0.9:80", Lease: 9,
			Check: Check{Type: TypeTTL, TTL: 30 * time.Second}, Status: Passing, Output: "heartbeat alive", LastCheckedMs: now}
		st.put(t, r)
		st.setBeat(HeartbeatKey(r.Service, r.ID), true)
	}
}

// startChecker runs a Checker over st and returns it with its stop, which
// waits for Run to return.
func startChecker(t *testing.T, st Store, p Prober) (*Checker, func()) {
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	c := NewChecker(CheckerConfig{Store: st, Prober: p, Logger: log, Damping: 2, Tick: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	stop := func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitLimit):
			t.Errorf("Checker.Run did not return %v after its ctx ended", waitLimit)
		}
	}
	t.Cleanup(stop)
	return c, stop
}

// TestCheckerChangesAreIncremental: in a large steady group, registering
// one more instance neither reloads every instance nor makes any tick walk
// them all; the new instance is still probed and its first result written.
// (Before: every tick visited every target, and every change reloaded the
// whole group.)
func TestCheckerChangesAreIncremental(t *testing.T) {
	t.Parallel()
	const n = 5000
	st := newFakeStore()
	steadyTTL(t, st, n)
	p := health.NewProber(health.Options{})
	defer p.Close()
	c, stop := startChecker(t, st, p)
	waitFor(t, "the first load", func() bool { return st.stats().loads >= 1 })

	h := newHTTPTarget(t, false, always(200))
	r := probedRecord("new", health.TypeHTTP, h.URL)
	st.put(t, r)
	waitFor(t, "the new instance's first result", func() bool { return st.status(InstanceKey(r.Service, r.ID)) == Passing })
	// A few more ticks: a steady group stays free.
	h.waitReqs(t, h.reqs.Load()+1)
	stop()

	if s := st.stats(); s.loads != 1 || s.updates != 1 {
		t.Errorf("%d loads and %d writes, want 1 load (changes applied from the history) and 1 write", s.loads, s.updates)
	}
	// The load looks at each target once; a walk of every target on any
	// tick would be n visits more at least.
	if v := c.visits.Load(); v >= 2*n {
		t.Errorf("%d target visits with %d steady instances and one new: the ticks walk every target", v, n)
	}
}
