package svc

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister/internal/health"
)

func TestCheckerTCPFirstResultThenSteadyThenDown(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	tcp := newTCPTarget(t)
	r := probedRecord("t1", health.TypeTCP, tcp.l.Addr().String())
	key := InstanceKey(r.Service, r.ID)
	st.put(t, r)
	runChecker(t, st, 2)

	// The first result of a never-checked instance is written at once.
	waitFor(t, "the first result written", func() bool { return st.status(key) == Passing })
	got := st.get(key)
	if s := st.stats(); s.updates != 1 {
		t.Fatalf("%d writes for the first result, want 1", s.updates)
	}
	if got.LastCheckedMs == 0 || !strings.Contains(got.Output, "ok") {
		t.Fatalf("first result written as %+v", got)
	}
	if got.Priority != r.Priority || got.Address != r.Address || got.Check != r.Check {
		t.Fatalf("the write changed more than the status: %+v", got)
	}
	if s := st.stats(); len(s.history) != 1 || s.history[0].Status != Passing {
		t.Fatalf("history %+v", s.history)
	}

	// Steady: probes go on, nothing is written, nothing reloaded.
	time.Sleep(50 * time.Millisecond) // let the reload after our own write happen
	before, accepts := st.stats(), tcp.accepts.Load()
	time.Sleep(time.Second)
	after := st.stats()
	if after.updates != 1 {
		t.Fatalf("%d writes while the target was steady, want none after the first", after.updates-1)
	}
	if n := tcp.accepts.Load() - accepts; n < 3 {
		t.Fatalf("only %d probes in 1s with a %v interval", n, MinInterval)
	}
	if after.loads != before.loads {
		t.Fatalf("%d reloads while the generation stood still", after.loads-before.loads)
	}

	// Down: critical after Damping (2) failed connects.
	tcp.close()
	waitFor(t, "critical written", func() bool { return st.status(key) == Critical })
	got = st.get(key)
	if s := st.stats(); s.updates != 2 {
		t.Fatalf("%d writes, want 2", s.updates)
	}
	if !strings.Contains(got.Output, "TCP connect") || got.LastCheckedMs == 0 {
		t.Fatalf("critical written as %+v", got)
	}
	time.Sleep(300 * time.Millisecond)
	if s := st.stats(); s.updates != 2 {
		t.Fatalf("%d writes while steadily down, want 2", s.updates)
	}
}

// TestCheckerDamping: with Damping 3 a status changes only after three
// consecutive results agree. Each probe's answer is fed one at a time, so the
// test knows exactly how many results the checker has seen.
func TestCheckerDamping(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	h := newHTTPTarget(t, true, nil)
	r := probedRecord("d1", health.TypeHTTP, h.URL+"/health")
	key := InstanceKey(r.Service, r.ID)
	st.put(t, r)
	runChecker(t, st, 3)

	h.feed(t, 200) // request 1
	waitFor(t, "the first result written", func() bool { return st.status(key) == Passing })

	// expectAfter waits until request n arrives (so the result of request
	// n-1 has been observed and judged) and then checks nothing was written.
	expectAfter := func(n int64, status string, writes int) {
		t.Helper()
		h.waitReqs(t, n)
		time.Sleep(200 * time.Millisecond)
		if got, s := st.status(key), st.stats(); got != status || s.updates != writes {
			t.Fatalf("after request %d: status %q with %d writes, want %q with %d", n-1, got, s.updates, status, writes)
		}
	}
	h.feed(t, 500) // request 2: first failure
	expectAfter(3, Passing, 1)
	h.feed(t, 500) // request 3: second failure
	expectAfter(4, Passing, 1)
	h.feed(t, 500) // request 4: third failure: critical
	waitFor(t, "critical after 3 failures", func() bool { return st.status(key) == Critical })
	if s := st.stats(); s.updates != 2 {
		t.Fatalf("%d writes, want 2", s.updates)
	}
	if out := st.get(key).Output; !strings.Contains(out, "500") {
		t.Fatalf("critical output %q does not name the answer", out)
	}

	// Back up: passing again only after three passes.
	h.feed(t, 200) // request 5
	expectAfter(6, Critical, 2)
	h.feed(t, 200) // request 6
	expectAfter(7, Critical, 2)
	h.feed(t, 200) // request 7
	waitFor(t, "passing after 3 passes", func() bool { return st.status(key) == Passing })
	if s := st.stats(); s.updates != 3 {
		t.Fatalf("%d writes, want 3", s.updates)
	}

	// A streak broken by the current status starts over: fail, fail, pass,
	// fail, fail leaves it passing.
	for i, code := range []int{500, 500, 200, 500, 500} {
		h.feed(t, code) // requests 8..12
		h.waitReqs(t, int64(9+i))
	}
	time.Sleep(200 * time.Millisecond)
	if got, s := st.status(key), st.stats(); got != Passing || s.updates != 3 {
		t.Fatalf("broken streak: status %q with %d writes, want passing with 3", got, s.updates)
	}
}

