package shard

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// Group commit. A txn proposal goes to the engine at once while fewer than
// maxWritesInFlight proposals of its shard are in flight: a lone writer
// waits for nothing. Past that the engine is busy, and proposals queue;
// each time one in flight completes, everything queued (up to
// fsm.MaxBatchCommands and fsm.MaxBatchBytes) goes as one batch entry.
// The batch is cut by the engine being busy and by size, never by a timer.
//
// Every command in a batch keeps its own dedup id, so a batch retried
// after a leader change or a timeout applies each command once, and a
// caller's later retry of its own command alone is answered from the
// table. A command whose caller gave up while it was still queued was
// never submitted: that caller gets its ctx error (surely not applied).
// The batch is built when it first goes to the engine, without the
// callers that left before. Once submitted, a caller that gives up gets
// ErrUnknownOutcome, as for a proposal of its own.

// maxWritesInFlight is how many proposals of one shard may be in the
// engine before further writes queue for a batch. More than one keeps the
// engine's pipeline full (dragonboat takes every proposal waiting at each
// step into one log write). BenchmarkPut at 64 and 256 writers, run with
// 2, 8 and 64 in flight, was best with 2 (ops/s and p99 at 256).
const maxWritesInFlight = 2

// writeBatcher queues one shard's writes while the engine is busy.
type writeBatcher struct {
	mu       sync.Mutex
	inFlight int
	queue    []*queuedWrite
}

// queuedWrite is one caller's command waiting for a batch.
type queuedWrite struct {
	cmd      []byte
	deadline time.Time // zero: the caller's ctx has none
	done     chan struct{}
	// Set before done is closed.
	res    fsm.Result
	err    error
	unsure bool // err: the batch may have applied
	// flush is the batch that took it (nil while queued); under mu.
	flush *writeFlush
	// withdrawn: its caller left before the flush first reached the
	// engine; under flush.mu.
	withdrawn bool
}

// writeFlush is one batch in flight: its attempt ends early once every
// caller in it gave up.
type writeFlush struct {
	mu        sync.Mutex
	submitted bool // the entry was handed to the engine (frozen); under mu
	waiting   atomic.Int32
	cancel    context.CancelFunc
}

func (f *writeFlush) leave() {
	if f.waiting.Add(-1) == 0 {
		f.cancel()
	}
}

// SetBatching turns group commit on or off (see the top of this file).
// The engine turns it on once every server of the cluster can apply batch
// entries.
func (h *Host) SetBatching(on bool) { h.batching.Store(on) }

func (h *Host) writeBatcher(shardID uint64) *writeBatcher {
	h.mu.Lock()
	defer h.mu.Unlock()
	b := h.writers[shardID]
	if b == nil {
		b = &writeBatcher{}
		h.writers[shardID] = b
	}
	return b
}

// proposeBatched is Propose for a batchable command with group commit on.
func (h *Host) proposeBatched(ctx context.Context, shardID uint64, cmd []byte) (fsm.Result, error) {
	b := h.writeBatcher(shardID)
	b.mu.Lock()
	if b.inFlight < maxWritesInFlight && len(b.queue) == 0 {
		b.inFlight++
		b.mu.Unlock()
		res, err := h.proposeAlone(ctx, shardID, cmd)
		h.writeDone(shardID, b)
		return res, err
	}
	w := &queuedWrite{cmd: cmd, done: make(chan struct{})}
	w.deadline, _ = ctx.Deadline()
	b.queue = append(b.queue, w)
	b.mu.Unlock()
	return h.await(ctx, shardID, b, w)
}

