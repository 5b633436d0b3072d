package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
)

// propose gives c this client's next dedup id, encodes it once and sends
// the same bytes to the group's leader until one answers: a retry after a
// lost answer, a leader change or a dead server carries the same id, so
// the state machine applies the command at most once and answers the
// retry from the first application's stored result.
func (e *Engine) propose(ctx context.Context, group string, c *fsm.Command) ([]byte, error) {
	if e.closed.Load() {
		return nil, errs.Closed
	}
	seq, mark := e.ids.Begin()
	defer e.ids.End(seq)
	c.Session, c.Seq, c.Mark, c.Time = e.session, seq, mark, time.Now().UnixMilli()
	cmd, err := fsm.EncodeCommand(c)
	if err != nil {
		return nil, err
	}
	var last error
	mayHaveApplied := false
	skip := map[string]bool{}
	for n := 0; ; n++ {
		if e.closed.Load() {
			return nil, e.gaveUp(errs.Closed, last, mayHaveApplied)
		}
		addr, ok := e.leaderAddr(group, skip)
		if !ok {
			clear(skip)
			if err := e.rediscover(ctx); err != nil {
				return nil, e.gaveUp(err, last, mayHaveApplied)
			}
			continue
		}
		data, err := e.send(ctx, addr, group, cmd)
		if err == nil {
			return data, nil
		}
		if ctx.Err() != nil {
			return nil, e.gaveUp(ctx.Err(), err, mayHaveApplied || maybeApplied(err))
		}
		if !retryable(err) {
			return nil, err
		}
		last = err
		mayHaveApplied = mayHaveApplied || maybeApplied(err)
		if errors.Is(err, peer.ErrUnreachable) {
			e.markDown(addr)
		}
		skip[addr] = true
		// The leader may have moved: learn where before the next try.
		if n > 0 {
			if err := e.rediscover(ctx); err != nil {
				return nil, e.gaveUp(err, last, mayHaveApplied)
			}
		} else {
			e.kick()
		}
		if err := e.backoff(ctx, n); err != nil {
			return nil, e.gaveUp(err, last, mayHaveApplied)
		}
	}
}

// maybeApplied tells whether a failed try may have reached the state
// machine: a server's unknown outcome, or a call cut short (a transport
// failure, or its ctx ending, whose answer is then lost) after the request
// may have left, that is not marked ErrNotSent (a failed dial, a ctx that
// had ended before the call). NoQuorum and a server's Closed mean it did
// not.
func maybeApplied(err error) bool {
	if errors.Is(err, errs.UnknownOutcome) {
		return true
	}
	cut := errors.Is(err, peer.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
	return cut && !errors.Is(err, peer.ErrNotSent)
}

// gaveUp is the error of a write that ran out of time or was closed.
func (e *Engine) gaveUp(why, last error, mayHaveApplied bool) error {
	if mayHaveApplied {
		return fmt.Errorf("the write may have been applied (last try: %v): %w: %w", last, why, errs.UnknownOutcome)
	}
	return ctxError(why, last)
}

// Txn commits t in group through its leader.
func (e *Engine) Txn(ctx context.Context, group string, t *fsm.Txn) (*fsm.TxnResult, error) {
	if t == nil {
		return nil, fmt.Errorf("nil txn: %w", errs.Invalid)
	}
	if err := fsm.RejectReserved(t); err != nil {
		return nil, err
	}
	group = groupName(group)
	data, err := e.propose(ctx, group, &fsm.Command{Kind: fsm.KindTxn, Txn: t})
	if err != nil {
		return nil, err
	}
	r, err := fsm.DecodeResult(fsm.Result{Data: data})
	if err != nil {
		return nil, err
	}
	e.group(group).raiseFloor(r.Revision)
	return r, nil
}

// proposeLease commits a lease command and decodes its result.
func (e *Engine) proposeLease(ctx context.Context, group string, c *fsm.Command) (*fsm.LeaseResult, error) {
	group = groupName(group)
	data, err := e.propose(ctx, group, c)
	if err != nil {
		return nil, err
	}
	r, err := fsm.DecodeLeaseResult(fsm.Result{Data: data})
	if err != nil {
		return nil, err
	}
	e.group(group).raiseFloor(r.Revision)
	return r, nil
}
