package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/peer"
)

// Coalescing writes. A write goes to its group's leader at once, in a call
// of its own, while fewer than sendsInFlight calls to that leader for that
// group are in flight: a lone writer waits for nothing. Past that, writes
// queue, and what is queued (up to sendBatchCommands and sendBatchBytes)
// goes in one ProposeMany call as soon as fewer than sendsInFlight calls
// are in flight again, or as soon as sendBatchFull writes have queued
// (while fewer than maxSendsInFlight calls are in flight). The batch is
// cut by the calls in flight and by size, never by a timer, as the
// servers' group commit is. It saves gRPC's per-call work on both sides,
// which was the largest part of a client-role write's CPU; the full-batch
// rule keeps writes from waiting at the client for a whole commit round
// while the server could already take them (without it, 64 writers over 3
// client nodes were 8% slower than with no coalescing; with it 12-14%
// faster, BenchmarkClientPut).
//
// Each command keeps its own dedup id and gets its own answer, so the
// retry loop of propose (write.go) is unchanged: a command the batch call
// failed for is sent again, alone or in the next batch, with the same id.
// A caller whose ctx ends before its batch call is sent takes its command
// back (surely not sent): the call carries only the commands of callers
// still waiting when it is sent. Once its call was sent, a caller that
// gives up gets an unknown outcome, as does one whose own call it was
// (the server may have committed it, or may still).

const (
	// sendsInFlight is how many calls to one leader for one group may be
	// in flight before writes queue.
	sendsInFlight = 2
	// sendBatchCommands and sendBatchBytes cut a batch (a first command
	// larger than sendBatchBytes goes alone).
	sendBatchCommands = 256
	sendBatchBytes    = 1 << 20
	// sendBatchFull queued writes go without waiting for a call to
	// return, up to maxSendsInFlight calls in flight.
	sendBatchFull    = 16
	maxSendsInFlight = 16
)

// sendKey names one queue: the writes of one group to one server.
type sendKey struct{ addr, group string }

// sendQueue holds the writes waiting for a call to addr for group.
type sendQueue struct {
	key      sendKey
	mu       sync.Mutex
	inFlight int
	queue    []*queuedSend
}

// queuedSend is one command waiting for, or riding in, a batch call.
type queuedSend struct {
	cmd      []byte
	deadline time.Time       // zero: the caller's ctx has none
	gone     <-chan struct{} // the caller's ctx.Done()
	done     chan struct{}
	// Set before done is closed.
	data []byte
	err  error
	// call is the batch call that took it (nil while queued); under the
	// queue's mu.
	call *batchCall
	// withdrawn: its caller left before the call was sent; under call.mu.
	withdrawn bool
}

// batchCall is one ProposeMany in flight; its ctx ends early once every
// caller in it gave up.
type batchCall struct {
	mu      sync.Mutex
	sent    bool // the call was made (with the callers not withdrawn); under mu
	waiting atomic.Int32
	cancel  context.CancelFunc
}

func (c *batchCall) leave() {
	if c.waiting.Add(-1) == 0 {
		c.cancel()
	}
}

// errBatchAbandoned is what a caller that left its batch call gets (with
// its ctx error): the call may have reached the server.
var errBatchAbandoned = fmt.Errorf("left a write call in flight: %w", errs.UnknownOutcome)

// sendQueue is the queue of addr and group (a lookup without a lock on
// every write).
func (e *Engine) sendQueue(addr, group string) *sendQueue {
	k := sendKey{addr, group}
	if q, ok := e.sends.Load(k); ok {
		return q.(*sendQueue)
	}
	q, _ := e.sends.LoadOrStore(k, &sendQueue{key: k})
	return q.(*sendQueue)
}

