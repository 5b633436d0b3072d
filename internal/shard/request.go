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
func (h *Host) Propose(ctx context.Context, shardID uint64, cmd []byte) (fsm.Result, error) {
	r, _, err := h.attempt(ctx, shardID, func(t time.Duration) (*dragonboat.RequestState, error) {
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
		if !errors.Is(err, dragonboat.ErrShardNotInitialized) {
			return nil, translate(err)
		}
		if err := pause(ctx, &backoff); err != nil {
			return nil, err
		}
	}
}

// WaitApplied returns once the local replica of shardID has applied index.
func (h *Host) WaitApplied(ctx context.Context, shardID, index uint64) error {
	m := h.machine(shardID)
	if m == nil {
		return fmt.Errorf("shard %d is not running here: %w", shardID, errs.GroupNotFound)
	}
	return m.WaitApplied(ctx, index)
}

// attempt runs start until its request completes, retrying what an
// election or a busy engine causes. Each try gets a deadline of its own and
// is abandoned as soon as the leader changes.
func (h *Host) attempt(ctx context.Context, shardID uint64,
	start func(time.Duration) (*dragonboat.RequestState, error)) (dragonboat.RequestResult, *dragonboat.RequestState, error) {
	var last error
	backoff := time.Millisecond
	for {
		if h.closed.Load() {
			return dragonboat.RequestResult{}, nil, errs.Closed
		}
		if err := ctx.Err(); err != nil {
			return dragonboat.RequestResult{}, nil, ctxError(err, last)
		}
		changed := h.leaderChanged(shardID)
		rs, err := start(h.attemptTimeout(ctx))
		if err != nil {
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
				return r, nil, errs.Closed
			case r.Rejected():
				// Only config changes are rejected (another change pending, or
				// the change is already in place); the caller decides.
				return r, nil, errRejected
			case r.Timeout():
				last = dragonboat.ErrTimeout
			default: // dropped, aborted, rejected: no leader or a change in progress
				last = dragonboat.ErrShardNotReady
				if err := pause(ctx, &backoff); err != nil {
					return r, nil, ctxError(err, last)
				}
			}
		case <-changed:
			last = errLeaderChanged
		case <-ctx.Done():
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
		errs.GroupNotFound, errs.LeaseNotFound, errs.TooLarge, errs.Invalid, errs.Closed} {
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
