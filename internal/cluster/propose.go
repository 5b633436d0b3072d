package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// Consistency is how fresh a read must be.
type Consistency = core.Consistency

// The consistencies (see core.Consistency).
const (
	Session      = core.Session
	Linearizable = core.Linearizable
	Stale        = core.Stale
)

// ReadOpts are the per-read settings.
type ReadOpts = core.ReadOpts

// Txn proposes t in group and returns its result once a majority of the
// group's servers committed it and this server's replica applied it.
//
// t is a client's txn: a key in the reserved namespace is ErrInvalid (see
// ReservedTxn).
func (e *Engine) Txn(ctx context.Context, group string, t *fsm.Txn) (*fsm.TxnResult, error) {
	if t == nil {
		return nil, fmt.Errorf("nil txn: %w", errs.Invalid)
	}
	if err := fsm.RejectReserved(t); err != nil {
		return nil, err
	}
	return e.ReservedTxn(ctx, group, t)
}

// ReservedTxn is Txn for the layers that keep data in the reserved
// namespace (services); it takes keys of both namespaces.
func (e *Engine) ReservedTxn(ctx context.Context, group string, t *fsm.Txn) (*fsm.TxnResult, error) {
	sid, err := e.resolve(ctx, group)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	r, err := e.txn(ctx, sid, t)
	e.metrics.proposal(group, start, err, err == nil && r.Succeeded)
	return r, err
}

// txnHook, when set (tests only), is called with every encoded proposal
// after it committed; it may propose it again to simulate a retry.
type txnHook func(ctx context.Context, shardID uint64, cmd []byte)

func (e *Engine) txn(ctx context.Context, sid uint64, t *fsm.Txn) (*fsm.TxnResult, error) {
	res, err := e.propose(ctx, sid, &fsm.Command{Kind: fsm.KindTxn, Txn: t})
	if err != nil {
		return nil, err
	}
	tr, err := fsm.DecodeResult(res)
	if err != nil {
		return nil, err
	}
	e.raiseFloor(sid, tr.Revision)
	return tr, nil
}

// propose gives c this engine's next dedup id and commits it on shard sid.
func (e *Engine) propose(ctx context.Context, sid uint64, c *fsm.Command) (fsm.Result, error) {
	if e.closed.Load() {
		return fsm.Result{}, errs.Closed
	}
	seq, mark := e.ids.Begin()
	defer e.ids.End(seq)
	c.Session, c.Seq, c.Mark, c.Time = e.session, seq, mark, time.Now().UnixMilli()
	cmd, err := fsm.EncodeCommand(c)
	if err != nil {
		return fsm.Result{}, err
	}
	res, err := e.host.Propose(ctx, sid, cmd)
	if err != nil {
		return fsm.Result{}, err
	}
	if h := e.hook.Load(); h != nil {
		(*h)(ctx, sid, cmd)
	}
	return res, nil
}

// proposeLease commits a lease command and decodes its result.
func (e *Engine) proposeLease(ctx context.Context, sid uint64, c *fsm.Command) (*fsm.LeaseResult, error) {
	res, err := e.propose(ctx, sid, c)
	if err != nil {
		return nil, err
	}
	lr, err := fsm.DecodeLeaseResult(res)
	if err != nil {
		return nil, err
	}
	e.raiseFloor(sid, lr.Revision)
	return lr, nil
}

// ProposeAgain re-sends an already committed proposal, as a retry after a
// lost reply would; for tests of exactly-once application.
func (e *Engine) ProposeAgain(ctx context.Context, shardID uint64, cmd []byte) (*fsm.TxnResult, error) {
	res, err := e.host.Propose(ctx, shardID, cmd)
	if err != nil {
		return nil, err
	}
	return fsm.DecodeResult(res)
}

// SetTxnHook installs (or, with nil, removes) a hook run after every
// committed proposal; for tests.
func (e *Engine) SetTxnHook(h func(ctx context.Context, shardID uint64, cmd []byte)) {
	if h == nil {
		e.hook.Store(nil)
		return
	}
	th := txnHook(h)
	e.hook.Store(&th)
}

// SetSubmitHook installs (or, with nil, removes) a hook run each time a
// proposal is handed to the Raft engine; for tests.
func (e *Engine) SetSubmitHook(h func(shardID uint64)) { e.host.SetSubmitHook(h) }