// ProposeMany is Propose for each of cmds (commands of callers that share
// ctx, such as one client's coalesced writes): with group commit on they
// join the shard's queue together and go in the same batch entries, rather
// than the first going alone and the rest a round later.
func (h *Host) ProposeMany(ctx context.Context, shardID uint64, cmds [][]byte) ([]fsm.Result, []error) {
	res, fails := make([]fsm.Result, len(cmds)), make([]error, len(cmds))
	queued := make([]*queuedWrite, len(cmds))
	var b *writeBatcher
	if h.batching.Load() {
		b = h.writeBatcher(shardID)
		deadline, _ := ctx.Deadline()
		b.mu.Lock()
		for i, cmd := range cmds {
			if fsm.Batchable(cmd) && len(cmd) <= fsm.MaxBatchBytes/2 {
				queued[i] = &queuedWrite{cmd: cmd, deadline: deadline, done: make(chan struct{})}
				b.queue = append(b.queue, queued[i])
			}
		}
		h.flushQueued(shardID, b)
		b.mu.Unlock()
	}
	// What could not be queued is proposed alone, meanwhile; the queued
	// ones share ctx, so waiting for them in turn loses nothing.
	var wg sync.WaitGroup
	for i, cmd := range cmds {
		if queued[i] == nil {
			wg.Go(func() { res[i], fails[i] = h.proposeAlone(ctx, shardID, cmd) })
		}
	}
	for i, w := range queued {
		if w != nil {
			res[i], fails[i] = h.await(ctx, shardID, b, w)
		}
	}
	wg.Wait()
	return res, fails
}

// await waits for the outcome of w, queued in b.
func (h *Host) await(ctx context.Context, shardID uint64, b *writeBatcher, w *queuedWrite) (fsm.Result, error) {
	select {
	case <-w.done:
		return h.outcome(ctx, shardID, w)
	case <-ctx.Done():
	}
	b.mu.Lock()
	flush := w.flush
	if flush == nil {
		// Never submitted: surely not applied.
		b.queue = slices.DeleteFunc(b.queue, func(q *queuedWrite) bool { return q == w })
		b.mu.Unlock()
		return fsm.Result{}, h.notSubmitted(ctx, shardID)
	}
	b.mu.Unlock()
	select {
	case <-w.done: // an answer that is there wins
		return h.outcome(ctx, shardID, w)
	default:
	}
	flush.mu.Lock()
	submitted := flush.submitted
	w.withdrawn = !submitted
	flush.mu.Unlock()
	flush.leave()
	if !submitted {
		// The flush never reached the engine with it: surely not applied.
		return fsm.Result{}, h.notSubmitted(ctx, shardID)
	}
	return fsm.Result{}, unknownOutcome(ctx, ctx.Err())
}

// outcome is what a queued write's caller gets once its batch ended.
func (h *Host) outcome(ctx context.Context, shardID uint64, w *queuedWrite) (fsm.Result, error) {
	switch {
	case w.err == nil:
		return w.res, nil
	case w.unsure:
		return fsm.Result{}, unknownOutcome(ctx, w.err)
	case errors.Is(w.err, context.DeadlineExceeded) && deadlinePassed(ctx):
		// The batch ran out of the time of its most patient caller, so
		// this caller's ctx has ended too (its timer may fire a moment
		// later): the batch never reached the engine, and the caller
		// learns why, as when it leaves the queue.
		<-ctx.Done()
		return fsm.Result{}, h.notSubmitted(ctx, shardID)
	}
	return fsm.Result{}, w.err
}

// notSubmitted is the error of a write whose caller's ctx ended before it
// reached the engine: the ctx error, joined with ErrNoQuorum when the
// shard has no leader (what a write of its own would have met).
func (h *Host) notSubmitted(ctx context.Context, shardID uint64) error {
	var last error
	if _, ok := h.Leader(shardID); !ok {
		last = dragonboat.ErrShardNotReady
	}
	return ctxError(ctx.Err(), last)
}

// writeDone ends one proposal in flight and sends what queued meanwhile.
func (h *Host) writeDone(shardID uint64, b *writeBatcher) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inFlight--
	h.flushQueued(shardID, b)
}

