package svc

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister/internal/health"
)

// TestCheckerReRegistrationDuringWrite: the instance is re-registered while
// the checker's write is in flight; the write loses its CAS and the checker
// carries on with the new record.
func TestCheckerReRegistrationDuringWrite(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	h := newHTTPTarget(t, false, always(200))
	r := probedRecord("c1", health.TypeHTTP, h.URL)
	key := InstanceKey(r.Service, r.ID)
	st.put(t, r)

	entered, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	st.beforeUpdate = func(ctx context.Context, _ *Record, _ int64) {
		if first.CompareAndSwap(false, true) {
			close(entered)
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
	}
	runChecker(t, st, 2)

	select {
	case <-entered:
	case <-time.After(waitLimit):
		t.Fatal("the checker never wrote the first result")
	}
	// Re-register with the same check (so the status is kept, here the
	// initial one) and a new priority.
	r2 := probedRecord("c1", health.TypeHTTP, h.URL)
	r2.Priority = 7
	st.put(t, r2)
	close(release)

	waitFor(t, "the stale write to fail", func() bool { return st.stats().failed >= 1 })
	waitFor(t, "the new record written passing", func() bool {
		got := st.get(key)
		return got.Status == Passing && got.Priority == 7
	})
	s := st.stats()
	if len(s.history) == 0 || s.history[len(s.history)-1].Priority != 7 {
		t.Fatalf("history %+v", s.history)
	}
	time.Sleep(200 * time.Millisecond)
	if s2 := st.stats(); s2.updates != s.updates || s2.failed != s.failed {
		t.Fatalf("writes after recovering: %d → %d ok, %d → %d failed", s.updates, s2.updates, s.failed, s2.failed)
	}
}

// TestCheckerReplacedCheckIgnoresStaleProbe: a probe of an instance's old
// check that finishes after the instance was re-registered with another check
// says nothing about the new one and must not be written as its status.
func TestCheckerReplacedCheckIgnoresStaleProbe(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	release := make(chan struct{})
	var oldReqs, newReqs atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old" {
			if oldReqs.Add(1) == 1 {
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
			}
			return // 200
		}
		newReqs.Add(1)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	t.Cleanup(srv.Close)

	r := probedRecord("s1", health.TypeHTTP, srv.URL+"/old")
	key := InstanceKey(r.Service, r.ID)
	st.put(t, r)
	runChecker(t, st, 2)
	waitFor(t, "the probe of the old check", func() bool { return oldReqs.Load() == 1 })

	// Re-registered with a new target while that probe hangs.
	r2 := probedRecord("s1", health.TypeHTTP, srv.URL+"/new")
	rev := st.put(t, r2)
	waitFor(t, "the checker to read the new record", func() bool { return st.stats().seen >= rev })
	close(release) // the old probe now passes

	waitFor(t, "a result of the new check written", func() bool {
		got := st.get(key)
		return got != nil && strings.Contains(got.Output, "/new")
	})
	for _, w := range st.stats().history {
		if w.Check.Target == r2.Check.Target && (w.Status == Passing || strings.Contains(w.Output, "/old")) {
			t.Fatalf("the new check's status was written from the old check's probe: %s %q (new target probed %d times)",
				w.Status, w.Output, newReqs.Load())
		}
	}
}

func TestCheckerIgnoresUncheckedInstances(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	h := newHTTPTarget(t, false, always(200))
	u := strings.TrimPrefix(h.URL, "http://")
	recs := []*Record{
		{Service: "web", ID: "none", Address: u, Status: Passing},
		// Targets an unchecked type would never have (Validate refuses them)
		// prove it is not probed.
		{Service: "web", ID: "never", Address: u, Check: Check{Type: TypeNever, Target: h.URL}, Status: Critical},
		{Service: "web", ID: "legacy", Address: u, Check: Check{Type: "gopher", Target: h.URL, Interval: MinInterval},
			Status: Critical, Output: OutputNotChecked},
		{Service: "web", ID: "none-critical", Address: u, Status: Critical},
	}
	for _, r := range recs {
		st.put(t, r)
	}
	runChecker(t, st, 2)
	waitFor(t, "the first load", func() bool { return st.stats().loads >= 1 })
	time.Sleep(500 * time.Millisecond)
	if s := st.stats(); s.updates != 0 || s.removes != 0 || s.failed != 0 {
		t.Fatalf("unchecked instances written: %+v", s)
	}
	if n := h.reqs.Load(); n != 0 {
		t.Fatalf("unchecked instances probed %d times", n)
	}
	for _, r := range recs {
		if got := st.get(InstanceKey(r.Service, r.ID)); got.Status != r.Status {
			t.Fatalf("%s: status %q, want %q", r.ID, got.Status, r.Status)
		}
	}
}

