package svc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/health"
)

// waitLimit bounds every wait for something the checker should do.
const waitLimit = 5 * time.Second

// fakeStore is an in-memory Store: key → encoded record with a revision
// counter. Generation moves on every change; Update and Remove are CAS on
// the ModRevision.
type fakeStore struct {
	mu        sync.Mutex
	gen       uint64
	rev       int64
	recs      map[string]storedValue
	beats     map[string]bool
	loads     int
	loadErrs  int           // Loads left to fail
	loadDelay time.Duration // how long a Load takes
	updates   int           // successful Updates
	failed    int           // Updates and Removes refused by their CAS
	removes   int           // successful Removes
	removedAt time.Time
	history   []*Record // successfully written records, in order

	// beforeUpdate, when set, runs at the start of every Update, outside
	// the lock.
	beforeUpdate func(ctx context.Context, r *Record, modRev int64)
}

type storedValue struct {
	val    []byte
	modRev int64
}

func newFakeStore() *fakeStore {
	return &fakeStore{recs: map[string]storedValue{}, beats: map[string]bool{}}
}

func (s *fakeStore) Generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

func (s *fakeStore) Load(ctx context.Context) ([]Stored, map[string]bool, error) {
	s.mu.Lock()
	delay := s.loadDelay
	s.mu.Unlock()
	time.Sleep(delay)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads++
	if s.loadErrs > 0 {
		s.loadErrs--
		return nil, nil, errors.New("fake: replica not ready")
	}
	out := make([]Stored, 0, len(s.recs))
	for _, v := range s.recs {
		r, err := Decode(v.val)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, Stored{Record: r, ModRevision: v.modRev})
	}
	beats := make(map[string]bool, len(s.beats))
	for k, v := range s.beats {
		beats[k] = v
	}
	return out, beats, nil
}

func (s *fakeStore) Update(ctx context.Context, r *Record, modRev int64) error {
	s.mu.Lock()
	hook := s.beforeUpdate
	s.mu.Unlock()
	if hook != nil {
		hook(ctx, r, modRev)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := InstanceKey(r.Service, r.ID)
	cur, ok := s.recs[key]
	if !ok || cur.modRev != modRev {
		s.failed++
		return fmt.Errorf("fake: %s not at revision %d: %w", key, modRev, errs.Conflict)
	}
	b, err := r.Encode()
	if err != nil {
		return err
	}
	s.rev++
	s.recs[key] = storedValue{b, s.rev}
	s.gen++
	s.updates++
	cp, _ := Decode(b)
	s.history = append(s.history, cp)
	return nil
}

func (s *fakeStore) Remove(ctx context.Context, r *Record, modRev int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := InstanceKey(r.Service, r.ID)
	cur, ok := s.recs[key]
	if !ok || cur.modRev != modRev {
		s.failed++
		return fmt.Errorf("fake: %s not at revision %d: %w", key, modRev, errs.Conflict)
	}
	delete(s.recs, key)
	delete(s.beats, HeartbeatKey(r.Service, r.ID))
	s.rev++
	s.gen++
	s.removes++
	s.removedAt = time.Now()
	return nil
}

// put stores r as a client (re-)registration would, and returns its
// revision.
func (s *fakeStore) put(t *testing.T, r *Record) int64 {
	t.Helper()
	b, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev++
	s.recs[InstanceKey(r.Service, r.ID)] = storedValue{b, s.rev}
	s.gen++
	return s.rev
}

func (s *fakeStore) del(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.recs, key)
	s.rev++
	s.gen++
}

func (s *fakeStore) setBeat(key string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.beats[key] = true
	} else {
		delete(s.beats, key)
	}
	s.rev++
	s.gen++
}

// get returns the stored record at key (nil when absent).
func (s *fakeStore) get(key string) *Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.recs[key]
	if !ok {
		return nil
	}
	r, _ := Decode(v.val)
	return r
}

type storeStats struct {
	loads, updates, failed, removes int
	removedAt                       time.Time
	history                         []*Record
}

func (s *fakeStore) stats() storeStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return storeStats{s.loads, s.updates, s.failed, s.removes, s.removedAt,
		append([]*Record(nil), s.history...)}
}

// status is the stored status at key ("" when absent).
func (s *fakeStore) status(key string) string {
	if r := s.get(key); r != nil {
		return r.Status
	}
	return ""
}

