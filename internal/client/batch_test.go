package client

// Tests of batch.go against a fake server (no Raft): they drive send
// directly on a bare Engine, holding its locks to order the races.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/peer"
)

// gateServer holds every Propose until release is closed, and every
// ProposeMany until its ctx ends; it records each command it was sent.
type gateServer struct {
	release chan struct{}
	mu      sync.Mutex
	got     map[string]int // command -> times it reached the server
	held    int
}

func (s *gateServer) note(cmds ...[]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cmds {
		s.got[string(c)]++
	}
	s.held++
}

func (s *gateServer) reached(cmd string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[cmd]
}

func (s *gateServer) heldCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

func (s *gateServer) Propose(ctx context.Context, req *peer.ProposeRequest) (*peer.ProposeResponse, error) {
	s.note(req.Cmd)
	select {
	case <-s.release:
		return &peer.ProposeResponse{Data: req.Cmd}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *gateServer) ProposeMany(ctx context.Context, req *peer.ProposeManyRequest) ([]peer.ProposeAnswer, error) {
	s.note(req.Cmds...)
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *gateServer) Read(context.Context, *peer.ReadRequest) (*peer.ReadResponse, error) {
	return nil, errs.Invalid
}
func (s *gateServer) Watch(context.Context, *peer.WatchRequest, func(*peer.WatchFrame) error) error {
	return errs.Invalid
}
func (s *gateServer) Feed(context.Context, *peer.FeedRequest, <-chan peer.FeedInput, func(*peer.WatchFrame) error) error {
	return errs.Invalid
}
func (s *gateServer) Call(context.Context, string, []byte) (any, error) { return nil, errs.Invalid }
func (s *gateServer) Snapshot(context.Context, io.Writer) (any, error)  { return nil, errs.Invalid }

// bareEngine is an Engine with just what send needs.
func bareEngine(t *testing.T) *Engine {
	e := &Engine{peers: peer.NewClient(), withoutMany: map[string]bool{}}
	e.life, e.stop = context.WithCancel(context.Background())
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// heldTwo is a gate server, a bare engine, and two calls to the server held
// in flight: the next writes of addr/group queue at the client. Cleanup
// ends the held calls (bg) and waits for the goroutines in wg.
type heldTwo struct {
	srv         *gateServer
	e           *Engine
	addr, group string
	bg          context.Context
	wg          *sync.WaitGroup
}

func holdTwo(t *testing.T) *heldTwo {
	t.Helper()
	srv := &gateServer{release: make(chan struct{}), got: map[string]int{}}
	s, err := peer.Listen("127.0.0.1:0", srv, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	f := &heldTwo{srv: srv, e: bareEngine(t), addr: s.Addr(), group: "g", wg: &sync.WaitGroup{}}
	bg, cancel := context.WithCancel(context.Background())
	f.bg = bg
	t.Cleanup(func() { cancel(); f.wg.Wait() })
	for _, c := range []string{"first-1", "first-2"} {
		f.wg.Go(func() { _, _ = f.e.send(bg, f.addr, f.group, []byte(c)) })
	}
	waitFor(t, "2 calls held", func() bool { return srv.heldCalls() == 2 })
	return f
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// A write whose ctx ended while it was still queued gets the plain ctx
// error and is not sent, even when the call that frees a slot returns at
// the same moment and forms the batch after the caller's ctx ended, with a
// patient caller's command beside it (a review found it sent, and its
// caller told ErrUnknownOutcome).
func TestQueuedWriteWhoseCtxEndedIsNotSent(t *testing.T) {
	f := holdTwo(t)
	srv, e, addr, group, bg, wg := f.srv, f.e, f.addr, f.group, f.bg, f.wg
	var err error
	q := e.sendQueue(addr, group)
	queued := func(n int) func() bool {
		return func() bool { q.mu.Lock(); defer q.mu.Unlock(); return len(q.queue) == n }
	}
	// A patient caller and the one that will give up queue behind them.
	wg.Go(func() { _, _ = e.send(bg, addr, group, []byte("patient")) })
	waitFor(t, "patient queued", queued(1))
	xctx, cancelX := context.WithCancel(context.Background())
	xerr := make(chan error, 1)
	go func() { _, err := e.send(xctx, addr, group, []byte("gave-up")); xerr <- err }()
	waitFor(t, "gave-up queued", queued(2))

	// The calls in flight return while the queue's lock is busy: their
	// sendDone waits for it first. Then the caller's ctx ends, and it
	// waits for the lock too (it has seen its ctx end while queued). The
	// sleeps only make that order likely (a goroutine blocked on a mutex
	// cannot be observed); the outcome asserted below must hold in every
	// order.
	q.mu.Lock()
	close(srv.release)
	time.Sleep(100 * time.Millisecond)
	cancelX()
	time.Sleep(100 * time.Millisecond)
	q.mu.Unlock()

	err = <-xerr
	t.Logf("caller whose ctx ended while queued: %v; its command reached the server %d times", err, srv.reached("gave-up"))
	if errors.Is(err, errs.UnknownOutcome) || !errors.Is(err, context.Canceled) {
		t.Errorf("write whose ctx ended while queued: %v; want the plain ctx error (surely not applied)", err)
	}
	waitFor(t, "the batch call", func() bool { return srv.heldCalls() == 3 })
	if n := srv.reached("gave-up"); n != 0 {
		t.Errorf("the command of a caller whose ctx had ended while queued was sent %d times", n)
	}
}

// The same with a deadline: the caller's deadline passed while it was
// queued, and the batch formed afterwards holds only expired commands:
// nothing is sent, and the caller gets the plain deadline error.
func TestExpiredQueuedWriteIsNotSent(t *testing.T) {
	f := holdTwo(t)
	srv, e, addr, group := f.srv, f.e, f.addr, f.group
	var err error
	q := e.sendQueue(addr, group)
	xctx, cancelX := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancelX()
	xerr := make(chan error, 1)
	go func() { _, err := e.send(xctx, addr, group, []byte("expired")); xerr <- err }()
	waitFor(t, "queued", func() bool { q.mu.Lock(); defer q.mu.Unlock(); return len(q.queue) == 1 })

	q.mu.Lock()
	close(srv.release)
	time.Sleep(50 * time.Millisecond)
	<-xctx.Done() // its deadline passes while it is queued
	time.Sleep(50 * time.Millisecond)
	q.mu.Unlock()

	err = <-xerr
	time.Sleep(100 * time.Millisecond)
	t.Logf("caller whose deadline passed while queued: %v; command reached the server %d times", err, srv.reached("expired"))
	if srv.reached("expired") != 0 {
		t.Fatalf("expired command was sent")
	}
	if errors.Is(err, errs.UnknownOutcome) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("write never sent, whose deadline passed while queued: %v; want the plain deadline error", err)
	}
}

// Close while a batch has been formed but its call has not gone out: the
// call never starts (the engine's ctx is over), so nothing was sent, and
// its callers get errs.Closed, not ErrUnknownOutcome (a first review found
// that) nor the engine's ctx error (a second review found that on the path
// that sends a batch's commands as Propose calls: a server without
// ProposeMany, and every batch of one command).
func TestCloseBeforeBatchSentIsClosed(t *testing.T) {
	for _, oneByOne := range []bool{false, true} {
		f := holdTwo(t)
		srv, e, addr, group, bg := f.srv, f.e, f.addr, f.group, f.bg
		if oneByOne {
			e.sendMu.Lock()
			e.withoutMany[addr] = true
			e.sendMu.Unlock()
		}
		q := e.sendQueue(addr, group)
		errc := make(chan error, 2)
		for _, c := range []string{"a", "b"} {
			go func() { _, err := e.send(bg, addr, group, []byte(c)); errc <- err }()
		}
		waitFor(t, "2 queued", func() bool { q.mu.Lock(); defer q.mu.Unlock(); return len(q.queue) == 2 })
		e.sendMu.Lock() // the batch goroutine stops in noProposeMany, after its closed check
		close(srv.release)
		waitFor(t, "batch formed", func() bool { q.mu.Lock(); defer q.mu.Unlock(); return len(q.queue) == 0 })
		closed := make(chan struct{})
		go func() { _ = e.Close(); close(closed) }()
		waitFor(t, "Close began", func() bool { return e.life.Err() != nil })
		e.sendMu.Unlock()
		<-closed
		for range 2 {
			if err := <-errc; !errors.Is(err, errs.Closed) || errors.Is(err, errs.UnknownOutcome) {
				t.Errorf("one by one %v: write never sent, ended by Close: %v; want errs.Closed alone", oneByOne, err)
			}
		}
		if srv.reached("a")+srv.reached("b") != 0 {
			t.Fatalf("one by one %v: the batch was sent", oneByOne)
		}
	}
}

// Discovery forgets the idle write queues of servers and groups that are
// gone, keeps busy ones, and forgets that a departed address lacked
// ProposeMany.
func TestPruneSends(t *testing.T) {
	e := bareEngine(t)
	for _, k := range []sendKey{{"a", "g"}, {"a", "old"}, {"gone", "g"}, {"busy", "g"}} {
		e.sendQueue(k.addr, k.group)
	}
	busy := e.sendQueue("busy", "g")
	busy.inFlight = 1
	e.withoutMany["gone"], e.withoutMany["a"] = true, true
	e.pruneSends([]string{"a"}, map[string]bool{"g": true})
	var kept []sendKey
	e.sends.Range(func(k, _ any) bool { kept = append(kept, k.(sendKey)); return true })
	_, ag := e.sends.Load(sendKey{"a", "g"})
	_, bg := e.sends.Load(sendKey{"busy", "g"})
	if len(kept) != 2 || !ag || !bg {
		t.Fatalf("queues kept: %v, want a/g and the busy one", kept)
	}
	if e.withoutMany["gone"] || !e.withoutMany["a"] {
		t.Fatalf("without ProposeMany: %v, want only a", e.withoutMany)
	}
	busy.inFlight = 0
}

// callFailed marks as an unknown outcome only what the ctx's end cut
// short after the call may have left, never a server's own answer.
func TestCallFailed(t *testing.T) {
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	remote := fmt.Errorf("no such thing: %w", errs.Conflict)
	for _, c := range []struct {
		ctx     context.Context
		err     error
		unknown bool
	}{
		{context.Background(), context.Canceled, false},
		{ended, context.Canceled, true},
		{ended, fmt.Errorf("peer x: reset: %w", peer.ErrUnreachable), true},
		{ended, fmt.Errorf("%w: %w", context.Canceled, peer.ErrNotSent), false},
		{ended, remote, false},
		{ended, fmt.Errorf("timeout: %w", errs.NoQuorum), false},
	} {
		if got := errors.Is(callFailed(c.ctx, c.err), errs.UnknownOutcome); got != c.unknown {
			t.Errorf("callFailed(%v, %v): unknown outcome %v, want %v", c.ctx.Err(), c.err, got, c.unknown)
		}
	}
}