func TestCheckerForgetsRemovedInstance(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	h := newHTTPTarget(t, false, always(200))
	r := probedRecord("gone", health.TypeHTTP, h.URL)
	key := InstanceKey(r.Service, r.ID)
	st.put(t, r)
	runChecker(t, st, 2)
	waitFor(t, "passing written", func() bool { return st.status(key) == Passing })

	rev := st.del(key)
	waitFor(t, "the checker to read the deletion", func() bool { return st.stats().seen >= rev })
	h.setRespond(always(500))
	reqs := h.reqs.Load()
	time.Sleep(500 * time.Millisecond)
	if n := h.reqs.Load() - reqs; n > 1 { // at most the probe already in flight
		t.Fatalf("deleted instance probed %d more times", n)
	}
	if s := st.stats(); s.updates != 1 || s.failed != 0 {
		t.Fatalf("writes after the deletion: %+v", s)
	}
}

func TestCheckerRetriesLoad(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	st.loadErrs = 3
	h := newHTTPTarget(t, false, always(200))
	r := probedRecord("l1", health.TypeHTTP, h.URL)
	key := InstanceKey(r.Service, r.ID)
	st.put(t, r)
	runChecker(t, st, 2)
	waitFor(t, "passing written after failed loads", func() bool { return st.status(key) == Passing })
	if s := st.stats(); s.loads < 4 {
		t.Fatalf("%d loads, want at least 4 (3 failed)", s.loads)
	}
}

// TestCheckerStopsWithProbeInFlight: Run returns when its ctx ends even while
// a probe hangs.
func TestCheckerStopsWithProbeInFlight(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	h := newHTTPTarget(t, true, nil)
	r := probedRecord("h1", health.TypeHTTP, h.URL)
	st.put(t, r)
	stop := runChecker(t, st, 2)
	h.waitReqs(t, 1)
	start := time.Now()
	stop()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Run took %v to return", took)
	}
	if s := st.stats(); s.updates != 0 {
		t.Fatalf("%d writes from a cancelled probe", s.updates)
	}
}

// TestCheckerBurstReloadsNothing: a reload reads every instance, so under a
// burst of changes the checker reads only the changes (before, it reloaded
// every instance once per tick, or once every ten times a Load takes), and
// still ends up with the last state.
func TestCheckerBurstReloadsNothing(t *testing.T) {
	t.Parallel()
	const loadDelay = 20 * time.Millisecond
	st := newFakeStore()
	st.loadDelay = loadDelay
	h := newHTTPTarget(t, false, always(200))
	runChecker(t, st, 2)
	waitFor(t, "the first load", func() bool { return st.stats().loads >= 1 })

	const burst = 600 * time.Millisecond
	loads := st.stats().loads
	start := time.Now()
	for i := 0; time.Since(start) < burst; i++ {
		st.setBeat(fmt.Sprint("\x00hb/x/", i), true)
		time.Sleep(2 * time.Millisecond)
	}
	if n := st.stats().loads - loads; n != 0 {
		t.Fatalf("%d reloads during a %v burst of changes, want none", n, burst)
	}
	// The last change is still seen.
	r := probedRecord("late", health.TypeHTTP, h.URL)
	st.put(t, r)
	waitFor(t, "the instance added last to be checked", func() bool {
		return st.status(InstanceKey(r.Service, r.ID)) == Passing
	})
}