// runChecker runs a Checker over st until the test ends (or the returned
// stop is called); stop waits for Run to return.
func runChecker(t *testing.T, st Store, damping int) (stop func()) {
	t.Helper()
	p := health.NewProber(health.Options{})
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := NewChecker(CheckerConfig{Store: st, Prober: p, Logger: log, Damping: damping, Tick: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(waitLimit):
				t.Errorf("Checker.Run did not return %v after its ctx ended", waitLimit)
			}
			p.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds, failing the test after waitLimit.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// probedRecord is a never-checked instance with a probed check every
// MinInterval. The timeout is generous on purpose (the checker does not
// validate records): a loopback probe that times out under -race load would
// be a spurious critical result and break the exact result counts below.
func probedRecord(id, typ, target string) *Record {
	r := &Record{Service: "web", ID: id, Address: "10.0.0.5:80",
		Check: Check{Type: typ, Target: target, Interval: MinInterval, Timeout: 2 * time.Second}}
	r.InitialStatus(time.Now())
	return r
}

// httpTarget is a loopback HTTP server whose answer the test controls.
type httpTarget struct {
	*httptest.Server
	reqs atomic.Int64
	// gate, when non-nil, hands each request its status code: a request
	// waits (without timing out) until the test feeds one.
	gate    chan int
	mu      sync.Mutex
	respond func(n int64) int // status code of request n (1-based) when gate is nil
}

func newHTTPTarget(t *testing.T, gated bool, respond func(n int64) int) *httpTarget {
	h := &httpTarget{respond: respond}
	if gated {
		h.gate = make(chan int)
	}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := h.reqs.Add(1)
		var code int
		if h.gate != nil {
			select {
			case code = <-h.gate:
			case <-r.Context().Done():
				return
			}
		} else {
			h.mu.Lock()
			code = h.respond(n)
			h.mu.Unlock()
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, "answer %d", code)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *httpTarget) setRespond(f func(n int64) int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.respond = f
}

// feed answers the next gated request with code.
func (h *httpTarget) feed(t *testing.T, code int) {
	t.Helper()
	select {
	case h.gate <- code:
	case <-time.After(waitLimit):
		t.Fatalf("no probe came for answer %d within %v", code, waitLimit)
	}
}

func (h *httpTarget) waitReqs(t *testing.T, n int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("request %d to arrive", n), func() bool { return h.reqs.Load() >= n })
}

func always(code int) func(int64) int { return func(int64) int { return code } }

// tcpTarget is a loopback listener that accepts and counts connections.
type tcpTarget struct {
	l       net.Listener
	accepts atomic.Int64
	done    chan struct{}
}

func newTCPTarget(t *testing.T) *tcpTarget {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tt := &tcpTarget{l: l, done: make(chan struct{})}
	go func() {
		defer close(tt.done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			tt.accepts.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(tt.close)
	return tt
}

func (tt *tcpTarget) close() {
	tt.l.Close()
	<-tt.done
}

// closedPort is a loopback host:port nobody listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

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

	// Stored critical, and stays so: removed after `after`.
	down := probedRecord("down", health.TypeTCP, closedPort(t))
	down.Check.DeregisterCriticalAfter = after
	down.Status, down.Output, down.LastCheckedMs = Critical, "connection refused", time.Now().Add(-time.Minute).UnixMilli()
	downKey := InstanceKey(down.Service, down.ID)
	st.put(t, down)
	st.setBeat(HeartbeatKey(down.Service, down.ID), true) // removed with the instance

	// Stored critical but the target answers: recovers, and the recovery
	// stops the clock.
	back := probedRecord("back", health.TypeHTTP, h.URL)
	back.Check.DeregisterCriticalAfter = 3 * after
	back.Status, back.Output, back.LastCheckedMs = Critical, "was down", time.Now().Add(-time.Minute).UnixMilli()
	backKey := InstanceKey(back.Service, back.ID)
	st.put(t, back)

	// Passing all along: never removed.
	up := probedRecord("up", health.TypeHTTP, h.URL)
	up.Check.DeregisterCriticalAfter = after / 2
	up.Status, up.Output, up.LastCheckedMs = Passing, "fine", time.Now().Add(-time.Minute).UnixMilli()
	upKey := InstanceKey(up.Service, up.ID)
	st.put(t, up)

	start := time.Now()
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
	loads := st.stats().loads
	r2 := probedRecord("s1", health.TypeHTTP, srv.URL+"/new")
	st.put(t, r2)
	waitFor(t, "the checker to load the new record", func() bool { return st.stats().loads > loads })
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

	loads := st.stats().loads
	st.del(key)
	waitFor(t, "the checker to reload", func() bool { return st.stats().loads > loads })
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

// TestCheckerThrottlesReloads: a reload reads every instance, so under a
// burst of changes the checker reloads at most about once every ten times
// a Load takes, and still ends up with the last state.
func TestCheckerThrottlesReloads(t *testing.T) {
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
	n := st.stats().loads - loads
	// Unthrottled it would reload once a tick (~30 times).
	if max := int(burst/(10*loadDelay)) + 2; n > max {
		t.Fatalf("%d reloads during a %v burst with %v loads, want at most %d", n, burst, loadDelay, max)
	}
	// The last change is still seen.
	r := probedRecord("late", health.TypeHTTP, h.URL)
	st.put(t, r)
	waitFor(t, "the instance added last to be checked", func() bool {
		return st.status(InstanceKey(r.Service, r.ID)) == Passing
	})
}

// TestCheckerNoRewriteWhileReloadThrottled: after a status write the record
// the checker holds is stale until the next reload. While that reload is
// held back by the throttle, the checker must not write the same change
// again (each attempt is a write proposal that can only fail its CAS).
func TestCheckerNoRewriteWhileReloadThrottled(t *testing.T) {
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
