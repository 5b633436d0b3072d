package dister_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// gate is an HTTP health endpoint on 127.0.0.1 whose requests can be held
// in flight and whose answer can be set.
type gate struct {
	srv     *httptest.Server
	code    atomic.Int32
	mu      sync.Mutex
	hold    chan struct{} // non-nil: requests wait for it to close
	entered chan struct{} // closed when a held request arrives
	once    *sync.Once
	hits    atomic.Int64
}

func newGate(t *testing.T, code int) *gate {
	g := &gate{}
	g.code.Store(int32(code))
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.hits.Add(1)
		g.mu.Lock()
		hold, entered, once := g.hold, g.entered, g.once
		g.mu.Unlock()
		if hold != nil {
			once.Do(func() { close(entered) })
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(int(g.code.Load()))
	}))
	t.Cleanup(func() { g.release(); g.srv.CloseClientConnections(); g.srv.Close() })
	return g
}

// arm makes the next requests wait until release; the channel closes when
// one arrives.
func (g *gate) arm() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hold, g.entered, g.once = make(chan struct{}), make(chan struct{}), new(sync.Once)
	return g.entered
}

func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hold != nil {
		close(g.hold)
		g.hold = nil
	}
}

func httpInst(id, target string) dister.Instance {
	return dister.Instance{Service: "web", ID: id, Address: "127.0.0.1:9", Priority: 1,
		Check: dister.Check{Type: dister.CheckHTTP, Target: target, Interval: time.Second, Timeout: time.Second}}
}

// TestCheckerProbeInFlightAtDeregistration: a probe that started before
// a deregistration and ends after it never brings the instance back.
func TestCheckerProbeInFlightAtDeregistration(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	s := c.Node(1).Services()
	g := newGate(t, 200)
	entered := g.arm()
	if err := s.Register(ctx, httpInst("1", g.srv.URL)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no probe came")
	}
	if err := s.Deregister(ctx, "web", "1"); err != nil {
		t.Fatal(err)
	}
	g.release() // the probe says passing
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if in, ok := getInstance(t, s, "web", "1"); ok {
			t.Fatalf("deregistered instance is back: %+v", in)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCheckerProbeInFlightAtReregistration: re-registered with another
// target (down) while a probe of the old one (up) is in flight: the new
// registration never shows passing.
func TestCheckerProbeInFlightAtReregistration(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	s := c.Node(2).Services()
	up, down := newGate(t, 200), newGate(t, 500)
	entered := up.arm()
	if err := s.Register(ctx, httpInst("1", up.srv.URL)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no probe came")
	}
	if err := s.Register(ctx, httpInst("1", down.srv.URL)); err != nil {
		t.Fatal(err)
	}
	up.release()
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		in, ok := getInstance(t, s, "web", "1")
		if !ok || in.Check.Target != down.srv.URL {
			t.Fatalf("instance now %+v (%v), want the re-registration", in, ok)
		}
		if in.Status == dister.StatusPassing {
			t.Fatalf("the re-registration (target down) shows passing from the old probe: %+v", in)
		}
		time.Sleep(30 * time.Millisecond)
	}
	if in, _ := getInstance(t, s, "web", "1"); in.LastChecked.IsZero() || in.Status != dister.StatusCritical {
		t.Fatalf("new target never checked: %+v", in)
	}
}

// TestCheckerCloseWithProbeInFlight: the leader closes while a probe of a
// hanging target is in flight: Close is quick and the closing server writes
// no status afterwards; the new leader goes on checking.
func TestCheckerCloseWithProbeInFlight(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	leader := c.Leader()
	var other uint64
	for _, id := range c.IDs() {
		if id != leader {
			other = id
		}
	}
	s := c.Node(other).Services()
	g := newGate(t, 200)
	entered := g.arm()
	var closing atomic.Bool
	var late atomic.Int64
	dister.SetCheckStatusHook(c.Node(leader), func(key, status string) {
		if closing.Load() {
			late.Add(1)
		}
	})
	in := httpInst("1", g.srv.URL)
	in.Check.Interval, in.Check.Timeout = 30*time.Second, 20*time.Second
	if err := s.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("no probe came")
	}
	closing.Store(true)
	start := time.Now()
	c.Stop(leader)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v with a probe in flight", d)
	}
	g.release()
	time.Sleep(time.Second)
	if n := late.Load(); n > 0 {
		t.Errorf("the closed leader attempted %d status writes after Close began", n)
	}
	waitStatus(t, s, "web", "1", dister.StatusPassing)
}
