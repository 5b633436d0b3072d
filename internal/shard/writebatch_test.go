package shard

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// leaderlessHost runs shard 7 as one of three replicas whose peers never
// start: the shard never has a leader, so no proposal is ever submitted.
func leaderlessHost(t *testing.T) *Host {
	t.Helper()
	addr := freeAddr(t)
	h, err := NewHost(Config{NodeID: 1, DataDir: t.TempDir(), RaftAddr: addr,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.StartShard(7, map[uint64]string{1: addr, 2: freeAddr(t), 3: freeAddr(t)}, false); err != nil {
		h.Close()
		t.Fatal(err)
	}
	h.SetBatching(true)
	return h
}

func txnCmd(t *testing.T, seq uint64) []byte {
	t.Helper()
	cmd, err := fsm.EncodeCommand(&fsm.Command{Session: 9, Seq: seq, Mark: 1, Kind: fsm.KindTxn,
		Txn: &fsm.Txn{Then: []fsm.Op{{Type: fsm.OpPut, Key: "k", Value: []byte("v")}}}})
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

type proposeOutcome struct {
	err     error
	elapsed time.Duration
}

func goPropose(h *Host, ctx context.Context, cmd []byte) <-chan proposeOutcome {
	out := make(chan proposeOutcome, 1)
	go func() {
		start := time.Now()
		_, err := h.Propose(ctx, 7, cmd)
		out <- proposeOutcome{err, time.Since(start)}
	}()
	return out
}

// TestBatchedWriteNeverSubmittedIsNotUnknownOutcome: with no leader nothing
// is ever handed to the engine. A write proposed alone then ends with its
// ctx error joined with ErrNoQuorum (surely not applied); a write that
// queued for a batch must say the same, not ErrUnknownOutcome.
func TestBatchedWriteNeverSubmittedIsNotUnknownOutcome(t *testing.T) {
	h := leaderlessHost(t)
	defer h.Close()
	var submitted atomic.Int32
	h.SetSubmitHook(func(uint64) { submitted.Add(1) })

	// Two writes fill the in-flight slots (they go alone).
	c1, cancel1 := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel1()
	c2, cancel2 := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel2()
	a1, a2 := goPropose(h, c1, txnCmd(t, 1)), goPropose(h, c2, txnCmd(t, 2))
	time.Sleep(30 * time.Millisecond)
	// Two more queue; once the first two end they go as one batch, which
	// waits for a leader that never comes.
	c3, cancel3 := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel3()
	c4, cancel4 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel4()
	q3, q4 := goPropose(h, c3, txnCmd(t, 3)), goPropose(h, c4, txnCmd(t, 4))

	for i, ch := range []<-chan proposeOutcome{a1, a2} {
		o := <-ch
		t.Logf("write %d alone: %v", i+1, o.err)
		if !errors.Is(o.err, errs.NoQuorum) || errors.Is(o.err, errs.UnknownOutcome) {
			t.Errorf("write %d alone: %v, want ctx error + ErrNoQuorum", i+1, o.err)
		}
	}
	o3 := <-q3
	t.Logf("write 3 queued, then batched (after %v): %v", o3.elapsed, o3.err)
	if submitted.Load() != 0 {
		t.Fatalf("%d proposals submitted to a shard with no leader", submitted.Load())
	}
	if errors.Is(o3.err, errs.UnknownOutcome) || !errors.Is(o3.err, context.DeadlineExceeded) || !errors.Is(o3.err, errs.NoQuorum) {
		t.Errorf("write 3 (never submitted: no leader) got %v; want context.DeadlineExceeded + ErrNoQuorum, as alone", o3.err)
	}
	cancel4()
	o4 := <-q4
	t.Logf("write 4: %v", o4.err)
}

// TestBatchedWriteAtCloseIsErrClosed: a write whose ctx is live when the
// host closes gets ErrClosed (alone it does); a batched one must not get
// context.Canceled, which is not its ctx's error.
func TestBatchedWriteAtCloseIsErrClosed(t *testing.T) {
	h := leaderlessHost(t)
	defer h.Close()

	c1, cancel1 := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel1()
	c2, cancel2 := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel2()
	a1, a2 := goPropose(h, c1, txnCmd(t, 1)), goPropose(h, c2, txnCmd(t, 2))
	time.Sleep(30 * time.Millisecond)
	ctx := context.Background() // no deadline: waits until Close
	q3, q4 := goPropose(h, ctx, txnCmd(t, 3)), goPropose(h, ctx, txnCmd(t, 4))
	<-a1
	<-a2
	time.Sleep(100 * time.Millisecond) // the batch [3 4] waits for a leader
	// For contrast: a write alone at Close.
	alone := make(chan error, 1)
	go func() {
		_, err := h.proposeAlone(ctx, 7, txnCmd(t, 5))
		alone <- err
	}()
	time.Sleep(50 * time.Millisecond)
	h.Close()
	errAlone := <-alone
	t.Logf("alone at Close: %v", errAlone)
	for i, ch := range []<-chan proposeOutcome{q3, q4} {
		o := <-ch
		t.Logf("batched write %d at Close: %v", i+3, o.err)
		if !errors.Is(o.err, errs.Closed) || errors.Is(o.err, context.Canceled) {
			t.Errorf("batched write %d with a live ctx at Close: %v; want ErrClosed (alone: %v)", i+3, o.err, errAlone)
		}
	}
}

// TestWriteBatcherSettlesUnderCancelStorm: many writers with random short
// deadlines and cancels on a one-replica shard all return, and afterwards
// nothing is in flight or queued (no accounting drift, no lost wakeup).
func TestWriteBatcherSettlesUnderCancelStorm(t *testing.T) {
	addr := freeAddr(t)
	h, err := NewHost(Config{NodeID: 1, DataDir: t.TempDir(), RaftAddr: addr,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.StartShard(7, map[uint64]string{1: addr}, false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.WaitLeader(ctx, 7); err != nil {
		t.Fatal(err)
	}
	h.SetBatching(true)
	var seq atomic.Uint64
	var ok, unknown, ctxErr atomic.Int64
	done := make(chan struct{})
	const writers = 48
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 60 {
				d := time.Duration((w*7+i*13)%5) * time.Millisecond
				c, cc := context.WithTimeout(ctx, d+200*time.Microsecond)
				if i%3 == 0 {
					c, cc = context.WithTimeout(ctx, 5*time.Second)
				}
				_, err := h.Propose(c, 7, txnCmd(t, seq.Add(1)))
				cc()
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, errs.UnknownOutcome):
					unknown.Add(1)
				case errors.Is(err, context.DeadlineExceeded):
					ctxErr.Add(1)
				default:
					t.Errorf("propose: %v", err)
				}
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("writers hang")
	}
	t.Logf("ok %d unknown %d ctx %d", ok.Load(), unknown.Load(), ctxErr.Load())
	b := h.writeBatcher(7)
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		inFlight, queued := b.inFlight, len(b.queue)
		b.mu.Unlock()
		if inFlight == 0 && queued == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after all writers returned: %d in flight, %d queued", inFlight, queued)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ProposeMany hands its commands to the shard's queue together: with
// nothing in flight they go as one entry (not the first alone and the rest
// a round later), each with its own result (consecutive revisions, and a
// command that is not batchable proposed on its own). On a leaderless
// shard the callers' ctx ends them before anything is submitted: the ctx
// error, never an unknown outcome.
func TestProposeManySharesOneEntry(t *testing.T) {
	addr := freeAddr(t)
	h, err := NewHost(Config{NodeID: 1, DataDir: t.TempDir(), RaftAddr: addr,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.StartShard(7, map[uint64]string{1: addr}, false); err != nil {
		t.Fatal(err)
	}
	h.SetBatching(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.WaitLeader(ctx, 7); err != nil {
		t.Fatal(err)
	}
	var submitted atomic.Int32
	h.SetSubmitHook(func(uint64) { submitted.Add(1) })
	cmds := make([][]byte, 10)
	for i := range cmds {
		cmds[i] = txnCmd(t, uint64(i+1))
	}
	grant, err := fsm.EncodeCommand(&fsm.Command{Session: 9, Seq: 11, Mark: 1, Kind: fsm.KindLeaseGrant,
		Grant: &fsm.LeaseGrant{ID: 5, TTL: 60_000}})
	if err != nil {
		t.Fatal(err)
	}
	res, fails := h.ProposeMany(ctx, 7, append(cmds, grant))
	if n := submitted.Load(); n != 2 {
		t.Fatalf("%d entries submitted for 10 txns and a lease grant, want 2", n)
	}
	if fails[10] != nil {
		t.Fatalf("lease grant: %v", fails[10])
	}
	if lr, err := fsm.DecodeLeaseResult(res[10]); err != nil || lr.ID != 5 {
		t.Fatalf("lease grant: %+v %v", lr, err)
	}
	for i := range cmds {
		if fails[i] != nil {
			t.Fatalf("command %d: %v", i, fails[i])
		}
		tr, err := fsm.DecodeResult(res[i])
		if err != nil || !tr.Succeeded {
			t.Fatalf("command %d: %+v %v", i, tr, err)
		}
		if first, _ := fsm.DecodeResult(res[0]); tr.Revision != first.Revision+int64(i) {
			t.Fatalf("command %d at revision %d, want %d", i, tr.Revision, first.Revision+int64(i))
		}
	}

	lh := leaderlessHost(t)
	defer lh.Close()
	lh.SetSubmitHook(func(uint64) { submitted.Add(1) })
	submitted.Store(0)
	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	_, fails = lh.ProposeMany(short, 7, cmds[:3])
	for i, err := range fails {
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errs.UnknownOutcome) {
			t.Fatalf("command %d on a leaderless shard: %v, want the deadline alone", i, err)
		}
	}
	if submitted.Load() != 0 {
		t.Fatal("a leaderless shard was handed an entry")
	}
}
