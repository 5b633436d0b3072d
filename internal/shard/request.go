package shard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lni/dragonboat/v4"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// errLeaderChanged marks an attempt abandoned because the shard's leader
// changed while it was in flight; the proposal is sent again at once (the
// state machine's dedup table makes that safe).
var errLeaderChanged = errors.New("leader changed")

// errRejected reports a config change the shard refused.
var errRejected = errors.New("config change rejected")

// maxBackoff caps the pause between tries when the shard has no leader.
const maxBackoff = 50 * time.Millisecond

// Propose commits cmd through Raft on shardID and returns what the state
// machine's Update returned for it. Temporary engine errors are retried
// until ctx ends; cmd must therefore carry a dedup id.
//
// An error means the command was surely not applied, except one wrapping
// errs.UnknownOutcome (joined with the ctx error when ctx ended): some try
// reached the engine and ended without an answer (a timeout, a leader
// change, Close), so the command may have been applied, or may still be.
func (h *Host) Propose(ctx context.Context, shardID uint64, cmd []byte) (fsm.Result, error) {
	if h.batching.Load() && fsm.Batchable(cmd) && len(cmd) <= fsm.MaxBatchBytes/2 {
		return h.proposeBatched(ctx, shardID, cmd)
	}
	return h.proposeAlone(ctx, shardID, cmd)
}

// proposeAlone proposes cmd as an entry of its own.
func (h *Host) proposeAlone(ctx context.Context, shardID uint64, cmd []byte) (fsm.Result, error) {
	var unsure bool
	res, err := h.propose(ctx, shardID, cmd, &unsure)
	if err != nil && unsure {
		return fsm.Result{}, unknownOutcome(ctx, err)
	}
	return res, err
}

// propose commits one entry; *unsure is set when an error leaves its
// outcome unknown (see attempt).
func (h *Host) propose(ctx context.Context, shardID uint64, cmd []byte, unsure *bool) (fsm.Result, error) {
	r, _, err := h.attempt(ctx, shardID, unsure, func(t time.Duration) (*dragonboat.RequestState, error) {
		return h.nh.Propose(h.nh.GetNoOPSession(shardID), cmd, t)
	})
	if err != nil {
		return fsm.Result{}, err
	}
	res := r.GetResult()
	return fsm.Result{Value: res.Value, Data: res.Data}, nil
}

// StaleRead answers q from the local replica as it is now.
func (h *Host) StaleRead(ctx context.Context, shardID uint64, q any) (any, error) {
	backoff := time.Millisecond
	for {
		v, err := h.nh.StaleRead(shardID, q)
		if err == nil {
			return v, nil
		}
		if retry, werr := h.waitRegistered(ctx, shardID, err); retry {
			continue
		} else if werr != nil {
			return nil, werr
		}
		if !errors.Is(err, dragonboat.ErrShardNotInitialized) {
			return nil, translate(err)
		}
		if err := pause(ctx, &backoff); err != nil {
			return nil, err
		}
	}
}

// WaitRevision returns once the local replica of shardID has reached
// revision rev.
func (h *Host) WaitRevision(ctx context.Context, shardID uint64, rev int64) error {
	m := h.machine(shardID)
	if m == nil {
		return fmt.Errorf("shard %d is not running here: %w", shardID, errs.GroupNotFound)
	}
	return m.WaitRevision(ctx, rev)
}

// attempt runs start until its request completes, retrying what an
// election or a busy engine causes. Each try gets a deadline of its own and
// is abandoned as soon as the leader changes. When unsure is not nil it is
// set once a try that the engine accepted ends without an answer (timeout,
// leader change, ctx end, Close): such a request may still complete.
func (h *Host) attempt(ctx context.Context, shardID uint64, unsure *bool,
	start func(time.Duration) (*dragonboat.RequestState, error)) (dragonboat.RequestResult, *dragonboat.RequestState, error) {
	var last error
	backoff := time.Millisecond
	pending := func() {
		if unsure != nil {
			*unsure = true
		}
	}
	for {
		if h.closed.Load() || h.refusing.Load() {
			return dragonboat.RequestResult{}, nil, errs.Closed
		}
		if err := ctx.Err(); err != nil {
			return dragonboat.RequestResult{}, nil, ctxError(err, last)
		}
		changed := h.leaderChanged(shardID)
		if _, ok := h.Leader(shardID); !ok && unsure != nil && h.Running(shardID) {
			// No leader known: the engine would drop a proposal anyway.
			// Not submitting it keeps "surely not applied" knowable.
			last = dragonboat.ErrShardNotReady
			if err := waitChange(ctx, changed, &backoff); err != nil {
				return dragonboat.RequestResult{}, nil, ctxError(err, last)
			}
			continue
		}
		rs, err := start(h.attemptTimeout(ctx))
		if err == nil && unsure != nil {
			if hook := h.submitHook.Load(); hook != nil {
				(*hook)(shardID)
			}
		}
		if err != nil {
			if retry, werr := h.waitRegistered(ctx, shardID, err); retry {
				continue
			} else if werr != nil {
				return dragonboat.RequestResult{}, nil, ctxError(werr, last)
			}
			if !temporary(err) {
				return dragonboat.RequestResult{}, nil, translate(err)
			}
			last = err
			if err := pause(ctx, &backoff); err != nil {
				return dragonboat.RequestResult{}, nil, ctxError(err, last)
			}
			continue
		}
		select {
		case r := <-rs.ResultC():
			switch {
			case r.Completed():
				return r, rs, nil
			case r.Terminated():
				pending()
				return r, nil, errs.Closed
			case r.Rejected():
				// Only config changes are rejected (another change pending, or
				// the change is already in place); the caller decides.
				return r, nil, errRejected
			case r.Timeout():
				pending()
				last = dragonboat.ErrTimeout
			case r.Dropped():
				// Never entered a log: no leader, or a leader transfer.
				last = dragonboat.ErrShardNotReady
				if err := pause(ctx, &backoff); err != nil {
					return r, nil, ctxError(err, last)
				}
			default: // aborted: the engine gave up on it, wherever it got to
				pending()
				last = dragonboat.ErrShardNotReady
				if err := pause(ctx, &backoff); err != nil {
					return r, nil, ctxError(err, last)
				}
			}
		case <-changed:
			// A result that is already there wins over the news.
			select {
			case r := <-rs.ResultC():
				if r.Completed() {
					return r, rs, nil
				}
				if !r.Dropped() {
					pending()
				}
			default:
				pending()
			}
			last = errLeaderChanged
		case <-ctx.Done():
			select {
			case r := <-rs.ResultC():
				if r.Completed() {
					return r, rs, nil
				}
				if !r.Dropped() {
					pending()
				}
			default:
				pending()
			}
			return dragonboat.RequestResult{}, nil, ctxError(ctx.Err(), last)
		}
	}
}

