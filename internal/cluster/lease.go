package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
)

// Leases: the state machine holds each lease (TTL, checkpointed remaining
// time, attached keys) and the lessor epoch; the clock lives here. On each
// server, for every group it leads, a lessor keeps the deadlines in memory.
//
// A lessor works only under an epoch of its own: on gaining leadership it
// commits a KindLeaseEpoch first, then starts every deadline at the full
// TTL, or at the remaining time last checkpointed (etcd's rule). Its
// expiries and checkpoints carry its epoch, and the state machine refuses
// those of any other, so a deposed leader that has not noticed can neither
// expire a lease the new leader renews nor store a stale remainder.
// Keepalives reach the leader over the peer RPC (not through Raft); before
// acknowledging one the lessor confirms with a ReadIndex round that it
// still leads and that its epoch is still the current one, so every
// acknowledged keepalive happened before any later lessor started its
// deadlines. Every LeaseCheckpoint the lessor records, through Raft, the
// remaining time of the leases with more left than that period, and a
// keepalive of a lease holding a checkpoint clears it with one Raft write
// before it is acknowledged: a new leader never starts a renewed lease at
// a remainder older than the renewal. A lease outlives its keepalives by
// at most one checkpoint period under leader churn.

const (
	leaseTick         = 100 * time.Millisecond
	defaultCheckpoint = 5 * time.Minute
)

// LeaseDetail describes a lease.
type LeaseDetail = core.LeaseDetail

type lessor struct {
	// cpMu orders this lessor's checkpoint proposals with the clears of
	// renewals, so a checkpoint computed before a renewal never lands
	// after the renewal's clear.
	cpMu sync.Mutex
	// refreshMu makes reloads of the lease set (refresh) one at a time.
	refreshMu sync.Mutex

	mu         sync.Mutex
	epoch      uint64 // 0 until this leader's epoch committed
	gen        uint64 // the state machine's lease generation last loaded
	ttl        map[int64]time.Duration
	deadline   map[int64]time.Time
	expiring   map[int64]bool // expiry proposed, not yet applied
	held       map[int64]bool // the state machine holds a checkpoint of it
	checkpoint time.Time      // last checkpoint proposal
}

func (l *lessor) currentEpoch() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epoch
}

// deposed tells whether a lessor's proposal failed because its epoch is
// no longer the current one (the state machine answers ErrNoQuorum), as
// opposed to running out of time.
func deposed(err error) bool {
	return errors.Is(err, errs.NoQuorum) && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, errs.UnknownOutcome)
}

// GrantLease creates a lease in group and returns its id.
func (e *Engine) GrantLease(ctx context.Context, group string, ttl time.Duration) (int64, error) {
	sid, err := e.resolve(ctx, group)
	if err != nil {
		return 0, err
	}
	r, err := fsm.GrantLease(sid, ttl.Milliseconds(), func(c *fsm.Command) (*fsm.LeaseResult, error) {
		return e.proposeLease(ctx, sid, c)
	})
	if err != nil {
		return 0, err
	}
	e.kickLessor()
	return r.ID, nil
}

// RevokeLease ends a lease and deletes its keys.
func (e *Engine) RevokeLease(ctx context.Context, group string, id int64) error {
	sid, err := e.resolve(ctx, group)
	if err != nil {
		return err
	}
	_, err = e.proposeLease(ctx, sid, &fsm.Command{Kind: fsm.KindLeaseRevoke, Revoke: &fsm.LeaseRevoke{IDs: []int64{id}}})
	return err
}

// Lease describes a lease (linearizable).
func (e *Engine) Lease(ctx context.Context, group string, id int64) (LeaseDetail, error) {
	sid, err := e.resolve(ctx, group)
	if err != nil {
		return LeaseDetail{}, err
	}
	v, err := e.readShard(ctx, sid, fsm.LeaseQuery{ID: id}, ReadOpts{Consistency: Linearizable})
	if err != nil {
		return LeaseDetail{}, err
	}
	li := v.(*fsm.LeaseInfo)
	return LeaseDetail{TTL: time.Duration(li.TTL) * time.Millisecond, Keys: li.Keys}, nil
}

// KeepAlive renews a lease at its group's leader, wherever that is, and
// returns its TTL.
func (e *Engine) KeepAlive(ctx context.Context, group string, id int64) (time.Duration, error) {
	rs, err := e.KeepAliveBatch(ctx, group, []int64{id})
	if err != nil {
		return 0, err
	}
	return rs[0].TTL, rs[0].Err
}