// pruneSends forgets the idle write queues of servers and groups the
// cluster no longer has, and which servers lacked ProposeMany (an address
// that comes back may be a newer server). Called by discovery with e.mu
// held.
func (e *Engine) pruneSends(addrs []string, groups map[string]bool) {
	e.sends.Range(func(k, v any) bool {
		key, q := k.(sendKey), v.(*sendQueue)
		if slices.Contains(addrs, key.addr) && groups[key.group] {
			return true
		}
		q.mu.Lock()
		idle := q.inFlight == 0 && len(q.queue) == 0
		q.mu.Unlock()
		if idle {
			// A sender that got q just before keeps using it alone.
			e.sends.CompareAndDelete(k, q)
		}
		return true
	})
	e.sendMu.Lock()
	defer e.sendMu.Unlock()
	for addr := range e.withoutMany {
		if !slices.Contains(addrs, addr) {
			delete(e.withoutMany, addr)
		}
	}
}

// send asks the server at addr to commit cmd, an encoded command of group,
// alone or in a batch call with other callers' commands.
func (e *Engine) send(ctx context.Context, addr, group string, cmd []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, notSent(err)
	}
	q := e.sendQueue(addr, group)
	q.mu.Lock()
	if q.inFlight < sendsInFlight && len(q.queue) == 0 {
		q.inFlight++
		q.mu.Unlock()
		defer e.sendDone(q)
		e.proposeCalls.Add(1)
		// A ctx error here may come after the call left: propose's
		// maybeApplied tells.
		return e.peers.Propose(ctx, addr, &peer.ProposeRequest{Group: group, Cmd: cmd})
	}
	w := &queuedSend{cmd: cmd, gone: ctx.Done(), done: make(chan struct{})}
	w.deadline, _ = ctx.Deadline()
	q.queue = append(q.queue, w)
	e.flushLocked(q)
	q.mu.Unlock()
	select {
	case <-w.done:
		return w.data, w.err
	case <-ctx.Done():
	}
	q.mu.Lock()
	call := w.call
	if call == nil {
		q.queue = slices.DeleteFunc(q.queue, func(x *queuedSend) bool { return x == w })
		q.mu.Unlock()
		return nil, notSent(ctx.Err())
	}
	q.mu.Unlock()
	select {
	case <-w.done: // an answer that is there wins
		return w.data, w.err
	default:
	}
	call.mu.Lock()
	sent := call.sent && !w.withdrawn
	w.withdrawn = !sent
	call.mu.Unlock()
	call.leave()
	if !sent {
		return nil, notSent(ctx.Err()) // the call went without it, or never
	}
	return nil, errBatchAbandoned
}

// notSent marks the ctx error of a write its caller took back before it
// was sent.
func notSent(ctxErr error) error { return fmt.Errorf("%w: %w", ctxErr, peer.ErrNotSent) }

// callFailed marks the error of a call that its ctx ended: unless the call
// surely never left, the server may have committed its commands (its own
// answer, which would tell, is lost with the ctx). A server's answer that
// came is passed on as it is.
func callFailed(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil || errors.Is(err, peer.ErrNotSent) || errors.Is(err, errs.UnknownOutcome) {
		return err
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && !errors.Is(err, peer.ErrUnreachable) {
		return err // the server's own answer
	}
	return fmt.Errorf("%w: %w", err, errs.UnknownOutcome)
}

// sendDone ends one call in flight and sends what queued meanwhile.
func (e *Engine) sendDone(q *sendQueue) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.inFlight--
	e.flushLocked(q)
}

// flushLocked sends what is queued as the rules above allow; q.mu is held.
func (e *Engine) flushLocked(q *sendQueue) {
	for len(q.queue) > 0 && (q.inFlight < sendsInFlight || (len(q.queue) >= sendBatchFull && q.inFlight < maxSendsInFlight)) {
		n := core.BatchLen(len(q.queue), func(i int) int { return len(q.queue[i].cmd) }, sendBatchCommands, sendBatchBytes)
		items := slices.Clone(q.queue[:n])
		q.queue = slices.Delete(q.queue, 0, n)
		ctx, cancel := core.BatchContext(e.life, n, func(i int) time.Time { return items[i].deadline })
		call := &batchCall{cancel: cancel}
		call.waiting.Store(int32(len(items)))
		for _, w := range items {
			w.call = call
		}
		q.inFlight++
		if !e.spawn(func() { e.sendBatch(ctx, q, items, call) }) {
			cancel()
			q.inFlight--
			for _, w := range items {
				w.err = errs.Closed // nothing was sent
				close(w.done)
			}
		}
	}
}