func (h *Host) attemptTimeout(ctx context.Context) time.Duration {
	t := h.cfg.AttemptTimeout
	if d, ok := ctx.Deadline(); ok {
		if left := time.Until(d); left < t {
			t = left
		}
	}
	// dragonboat refuses a timeout below one RTT; ctx still ends the try.
	return max(t, 2*h.cfg.RTT)
}

// unknownOutcome is the error of a proposal that may have been applied:
// ErrUnknownOutcome, joined with the ctx error when ctx ended, and nothing
// that means "not applied" (ErrNoQuorum, ErrClosed): err's text only.
func unknownOutcome(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("the write may have been applied (%v): %w: %w", err, ctxErr, errs.UnknownOutcome)
	}
	return fmt.Errorf("the write may have been applied (%v): %w", err, errs.UnknownOutcome)
}

// SetSubmitHook installs (nil removes) a function called each time a
// proposal was handed to the engine; for tests.
func (h *Host) SetSubmitHook(f func(shardID uint64)) {
	if f == nil {
		h.submitHook.Store(nil)
		return
	}
	h.submitHook.Store(&f)
}

// waitChange waits for a leader change, or *backoff (doubled up to
// maxBackoff), or ctx.
func waitChange(ctx context.Context, changed <-chan struct{}, backoff *time.Duration) error {
	t := time.NewTimer(*backoff)
	defer t.Stop()
	*backoff = min(*backoff*2, maxBackoff)
	select {
	case <-changed:
		return nil
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pause sleeps for *backoff (doubling it up to maxBackoff) or until ctx ends.
func pause(ctx context.Context, backoff *time.Duration) error {
	t := time.NewTimer(*backoff)
	defer t.Stop()
	*backoff = min(*backoff*2, maxBackoff)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ctxError returns the ctx error as it is, joined with ErrNoQuorum when the
// tries failed for want of a leader, so callers can tell "slow" from "no
// majority" while errors.Is(err, context.DeadlineExceeded) still holds.
func ctxError(ctxErr, last error) error {
	if last != nil && !errors.Is(last, dragonboat.ErrTimeout) {
		return fmt.Errorf("%w (last try: %v): %w", ctxErr, last, errs.NoQuorum)
	}
	return ctxErr
}

func isDisterError(err error) bool {
	for _, s := range []error{errs.NotFound, errs.Conflict, errs.Compacted, errs.NoQuorum,
		errs.GroupNotFound, errs.LeaseNotFound, errs.TooLarge, errs.Invalid, errs.Closed, errs.UnknownOutcome} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// temporary reports the engine errors that a later try may not meet.
func temporary(err error) bool {
	return errors.Is(err, dragonboat.ErrShardNotReady) ||
		errors.Is(err, dragonboat.ErrSystemBusy) ||
		errors.Is(err, dragonboat.ErrShardNotInitialized) ||
		errors.Is(err, dragonboat.ErrAborted) ||
		errors.Is(err, dragonboat.ErrRejected) ||
		errors.Is(err, dragonboat.ErrTimeout)
}

// translate is the one place where dragonboat's errors become dister's.
// Errors that already carry a dister sentinel (from the state machine's
// Lookup) pass as they are.
func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case isDisterError(err):
		return err
	case errors.Is(err, dragonboat.ErrClosed), errors.Is(err, dragonboat.ErrShardClosed):
		return errs.Closed
	case errors.Is(err, dragonboat.ErrShardNotFound):
		return fmt.Errorf("shard not running on this server: %w", errs.GroupNotFound)
	case errors.Is(err, dragonboat.ErrPayloadTooBig):
		return fmt.Errorf("%v: %w", err, errs.TooLarge)
	case errors.Is(err, dragonboat.ErrTimeout):
		return context.DeadlineExceeded
	case errors.Is(err, dragonboat.ErrCanceled):
		return context.Canceled
	case errors.Is(err, dragonboat.ErrInvalidAddress), errors.Is(err, dragonboat.ErrInvalidShardSettings),
		errors.Is(err, dragonboat.ErrInvalidTarget), errors.Is(err, dragonboat.ErrInvalidOperation):
		return fmt.Errorf("%v: %w", err, errs.Invalid)
	case temporary(err):
		return fmt.Errorf("%v: %w", err, errs.NoQuorum)
	}
	// Whatever else the engine reports means it cannot serve the request;
	// the cause stays readable in the message.
	return fmt.Errorf("raft engine: %v: %w", err, errs.NoQuorum)
}