// KeepAliveBatch renews leases of one group at its leader, wherever that
// is: one RPC (none when this server leads) and one leadership
// confirmation for the whole batch.
func (e *Engine) KeepAliveBatch(ctx context.Context, group string, ids []int64) ([]core.KeepAliveResult, error) {
	if len(ids) > core.MaxKeepAliveBatch {
		return nil, fmt.Errorf("%d leases in one keepalive batch, more than %d: %w", len(ids), core.MaxKeepAliveBatch, errs.TooLarge)
	}
	sid, err := e.resolve(ctx, group)
	if err != nil {
		return nil, err
	}
	backoff := 5 * time.Millisecond
	for {
		if e.closed.Load() {
			return nil, errs.Closed
		}
		if err := e.host.WaitLeader(ctx, sid); err != nil {
			return nil, err
		}
		var rs []core.KeepAliveResult
		leader, _ := e.host.Leader(sid)
		if leader == e.cfg.NodeID {
			rs, err = e.renewBatch(ctx, sid, ids)
		} else {
			e.mu.Lock()
			p, known := e.servers[leader]
			e.mu.Unlock()
			if !known {
				err = fmt.Errorf("leader %d has no known peer address: %w", leader, errs.NoQuorum)
			} else {
				var r peer.KeepAliveBatchResponse
				r, err = e.peers.KeepAlives(ctx, p.PeerAddr, peer.KeepAliveBatchRequest{Shard: sid, Leases: ids})
				if err == nil && len(r.TTLMillis) != len(ids) {
					err = fmt.Errorf("keepalive batch: %d answers for %d leases: %w", len(r.TTLMillis), len(ids), errs.NoQuorum)
				}
				if err == nil {
					rs = make([]core.KeepAliveResult, len(ids))
					for i, ms := range r.TTLMillis {
						if ms == 0 {
							rs[i].Err = fmt.Errorf("lease %d: %w", ids[i], errs.LeaseNotFound)
						} else {
							rs[i].TTL = time.Duration(ms) * time.Millisecond
						}
					}
				}
			}
		}
		// Only "not the leader (any more)" and an unreachable leader are
		// worth another try: the leader may be changing.
		if err == nil || !(errors.Is(err, errs.NoQuorum) || errors.Is(err, peer.ErrUnreachable)) {
			return rs, err
		}
		select {
		case <-ctx.Done():
			return nil, ctxError(ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

func ctxError(ctxErr, last error) error {
	return fmt.Errorf("%w (last try: %v): %w", ctxErr, last, errs.NoQuorum)
}

// renewBatch restarts the countdown of leases on this server, which must
// lead sid, and returns their TTLs: one ReadIndex round for the batch, and
// one Raft write clearing the checkpoints some of them hold.
func (e *Engine) renewBatch(ctx context.Context, sid uint64, ids []int64) ([]core.KeepAliveResult, error) {
	l, err := e.confirmedLessor(ctx, sid)
	if err != nil {
		return nil, err
	}
	out := make([]core.KeepAliveResult, len(ids))
	var held []int64
	now := time.Now()
	l.mu.Lock()
	for i, id := range ids {
		ttl, ok := l.ttl[id]
		if !ok || l.expiring[id] {
			out[i].Err = fmt.Errorf("lease %d: %w", id, errs.LeaseNotFound)
			continue
		}
		l.deadline[id] = now.Add(ttl)
		out[i].TTL = ttl
		if l.held[id] {
			held = append(held, id)
		}
	}
	l.mu.Unlock()
	for len(held) > 0 {
		batch := held[:min(len(held), fsm.MaxLeaseBatch)]
		held = held[len(batch):]
		if err := e.clearCheckpoints(ctx, sid, l, batch); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// confirmedLessor is shard sid's lessor once this server is confirmed to
// lead the shard and the lessor to be the current one, with the local
// replica up to date: what a renewal, and a backup's remaining TTLs, may
// answer from. Otherwise NoQuorum (the caller tries the leader).
func (e *Engine) confirmedLessor(ctx context.Context, sid uint64) (*lessor, error) {
	if leader, _ := e.host.Leader(sid); leader != e.cfg.NodeID {
		return nil, fmt.Errorf("server %d does not lead shard %d: %w", e.cfg.NodeID, sid, errs.NoQuorum)
	}
	l := e.lessor(sid)
	epoch := l.currentEpoch()
	if epoch == 0 {
		e.kickLessor()
		return nil, fmt.Errorf("the lessor of shard %d on server %d is starting: %w", sid, e.cfg.NodeID, errs.NoQuorum)
	}
	// Still the leader, and still the current lessor? A ReadIndex round
	// confirms the first and brings the local replica up to date for the
	// second (and for a grant this lessor has not loaded yet).
	v, err := e.host.Read(ctx, sid, fsm.EpochQuery{})
	if err != nil {
		return nil, err
	}
	if cur := v.(uint64); cur != epoch {
		e.dropLessor(sid, l)
		return nil, fmt.Errorf("lessor epoch %d of server %d was superseded by %d: %w", epoch, e.cfg.NodeID, cur, errs.NoQuorum)
	}
	e.refresh(sid, l)
	return l, nil
}

// clearCheckpoints removes the checkpoints of leases ids (one Raft
// write), so that a new leader starts the renewed leases at their full TTL.
func (e *Engine) clearCheckpoints(ctx context.Context, sid uint64, l *lessor, ids []int64) error {
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	var cps []fsm.LeaseRemaining
	l.mu.Lock()
	for _, id := range ids {
		if l.held[id] {
			cps = append(cps, fsm.LeaseRemaining{ID: id})
		}
	}
	epoch := l.epoch
	l.mu.Unlock()
	if len(cps) == 0 {
		return nil
	}
	_, err := e.proposeLease(ctx, sid, &fsm.Command{Kind: fsm.KindLeaseCheckpoint,
		Checkpoint: &fsm.LeaseCheckpoint{Epoch: epoch, Checkpoints: cps}})
	if err != nil {
		if deposed(err) {
			e.dropLessor(sid, l)
		}
		return err
	}
	l.mu.Lock()
	for _, cp := range cps {
		delete(l.held, cp.ID)
	}
	l.mu.Unlock()
	return nil
}

func (e *Engine) lessor(sid uint64) *lessor {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.lessors[sid]
	if l == nil {
		l = &lessor{ttl: map[int64]time.Duration{}, deadline: map[int64]time.Time{},
			expiring: map[int64]bool{}, held: map[int64]bool{}, checkpoint: time.Now()}
		e.lessors[sid] = l
		l.gen = ^uint64(0) // load on first refresh
	}
	return l
}

// dropLessor forgets l, a lessor that lost its leadership or its epoch: the
// next one of this server (if it leads again) starts afresh.
func (e *Engine) dropLessor(sid uint64, l *lessor) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lessors[sid] == l {
		delete(e.lessors, sid)
	}
}

// startEpoch commits a new lessor epoch for l; until it has, l answers no
// keepalive and expires nothing. The deadlines start after the commit.
func (e *Engine) startEpoch(sid uint64, l *lessor) {
	ctx, cancel := context.WithTimeout(e.life, 5*time.Second)
	defer cancel()
	r, err := e.proposeLease(ctx, sid, &fsm.Command{Kind: fsm.KindLeaseEpoch, Epoch: &fsm.LeaseEpoch{}})
	if err != nil {
		e.log.Debug("lessor epoch not committed", "shard", sid, "err", err)
		return
	}
	l.mu.Lock()
	l.epoch = r.Epoch
	l.gen = ^uint64(0) // load the leases now, with fresh deadlines
	clear(l.ttl)
	clear(l.deadline)
	clear(l.expiring)
	clear(l.held)
	l.checkpoint = time.Now()
	l.mu.Unlock()
	e.refresh(sid, l)
}

// refresh reloads the lease set when the state machine's changed: new
// leases start their countdown (full TTL, or the checkpointed remainder),
// ended ones are dropped, known ones keep their deadline.
func (e *Engine) refresh(sid uint64, l *lessor) {
	if e.loaded(sid, l) {
		return
	}
	// One reload at a time: two interleaved ones could apply an older view
	// after a newer one, dropping for a moment the leases granted between
	// the two, and a keepalive then would answer ErrLeaseNotFound for a
	// lease that exists (a keeper gives such a lease up for good).
	l.refreshMu.Lock()
	defer l.refreshMu.Unlock()
	if e.loaded(sid, l) {
		return
	}
	gen := e.host.LeaseGeneration(sid)
	ctx, cancel := context.WithTimeout(e.life, 5*time.Second)
	defer cancel()
	v, err := e.host.StaleRead(ctx, sid, fsm.LeasesQuery{})
	if err != nil {
		return
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[int64]bool{}
	for _, li := range v.(*fsm.LeasesResult).Leases {
		seen[li.ID] = true
		ttl := time.Duration(li.TTL) * time.Millisecond
		l.ttl[li.ID] = ttl
		// Only ever set here: a checkpoint in flight has set it before the
		// state machine holds the remainder (see checkpoint), and only a
		// committed clear unsets it (clearCheckpoints).
		if li.Remaining > 0 {
			l.held[li.ID] = true
		}
		if _, known := l.deadline[li.ID]; !known {
			start := ttl
			if li.Remaining > 0 && li.Remaining < li.TTL {
				start = time.Duration(li.Remaining) * time.Millisecond
			}
			l.deadline[li.ID] = now.Add(start)
		}
	}
	for id := range l.ttl {
		if !seen[id] {
			delete(l.ttl, id)
			delete(l.deadline, id)
			delete(l.expiring, id)
			delete(l.held, id)
		}
	}
	l.gen = gen
}

// loaded tells whether l holds the state machine's current lease set.
func (e *Engine) loaded(sid uint64, l *lessor) bool {
	gen := e.host.LeaseGeneration(sid)
	l.mu.Lock()
	defer l.mu.Unlock()
	return gen == l.gen
}

func (e *Engine) kickLessor() {
	select {
	case e.leaseWake <- struct{}{}:
	default:
	}
}

// leaseLoop runs the lessors of the groups this server leads.
func (e *Engine) leaseLoop() {
	defer close(e.leaseDone)
	t := time.NewTicker(leaseTick)
	defer t.Stop()
	for {
		select {
		case <-e.life.Done():
			return
		case <-t.C:
		case <-e.leaseWake:
		}
		running := e.host.Shards()
		e.dropLessors(running)
		for _, sid := range running {
			if sid == SystemShard {
				continue
			}
			if leader, _ := e.host.Leader(sid); leader != e.cfg.NodeID {
				// Not leading (any more): forget the deadlines, so leading
				// again starts them afresh by the rule above.
				e.mu.Lock()
				delete(e.lessors, sid)
				e.mu.Unlock()
				continue
			}
			l := e.lessor(sid)
			if l.currentEpoch() == 0 {
				e.startEpoch(sid, l)
				continue
			}
			e.refresh(sid, l)
			e.expire(sid, l)
			e.checkpoint(sid, l)
		}
	}
}

// dropLessors forgets the lessors of shards no longer running here (a
// deleted group).
func (e *Engine) dropLessors(running []uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for sid := range e.lessors {
		if !slices.Contains(running, sid) {
			delete(e.lessors, sid)
		}
	}
}

// expire proposes the expiry of overdue leases.
func (e *Engine) expire(sid uint64, l *lessor) {
	now := time.Now()
	var due []int64
	l.mu.Lock()
	for id, d := range l.deadline {
		if now.After(d) && !l.expiring[id] {
			due = append(due, id)
			l.expiring[id] = true
		}
	}
	l.mu.Unlock()
	if len(due) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(e.life, 5*time.Second)
	defer cancel()
	if _, err := e.proposeLease(ctx, sid, &fsm.Command{Kind: fsm.KindLeaseRevoke,
		Revoke: &fsm.LeaseRevoke{IDs: due, Expired: true, Epoch: l.currentEpoch()}}); err != nil {
		// Try again next tick (the dedup id differs; expiring an ended
		// lease is a no-op), unless this lessor was deposed.
		l.mu.Lock()
		for _, id := range due {
			delete(l.expiring, id)
		}
		l.mu.Unlock()
		if deposed(err) {
			e.dropLessor(sid, l)
		}
		e.log.Debug("lease expiry not committed", "shard", sid, "err", err)
	}
}

// checkpoint records, every cfg.LeaseCheckpoint, the remaining TTL of the
// leases with more than that left (etcd's rule: shorter ones would expire
// before the next checkpoint anyway).
func (e *Engine) checkpoint(sid uint64, l *lessor) {
	l.cpMu.Lock()
	defer l.cpMu.Unlock()
	now := time.Now()
	l.mu.Lock()
	if now.Sub(l.checkpoint) < e.cfg.LeaseCheckpoint || len(l.deadline) == 0 {
		l.mu.Unlock()
		return
	}
	l.checkpoint = now
	var cps []fsm.LeaseRemaining
	for id, d := range l.deadline {
		if left := d.Sub(now); left > e.cfg.LeaseCheckpoint && !l.expiring[id] {
			cps = append(cps, fsm.LeaseRemaining{ID: id, RemainingMs: min(left.Milliseconds(), fsm.MaxLeaseTTL)})
			// Held from now on, not from the commit: a renewal while the
			// proposal is on its way must clear it (it waits on cpMu), or
			// the remainder measured before the renewal would stay stored.
			// If the proposal fails, a renewal clears what may not be
			// there: one write too many, never a remainder too old.
			l.held[id] = true
		}
	}
	epoch := l.epoch
	l.mu.Unlock()
	for len(cps) > 0 {
		batch := cps[:min(len(cps), fsm.MaxLeaseBatch)]
		cps = cps[len(batch):]
		ctx, cancel := context.WithTimeout(e.life, 5*time.Second)
		_, err := e.proposeLease(ctx, sid, &fsm.Command{Kind: fsm.KindLeaseCheckpoint,
			Checkpoint: &fsm.LeaseCheckpoint{Epoch: epoch, Checkpoints: batch}})
		cancel()
		if err != nil {
			if deposed(err) {
				e.dropLessor(sid, l)
			}
			e.log.Debug("lease checkpoint not committed", "shard", sid, "err", err)
			return
		}
	}
}
