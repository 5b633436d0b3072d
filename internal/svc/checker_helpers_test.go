package svc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
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
// counter and a history of every change (for Changes). Generation moves on
// every change; Update and Remove are CAS on the ModRevision.
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
	changes   []Change  // every change, in order (the watch history)
	compacted int64     // Changes after a revision below it fail with errs.Compacted
	loaded    int       // records returned by Loads
	seen      int64     // the highest revision Load or Changes returned

	// beforeUpdate, when set, runs at the start of every Update, outside
	// the lock.
	beforeUpdate func(ctx context.Context, r *Record, modRev int64)
	// beforeChanges, when set, runs at the start of every Changes outside
	// the lock; an error it returns is Changes' answer.
	beforeChanges func(ctx context.Context) error
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

func (s *fakeStore) Load(ctx context.Context) ([]Stored, map[string]bool, int64, error) {
	s.mu.Lock()
	delay := s.loadDelay
	s.mu.Unlock()
	time.Sleep(delay)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loads++
	if s.loadErrs > 0 {
		s.loadErrs--
		return nil, nil, 0, errors.New("fake: replica not ready")
	}
	out := make([]Stored, 0, len(s.recs))
	for _, v := range s.recs {
		r, err := Decode(v.val)
		if err != nil {
			return nil, nil, 0, err
		}
		out = append(out, Stored{Record: r, ModRevision: v.modRev})
	}
	s.loaded += len(out)
	s.seen = max(s.seen, s.rev)
	beats := make(map[string]bool, len(s.beats))
	for k, v := range s.beats {
		beats[k] = v
	}
	return out, beats, s.rev, nil
}

func (s *fakeStore) Changes(ctx context.Context, after int64) ([]Change, int64, error) {
	s.mu.Lock()
	hook := s.beforeChanges
	s.mu.Unlock()
	if hook != nil {
		if err := hook(ctx); err != nil {
			return nil, 0, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if after+1 < s.compacted {
		return nil, 0, fmt.Errorf("fake: history starts at %d: %w", s.compacted, errs.Compacted)
	}
	var out []Change
	for _, ch := range s.changes {
		if ch.Revision > after {
			if ch.Record != nil {
				cp := *ch.Record
				ch.Record = &cp
			}
			out = append(out, ch)
		}
	}
	s.seen = max(s.seen, s.rev)
	return out, s.rev, nil
}

// record appends a change at the current revision; s.mu is held.
func (s *fakeStore) record(key string, r *Record, deleted bool) {
	s.changes = append(s.changes, Change{Key: key, Revision: s.rev, Record: r, Deleted: deleted})
}

func (s *fakeStore) Update(ctx context.Context, r *Record, modRev int64) (int64, error) {
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
		return 0, fmt.Errorf("fake: %s not at revision %d: %w", key, modRev, errs.Conflict)
	}
	b, err := r.Encode()
	if err != nil {
		return 0, err
	}
	s.rev++
	s.recs[key] = storedValue{b, s.rev}
	s.gen++
	s.updates++
	cp, _ := Decode(b)
	s.history = append(s.history, cp)
	cp2, _ := Decode(b)
	s.record(key, cp2, false)
	return s.rev, nil
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
	s.rev++
	s.record(key, nil, true)
	if beat := HeartbeatKey(r.Service, r.ID); s.beats[beat] {
		delete(s.beats, beat)
		s.record(beat, nil, true)
	}
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
	cp, _ := Decode(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev++
	s.recs[InstanceKey(r.Service, r.ID)] = storedValue{b, s.rev}
	s.record(InstanceKey(r.Service, r.ID), cp, false)
	s.gen++
	return s.rev
}

func (s *fakeStore) del(key string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.recs, key)
	s.rev++
	s.record(key, nil, true)
	s.gen++
	return s.rev
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
	s.record(key, nil, !on)
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
	seen                            int64
	removedAt                       time.Time
	history                         []*Record
}

func (s *fakeStore) stats() storeStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return storeStats{s.loads, s.updates, s.failed, s.removes, s.seen, s.removedAt,
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