func TestCheckerFlappingWritesNothing(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	// Odd requests pass, even ones fail: never two failures in a row.
	h := newHTTPTarget(t, false, func(n int64) int {
		if n%2 == 1 {
			return 200
		}
		return 500
	})
	r := probedRecord("f1", health.TypeHTTP, h.URL)
	key := InstanceKey(r.Service, r.ID)
	st.put(t, r)
	runChecker(t, st, 2)

	waitFor(t, "the first result written", func() bool { return st.status(key) == Passing })
	h.waitReqs(t, 12)
	time.Sleep(50 * time.Millisecond)
	if got, s := st.status(key), st.stats(); got != Passing || s.updates != 1 {
		t.Fatalf("flapping target: status %q with %d writes, want passing with 1", got, s.updates)
	}
}

func TestCheckerHTTP429IsWarning(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	h := newHTTPTarget(t, false, always(http.StatusTooManyRequests))
	r := probedRecord("w1", health.TypeHTTP, h.URL+"/ready")
	key := InstanceKey(r.Service, r.ID)
	st.put(t, r)
	runChecker(t, st, 2)

	waitFor(t, "warning written", func() bool { return st.status(key) == Warning })
	if out := st.get(key).Output; !strings.Contains(out, "429") {
		t.Fatalf("warning output %q", out)
	}
	h.waitReqs(t, h.reqs.Load()+3)
	time.Sleep(50 * time.Millisecond)
	if s := st.stats(); s.updates != 1 {
		t.Fatalf("%d writes for a steady warning, want 1", s.updates)
	}

	// 5xx after a warning: critical after Damping results.
	h.setRespond(always(http.StatusServiceUnavailable))
	waitFor(t, "critical written", func() bool { return st.status(key) == Critical })
	if s := st.stats(); s.updates != 2 {
		t.Fatalf("%d writes, want 2", s.updates)
	}
}