// flushQueued sends what is queued in batches while fewer than
// maxWritesInFlight are in flight; b.mu is held.
func (h *Host) flushQueued(shardID uint64, b *writeBatcher) {
	for b.inFlight < maxWritesInFlight && len(b.queue) > 0 {
		n := core.BatchLen(len(b.queue), func(i int) int { return len(b.queue[i].cmd) }, fsm.MaxBatchCommands, fsm.MaxBatchBytes)
		items := slices.Clone(b.queue[:n])
		b.queue = slices.Delete(b.queue, 0, n)
		if !h.startFlush(shardID, b, items) {
			return
		}
	}
}

// startFlush hands items to a goroutine that proposes them as one entry;
// b.mu is held. It reports false (and fails items with ErrClosed: nothing
// was submitted) once the host is closed.
func (h *Host) startFlush(shardID uint64, b *writeBatcher, items []*queuedWrite) bool {
	// rounds.Add must not race Close's rounds.Wait (see joinRound).
	h.mu.Lock()
	closed := h.closed.Load()
	if !closed {
		h.rounds.Add(1)
	}
	h.mu.Unlock()
	if closed {
		for _, w := range items {
			w.err = errs.Closed
			close(w.done)
		}
		for _, w := range b.queue {
			w.err = errs.Closed
			close(w.done)
		}
		b.queue = nil
		return false
	}
	// The batch is tried for as long as its most patient caller waits.
	ctx, cancel := core.BatchContext(h.life, len(items), func(i int) time.Time { return items[i].deadline })
	f := &writeFlush{cancel: cancel}
	f.waiting.Store(int32(len(items)))
	for _, w := range items {
		w.flush = f
	}
	b.inFlight++
	go h.flushWrites(ctx, shardID, b, items, f)
	return true
}

// flushWrites proposes items as one entry (a batch, or the command itself
// when it is alone) and gives each its own result. The entry is built when
// it first goes to the engine, from the items whose callers still wait.
func (h *Host) flushWrites(ctx context.Context, shardID uint64, b *writeBatcher, items []*queuedWrite, f *writeFlush) {
	defer h.rounds.Done()
	defer h.writeDone(shardID, b)
	defer f.cancel()
	var (
		live  []*queuedWrite
		entry []byte
	)
	var unsure bool
	r, _, err := h.attempt(ctx, shardID, &unsure, func(t time.Duration) (*dragonboat.RequestState, error) {
		if entry == nil {
			f.mu.Lock()
			live = live[:0]
			for _, w := range items {
				if !w.withdrawn {
					live = append(live, w)
				}
			}
			switch len(live) {
			case 0:
				f.mu.Unlock()
				return nil, context.Canceled
			case 1:
				entry = live[0].cmd
			default:
				cmds := make([][]byte, len(live))
				for i, w := range live {
					cmds[i] = w.cmd
				}
				var err error
				if entry, err = fsm.EncodeBatch(cmds); err != nil {
					f.mu.Unlock()
					return nil, err
				}
			}
			f.submitted = true
			f.mu.Unlock()
		}
		return h.nh.Propose(h.nh.GetNoOPSession(shardID), entry, t)
	})
	if err != nil && !unsure && h.closed.Load() {
		err = errs.Closed // the host's end, not a caller's ctx
	}
	if live == nil {
		live = items
	}
	var rs []fsm.Result
	if err == nil {
		res := r.GetResult()
		if len(live) == 1 {
			rs = []fsm.Result{{Value: res.Value, Data: res.Data}}
		} else {
			rs, err = fsm.SplitBatchResult(fsm.Result{Value: res.Value, Data: res.Data}, len(live))
		}
	}
	for i, w := range live {
		if err != nil {
			w.err, w.unsure = err, unsure
		} else {
			w.res = rs[i]
		}
		close(w.done)
	}
}

func deadlinePassed(ctx context.Context) bool {
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}