// Get reads one key.
func (e *Engine) Get(ctx context.Context, group, key string, o ReadOpts) (*fsm.GetResult, error) {
	v, err := e.read(ctx, group, fsm.GetQuery{Key: key}, o)
	if err != nil {
		return nil, err
	}
	r, ok := v.(*fsm.GetResult)
	if !ok {
		return nil, fmt.Errorf("get: unexpected answer %T: %w", v, errs.Invalid)
	}
	return r, nil
}

// List reads one page of keys.
func (e *Engine) List(ctx context.Context, group string, q fsm.ListQuery, o ReadOpts) (*fsm.ListResult, error) {
	v, err := e.read(ctx, group, q, o)
	if err != nil {
		return nil, err
	}
	r, ok := v.(*fsm.ListResult)
	if !ok {
		return nil, fmt.Errorf("list: unexpected answer %T: %w", v, errs.Invalid)
	}
	return r, nil
}

// Revision is the group's current revision as this server's replica has it
// (after the read rules of o).
func (e *Engine) Revision(ctx context.Context, group string, o ReadOpts) (int64, error) {
	v, err := e.read(ctx, group, fsm.RevisionQuery{}, o)
	if err != nil {
		return 0, err
	}
	r, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("revision: unexpected answer %T: %w", v, errs.Invalid)
	}
	return r, nil
}

func (e *Engine) read(ctx context.Context, group string, q any, o ReadOpts) (any, error) {
	if e.closed.Load() {
		return nil, errs.Closed
	}
	sid, err := e.resolve(ctx, group)
	if err != nil {
		return nil, err
	}
	return e.readShard(ctx, sid, q, o)
}

func (e *Engine) readShard(ctx context.Context, sid uint64, q any, o ReadOpts) (any, error) {
	var v any
	var err error
	if o.Consistency == Linearizable {
		v, err = e.host.Read(ctx, sid, q)
	} else {
		floor := o.MinRevision
		if o.Consistency == Session {
			floor = max(floor, e.floor(sid).Load())
		}
		if floor > 0 {
			if err := e.waitFloor(ctx, sid, floor); err != nil {
				return nil, err
			}
		}
		v, err = e.host.StaleRead(ctx, sid, q)
	}
	if err != nil {
		return nil, err
	}
	switch r := v.(type) {
	case *fsm.GetResult:
		e.raiseFloor(sid, r.Revision)
	case *fsm.ListResult:
		e.raiseFloor(sid, r.Revision)
	case int64:
		e.raiseFloor(sid, r)
	}
	return v, nil
}

// floorCheckAfter is how long a read waits for the local replica to reach
// its floor before it asks the leader whether the group has reached it at
// all. A replica catching up reaches it meanwhile; a floor beyond the
// group's revision (a MinRevision from the future, or a client's session
// floor from an earlier group of the same name) would wait to the
// caller's deadline.
const floorCheckAfter = 250 * time.Millisecond

// waitFloor waits until shard sid's local replica has applied revision
// floor. A floor the group has not reached is ErrInvalid: no wait can
// serve it (what etcd answers a read at a future revision).
func (e *Engine) waitFloor(ctx context.Context, sid uint64, floor int64) error {
	if e.host.Revision(sid) >= floor {
		return nil // the usual case, without a timer
	}
	wctx, cancel := context.WithTimeout(ctx, floorCheckAfter)
	err := e.host.WaitRevision(wctx, sid, floor)
	cancel()
	if err == nil || ctx.Err() != nil || wctx.Err() == nil {
		return err
	}
	// The leader's committed revision, applied here (a ReadIndex).
	v, err := e.host.Read(ctx, sid, fsm.RevisionQuery{})
	if err != nil {
		return err
	}
	if rev, ok := v.(int64); ok && rev < floor {
		return fmt.Errorf("min revision %d is beyond the group's revision %d: %w", floor, rev, errs.Invalid)
	}
	return e.host.WaitRevision(ctx, sid, floor)
}

// floor is the lowest revision a session read of shard sid may see.
func (e *Engine) floor(sid uint64) *atomic.Int64 {
	if f, ok := e.floors.Load(sid); ok {
		return f.(*atomic.Int64)
	}
	f, _ := e.floors.LoadOrStore(sid, new(atomic.Int64))
	return f.(*atomic.Int64)
}

func (e *Engine) raiseFloor(sid uint64, rev int64) {
	f := e.floor(sid)
	for {
		cur := f.Load()
		if rev <= cur || f.CompareAndSwap(cur, rev) {
			return
		}
	}
}