// TestCheckerNoRewriteAfterOwnWrite: after a status write the checker
// holds the record it wrote, and the change its write made comes back from
// the history later; it must not write the same change again (each attempt
// is a write proposal that can only fail its CAS).
func TestCheckerNoRewriteAfterOwnWrite(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	st.loadDelay = 30 * time.Millisecond // reloads at most every ~300ms
	r := &Record{Service: "cache", ID: "r1", Address: "10.0.0.7:6379", Lease: 7,
		Check: Check{Type: TypeTTL, TTL: time.Second}, Status: Passing, LastCheckedMs: time.Now().UnixMilli()}
	key, beat := InstanceKey(r.Service, r.ID), HeartbeatKey(r.Service, r.ID)
	st.put(t, r)
	st.setBeat(beat, true)
	runChecker(t, st, 2)
	waitFor(t, "the first load", func() bool { return st.stats().loads >= 1 })
	time.Sleep(400 * time.Millisecond)

	st.setBeat(beat, false)
	waitFor(t, "critical written", func() bool { return st.status(key) == Critical })
	time.Sleep(400 * time.Millisecond)
	if s := st.stats(); s.updates != 1 || s.failed != 0 {
		t.Fatalf("one status change: %d writes and %d more refused by their CAS, want 1 and 0", s.updates, s.failed)
	}
}

// TestCheckerConfirmsChangeSooner: while a change waits for confirmation,
// the next probe comes after a quarter interval rather than a whole one.
func TestCheckerConfirmsChangeSooner(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	h := newHTTPTarget(t, true, nil)
	r := probedRecord("q1", health.TypeHTTP, h.URL)
	r.Check.Interval = time.Second
	key := InstanceKey(r.Service, r.ID)
	st.put(t, r)
	runChecker(t, st, 2)

	h.feed(t, 200) // request 1: first result
	waitFor(t, "the first result written", func() bool { return st.status(key) == Passing })
	h.feed(t, 500) // request 2, a full interval later: a change to confirm
	answered := time.Now()
	h.waitReqs(t, 3)
	if gap := time.Since(answered); gap > 700*time.Millisecond {
		t.Fatalf("confirmation probe %v after the failure, want about a quarter of %v", gap, r.Check.Interval)
	}
	h.feed(t, 500) // request 3 confirms
	waitFor(t, "critical written", func() bool { return st.status(key) == Critical })
}

// TestCheckerLostWriteDoesNotHoldNewCheck: a status write that loses its CAS
// to a re-registration must not hold back the status of what is registered
// now once the reload shows it: here the old check's interval is a minute,
// the new one's first result must still be written at once.
func TestCheckerLostWriteDoesNotHoldNewCheck(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	h := newHTTPTarget(t, false, always(200))
	r := probedRecord("h1", health.TypeHTTP, h.URL+"/old")
	r.Check.Interval = time.Minute // first probe within a second: never checked
	key := InstanceKey(r.Service, r.ID)
	st.put(t, r)

	entered, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	st.beforeUpdate = func(ctx context.Context, _ *Record, _ int64) {
		if first.CompareAndSwap(false, true) {
			close(entered)
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
	}
	runChecker(t, st, 2)
	select {
	case <-entered:
	case <-time.After(waitLimit):
		t.Fatal("the checker never wrote the first result")
	}
	r2 := probedRecord("h1", health.TypeHTTP, h.URL+"/new")
	st.put(t, r2)
	close(release)

	waitFor(t, "the stale write to fail", func() bool { return st.stats().failed >= 1 })
	waitFor(t, "the new check's first result written", func() bool {
		got := st.get(key)
		return got.Check.Target == r2.Check.Target && got.Status == Passing && strings.Contains(got.Output, "/new")
	})
}

// TestCheckerReRegistrationRestartsDeregisterCountdown: an instance that
// is registered again while critical (its process restarted) gets the whole
// DeregisterCriticalAfter again, counted from the registration.
func TestCheckerReRegistrationRestartsDeregisterCountdown(t *testing.T) {
	t.Parallel()
	const after = 600 * time.Millisecond
	st := newFakeStore()
	r := probedRecord("again", health.TypeTCP, closedPort(t))
	r.Check.DeregisterCriticalAfter = after
	r.Status, r.Output, r.LastCheckedMs = Critical, "connection refused", time.Now().Add(-time.Minute).UnixMilli()
	r.RegisteredMs = time.Now().UnixMilli() // critical for a minute, but registered just now
	st.put(t, r)
	runChecker(t, st, 2)
	time.Sleep(after / 2)
	again := *r
	registered := time.UnixMilli(time.Now().UnixMilli()) // as stored
	again.RegisteredMs = registered.UnixMilli()
	st.put(t, &again)
	waitFor(t, "the re-registered instance removed", func() bool { return st.stats().removes >= 1 })
	if took := st.stats().removedAt.Sub(registered); took < after {
		t.Fatalf("removed %v after its re-registration, before deregister_critical_after (%v)", took, after)
	}
}