// sendBatch makes one call for the items whose callers still wait and
// hands each its answer.
func (e *Engine) sendBatch(ctx context.Context, q *sendQueue, items []*queuedSend, call *batchCall) {
	defer call.cancel()
	defer e.sendDone(q)
	now := time.Now()
	var live []*queuedSend
	call.mu.Lock()
	for _, w := range items {
		if w.withdrawn || left(w, now) {
			w.withdrawn = true // its caller returns its ctx error
			continue
		}
		live = append(live, w)
	}
	closed := e.life.Err() != nil
	call.sent = len(live) > 0 && !closed
	call.mu.Unlock()
	if closed {
		for _, w := range live {
			w.err = errs.Closed // nothing was sent
			close(w.done)
		}
		return
	}
	if len(live) == 0 {
		return
	}
	answers := e.proposeMany(ctx, q.key, live)
	for i, w := range live {
		w.data, w.err = answers[i].Data, answers[i].Err
		close(w.done)
	}
}

// left tells whether w's caller's ctx has ended (or its deadline passed,
// before its timer fired).
func left(w *queuedSend, now time.Time) bool {
	select {
	case <-w.gone:
		return true
	default:
	}
	return !w.deadline.IsZero() && !now.Before(w.deadline)
}

// proposeMany sends items in one call (one alone goes as a Propose), or
// one by one to a server without ProposeMany.
func (e *Engine) proposeMany(ctx context.Context, k sendKey, items []*queuedSend) []peer.ProposeAnswer {
	answers := make([]peer.ProposeAnswer, len(items))
	if len(items) > 1 && !e.noProposeMany(k.addr) {
		req := &peer.ProposeManyRequest{Group: k.group, Cmds: make([][]byte, len(items))}
		for i, w := range items {
			req.Cmds[i] = w.cmd
		}
		e.manyCalls.Add(1)
		e.manyCommands.Add(int64(len(items)))
		got, err := e.peers.ProposeMany(ctx, k.addr, req)
		if err == nil {
			return got // the server's own answers, as they are
		}
		if !errors.Is(err, peer.ErrUnimplemented) {
			err = e.batchCallFailed(ctx, err)
			for i := range answers {
				answers[i].Err = err
			}
			return answers
		}
		e.sendMu.Lock()
		e.withoutMany[k.addr] = true
		e.sendMu.Unlock()
	}
	var wg sync.WaitGroup
	for i, w := range items {
		e.proposeCalls.Add(1)
		wg.Go(func() {
			data, err := e.peers.Propose(ctx, k.addr, &peer.ProposeRequest{Group: k.group, Cmd: w.cmd})
			answers[i] = peer.ProposeAnswer{Data: data, Err: e.batchCallFailed(ctx, err)}
		})
	}
	wg.Wait()
	return answers
}

// batchCallFailed is callFailed for a call of a batch, whose ctx is the
// engine's: a call Close kept from leaving is ErrClosed.
func (e *Engine) batchCallFailed(ctx context.Context, err error) error {
	err = callFailed(ctx, err)
	if errors.Is(err, peer.ErrNotSent) && e.life.Err() != nil {
		return errs.Closed
	}
	return err
}

// noProposeMany tells whether the server at addr answered a ProposeMany
// as a server without it (an earlier version).
func (e *Engine) noProposeMany(addr string) bool {
	e.sendMu.Lock()
	defer e.sendMu.Unlock()
	return e.withoutMany[addr]
}

// QueuedWrites is how many writes wait in the engine's queues (tests).
func (e *Engine) QueuedWrites() int {
	n := 0
	e.sends.Range(func(_, v any) bool {
		q := v.(*sendQueue)
		q.mu.Lock()
		n += len(q.queue)
		q.mu.Unlock()
		return true
	})
	return n
}

// WriteCalls counts the calls this engine made for writes: Propose calls,
// ProposeMany calls and the commands those carried.
func (e *Engine) WriteCalls() (proposes, manys, commandsInMany int64) {
	return e.proposeCalls.Load(), e.manyCalls.Load(), e.manyCommands.Load()
}