func TestCheckerDeregisterCriticalAfter(t *testing.T) {
	t.Parallel()
	const after = 500 * time.Millisecond
	st := newFakeStore()
	h := newHTTPTarget(t, false, always(200))
	// Critical for a minute, but registered now: the countdown runs from
	// the later of the two, as stored.
	start := time.UnixMilli(time.Now().UnixMilli())

	// Stored critical, and stays so: removed after `after`.
	down := probedRecord("down", health.TypeTCP, closedPort(t))
	down.Check.DeregisterCriticalAfter = after
	down.Status, down.Output, down.LastCheckedMs = Critical, "connection refused", time.Now().Add(-time.Minute).UnixMilli()
	down.RegisteredMs = start.UnixMilli()
	downKey := InstanceKey(down.Service, down.ID)
	st.put(t, down)
	st.setBeat(HeartbeatKey(down.Service, down.ID), true) // removed with the instance

	// Stored critical but the target answers: recovers, and the recovery
	// stops the clock.
	back := probedRecord("back", health.TypeHTTP, h.URL)
	back.Check.DeregisterCriticalAfter = 3 * after
	back.Status, back.Output, back.LastCheckedMs = Critical, "was down", time.Now().Add(-time.Minute).UnixMilli()
	back.RegisteredMs = start.UnixMilli()
	backKey := InstanceKey(back.Service, back.ID)
	st.put(t, back)

	// Passing all along: never removed.
	up := probedRecord("up", health.TypeHTTP, h.URL)
	up.Check.DeregisterCriticalAfter = after / 2
	up.Status, up.Output, up.LastCheckedMs = Passing, "fine", time.Now().Add(-time.Minute).UnixMilli()
	upKey := InstanceKey(up.Service, up.ID)
	st.put(t, up)

	runChecker(t, st, 2)

	waitFor(t, "the critical instance removed", func() bool { return st.stats().removes >= 1 })
	s := st.stats()
	if took := s.removedAt.Sub(start); took < after {
		t.Fatalf("removed %v after start, before deregister_critical_after (%v)", took, after)
	} else {
		t.Logf("removed %v after start (deregister_critical_after %v)", took, after)
	}
	if st.get(downKey) != nil {
		t.Fatal("removed instance still stored")
	}
	st.mu.Lock()
	beat := st.beats[HeartbeatKey(down.Service, down.ID)]
	st.mu.Unlock()
	if beat {
		t.Fatal("heartbeat of the removed instance still stored")
	}
	for _, w := range s.history {
		if w.ID == down.ID {
			t.Fatalf("steadily critical instance written: %+v", w)
		}
	}

	// The recovered one is passing; wait past its own deadline.
	waitFor(t, "the recovering instance written passing", func() bool { return st.status(backKey) == Passing })
	time.Sleep(time.Until(start.Add(3*after + 300*time.Millisecond)))
	s = st.stats()
	if s.removes != 1 {
		t.Fatalf("%d removals, want only the critical instance's", s.removes)
	}
	if st.get(backKey) == nil || st.get(upKey) == nil {
		t.Fatal("a passing instance was removed")
	}
	if st.status(upKey) != Passing {
		t.Fatalf("up instance %q", st.status(upKey))
	}
}

func TestCheckerTTL(t *testing.T) {
	t.Parallel()
	st := newFakeStore()
	h := newHTTPTarget(t, false, always(200))
	now := time.Now().UnixMilli()
	mk := func(id, status string) *Record {
		// A target that must never be probed: ttl checks are not.
		return &Record{Service: "cache", ID: id, Address: "10.0.0.7:6379", Lease: 7,
			Check: Check{Type: TypeTTL, TTL: time.Second}, Status: status, Output: "registered", LastCheckedMs: now}
	}
	alive := mk("alive", Passing)
	aliveKey, aliveBeat := InstanceKey(alive.Service, alive.ID), HeartbeatKey(alive.Service, alive.ID)
	st.put(t, alive)
	st.setBeat(aliveBeat, true)
	// Stored critical, heartbeat back: written passing.
	revived := mk("revived", Critical)
	revivedKey := InstanceKey(revived.Service, revived.ID)
	st.put(t, revived)
	st.setBeat(HeartbeatKey(revived.Service, revived.ID), true)

	runChecker(t, st, 2)
	waitFor(t, "revived instance passing", func() bool { return st.status(revivedKey) == Passing })
	if out := st.get(revivedKey).Output; !strings.Contains(out, "heartbeat") {
		t.Fatalf("output %q", out)
	}
	time.Sleep(300 * time.Millisecond)
	if s := st.stats(); s.updates != 1 || st.status(aliveKey) != Passing {
		t.Fatalf("%d writes, alive %q; want 1 write (the revived one) and passing", s.updates, st.status(aliveKey))
	}

	st.setBeat(aliveBeat, false)
	waitFor(t, "critical once the heartbeat is gone", func() bool { return st.status(aliveKey) == Critical })
	if r := st.get(aliveKey); !strings.Contains(r.Output, "heartbeat missed") || r.LastCheckedMs < now {
		t.Fatalf("critical written as %+v", r)
	}
	st.setBeat(aliveBeat, true)
	waitFor(t, "passing once the heartbeat is back", func() bool { return st.status(aliveKey) == Passing })
	time.Sleep(200 * time.Millisecond)
	if s := st.stats(); s.updates != 3 {
		t.Fatalf("%d writes, want 3", s.updates)
	}
	if h.reqs.Load() != 0 {
		t.Fatal("a ttl instance was probed")
	}
}
