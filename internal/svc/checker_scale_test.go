package svc

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
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

// TestCheckerReloadsWhenHistoryTrimmed: when the history no longer holds
// the changes after what the checker applied, it loads everything again
// and ends up with the current set: a deregistered instance forgotten, a
// new one checked.
func TestCheckerReloadsWhenHistoryTrimmed(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	h, hg := newHTTPTarget(t, false, always(200)), newHTTPTarget(t, false, always(200))
	gone := probedRecord("gone", health.TypeHTTP, hg.URL+"/gone")
	st.put(t, gone)
	runChecker(t, st, 2)
	waitFor(t, "the first instance passing", func() bool { return st.status(InstanceKey(gone.Service, gone.ID)) == Passing })

	// Hold the checker's reads of the history while the set changes and
	// the history is trimmed past it.
	block := make(chan struct{})
	st.mu.Lock()
	st.beforeChanges = func(ctx context.Context) error {
		select {
		case <-block:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	st.mu.Unlock()
	st.del(InstanceKey(gone.Service, gone.ID))
	fresh := probedRecord("fresh", health.TypeHTTP, h.URL+"/fresh")
	rev := st.put(t, fresh)
	st.mu.Lock()
	st.compacted = rev + 1
	st.mu.Unlock()
	close(block)

	waitFor(t, "the new instance passing", func() bool { return st.status(InstanceKey(fresh.Service, fresh.ID)) == Passing })
	if s := st.stats(); s.loads != 2 {
		t.Fatalf("%d loads, want 2 (the first and one after the trim)", s.loads)
	}
	gets := hg.reqs.Load()
	time.Sleep(300 * time.Millisecond) // three of the fresh one's intervals
	if st.get(InstanceKey(gone.Service, gone.ID)) != nil {
		t.Fatal("the deregistered instance came back")
	}
	// The deregistered one is no longer probed (its own target: the fresh
	// one's probes, as many as the machine's timing allows, do not count):
	// at most one probe already in flight.
	if n := hg.reqs.Load() - gets; n > 1 {
		t.Fatalf("%d probes of the deregistered instance in 300ms after the reload", n)
	}
}

// TestCheckerLeadershipMovesMidStep: the leader loses leadership (its
// checker's ctx ends) while a status write, a probe and a read of the
// history are all in flight; Run returns, and the write it had started
// commits late (a write cannot be recalled). The next leader's checker
// starts from what is stored: it does not write that status again, and it
// finishes what the old one left (the probed instance's first result).
func TestCheckerLeadershipMovesMidStep(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	now := time.Now().UnixMilli()
	ttl := &Record{Service: "cache", ID: "t1", Address: "10.0.0.7:6379", Lease: 7,
		Check: Check{Type: TypeTTL, TTL: time.Second}, Status: Passing, LastCheckedMs: now}
	ttlKey, beat := InstanceKey(ttl.Service, ttl.ID), HeartbeatKey(ttl.Service, ttl.ID)
	st.put(t, ttl)
	st.setBeat(beat, true)
	gated := newHTTPTarget(t, true, nil)
	probed := probedRecord("p1", health.TypeHTTP, gated.URL)
	probedKey := InstanceKey(probed.Service, probed.ID)
	st.put(t, probed)

	writing := make(chan struct{})
	var once sync.Once
	st.mu.Lock()
	st.beforeUpdate = func(ctx context.Context, r *Record, _ int64) {
		if r.ID == ttl.ID {
			once.Do(func() { close(writing) })
			<-ctx.Done() // leadership lost mid-write; the write still lands
		}
	}
	st.mu.Unlock()
	p := health.NewProber(health.Options{})
	defer p.Close()
	_, stopOld := startChecker(t, st, p)
	gated.waitReqs(t, 1) // the probe of p1 hangs
	st.setBeat(beat, false)
	select {
	case <-writing:
	case <-time.After(waitLimit):
		t.Fatal("the ttl instance's critical status was never written")
	}
	// The next read of the history hangs too.
	st.mu.Lock()
	st.beforeChanges = func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	st.mu.Unlock()
	st.put(t, &Record{Service: "other", ID: "o1", Address: "10.0.0.8:80"})
	time.Sleep(50 * time.Millisecond)
	stopOld()
	if s := st.stats(); s.updates != 1 || st.status(ttlKey) != Critical || st.status(probedKey) != Critical {
		t.Fatalf("after the old leader: %d writes, ttl %q, probed %q; want its one late write (critical) and p1 unchecked",
			s.updates, st.status(ttlKey), st.status(probedKey))
	}

	st.mu.Lock()
	st.beforeUpdate, st.beforeChanges = nil, nil
	st.mu.Unlock()
	startChecker(t, st, p) // the new leader
	quit, fed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(fed)
		for { // answer p1's probes, the old leader's hung one included
			select {
			case gated.gate <- 200:
			case <-quit:
				return
			}
		}
	}()
	defer func() { close(quit); <-fed }()
	waitFor(t, "p1's first result written by the new leader", func() bool { return st.status(probedKey) == Passing })
	time.Sleep(100 * time.Millisecond)
	if s := st.stats(); s.updates != 2 || s.failed != 0 || st.status(ttlKey) != Critical {
		t.Fatalf("%d writes (%d refused), ttl %q; want 2 (the late critical, p1's passing), none refused, critical",
			s.updates, s.failed, st.status(ttlKey))
	}
}
