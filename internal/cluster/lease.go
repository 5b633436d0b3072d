package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
)

// Leases: the state machine holds each lease (TTL, checkpointed remaining
// time, attached keys); the clock lives here. On each server, for every
// group it leads, a lessor keeps the deadlines in memory, renews them on
// keepalives (which reach the leader over the peer RPC, not through Raft)
// and proposes the expiry of overdue leases. A new leader starts every
// deadline at the full TTL, or at the remaining time last checkpointed
// through Raft (every LeaseCheckpoint), so a lease outlives no more than
// one checkpoint period of leader churn.

const (
	leaseTick         = 100 * time.Millisecond
	renewTick         = 200 * time.Millisecond
	defaultCheckpoint = 5 * time.Minute
)

// LeaseDetail describes a lease.
type LeaseDetail struct {
	TTL  time.Duration
	Keys []string
}

type lessor struct {
	mu         sync.Mutex
	gen        uint64 // the state machine's lease generation last loaded
	ttl        map[int64]time.Duration
	deadline   map[int64]time.Time
	expiring   map[int64]bool // expiry proposed, not yet applied
	checkpoint time.Time      // last checkpoint proposal
}

// GrantLease creates a lease in group and returns its id.
func (e *Engine) GrantLease(ctx context.Context, group string, ttl time.Duration) (int64, error) {
	sid, err := e.resolve(ctx, group)
	if err != nil {
		return 0, err
	}
	r, err := e.proposeLease(ctx, sid, &fsm.Command{Kind: fsm.KindLeaseGrant,
		Grant: &fsm.LeaseGrant{TTL: ttl.Milliseconds()}})
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
	sid, err := e.resolve(ctx, group)
	if err != nil {
		return 0, err
	}
	backoff := 5 * time.Millisecond
	for {
		if e.closed.Load() {
			return 0, errs.Closed
		}
		if err := e.host.WaitLeader(ctx, sid); err != nil {
			return 0, err
		}
		var ttl time.Duration
		leader, _ := e.host.Leader(sid)
		if leader == e.cfg.NodeID {
			ttl, err = e.renew(ctx, sid, id)
		} else {
			e.mu.Lock()
			p, known := e.servers[leader]
			e.mu.Unlock()
			if !known {
				err = fmt.Errorf("leader %d has no known peer address: %w", leader, errs.NoQuorum)
			} else {
				var r peer.KeepAliveResponse
				r, err = e.peers.KeepAlive(ctx, p.PeerAddr, peer.KeepAliveRequest{Shard: sid, Lease: id})
				ttl = time.Duration(r.TTLMillis) * time.Millisecond
			}
		}
		// Only "not the leader (any more)" and an unreachable leader are
		// worth another try: the leader may be changing.
		if err == nil || !(errors.Is(err, errs.NoQuorum) || errors.Is(err, peer.ErrUnreachable)) {
			return ttl, err
		}
		select {
		case <-ctx.Done():
			return 0, ctxError(ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

func ctxError(ctxErr, last error) error {
	return fmt.Errorf("%w (last try: %v): %w", ctxErr, last, errs.NoQuorum)
}

// renew restarts a lease's countdown on this server, which must lead sid,
// and returns its TTL.
func (e *Engine) renew(ctx context.Context, sid uint64, id int64) (time.Duration, error) {
	if leader, _ := e.host.Leader(sid); leader != e.cfg.NodeID {
		return 0, fmt.Errorf("server %d does not lead shard %d: %w", e.cfg.NodeID, sid, errs.NoQuorum)
	}
	l := e.lessor(sid)
	e.refresh(sid, l)
	l.mu.Lock()
	ttl, ok := l.ttl[id]
	if ok && !l.expiring[id] {
		l.deadline[id] = time.Now().Add(ttl)
	}
	expiring := l.expiring[id]
	l.mu.Unlock()
	if ok && !expiring {
		return ttl, nil
	}
	if expiring {
		return 0, fmt.Errorf("lease %d expired: %w", id, errs.LeaseNotFound)
	}
	// Granted but not yet seen here (the grant was applied after the last
	// refresh): ask the state machine itself.
	v, err := e.readShard(ctx, sid, fsm.LeaseQuery{ID: id}, ReadOpts{Consistency: Linearizable})
	if err != nil {
		return 0, err
	}
	li := v.(*fsm.LeaseInfo)
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.ttl[id]; !ok {
		l.ttl[id] = time.Duration(li.TTL) * time.Millisecond
	}
	l.deadline[id] = time.Now().Add(l.ttl[id])
	return l.ttl[id], nil
}

func (e *Engine) lessor(sid uint64) *lessor {
	e.mu.Lock()
	defer e.mu.Unlock()
	l := e.lessors[sid]
	if l == nil {
		l = &lessor{ttl: map[int64]time.Duration{}, deadline: map[int64]time.Time{},
			expiring: map[int64]bool{}, checkpoint: time.Now()}
		e.lessors[sid] = l
		l.gen = ^uint64(0) // load on first refresh
	}
	return l
}

// refresh reloads the lease set when the state machine's changed: new
// leases start their countdown (full TTL, or the checkpointed remainder),
// ended ones are dropped, known ones keep their deadline.
func (e *Engine) refresh(sid uint64, l *lessor) {
	gen := e.host.LeaseGeneration(sid)
	l.mu.Lock()
	same := gen == l.gen
	l.mu.Unlock()
	if same {
		return
	}
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
		}
	}
	l.gen = gen
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
		Revoke: &fsm.LeaseRevoke{IDs: due, Expired: true}}); err != nil {
		// Try again next tick (the dedup id differs; expiring an ended
		// lease is a no-op).
		l.mu.Lock()
		for _, id := range due {
			delete(l.expiring, id)
		}
		l.mu.Unlock()
		e.log.Debug("lease expiry not committed", "shard", sid, "err", err)
	}
}

// checkpoint records the remaining TTLs through Raft every
// cfg.LeaseCheckpoint.
func (e *Engine) checkpoint(sid uint64, l *lessor) {
	now := time.Now()
	l.mu.Lock()
	if now.Sub(l.checkpoint) < e.cfg.LeaseCheckpoint || len(l.deadline) == 0 {
		l.mu.Unlock()
		return
	}
	l.checkpoint = now
	var cps []fsm.LeaseRemaining
	for id, d := range l.deadline {
		if left := d.Sub(now); left > 0 && !l.expiring[id] {
			cps = append(cps, fsm.LeaseRemaining{ID: id, RemainingMs: max(left.Milliseconds(), 1)})
		}
	}
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(e.life, 5*time.Second)
	defer cancel()
	if len(cps) == 0 {
		return
	}
	if _, err := e.proposeLease(ctx, sid, &fsm.Command{Kind: fsm.KindLeaseCheckpoint,
		Checkpoint: &fsm.LeaseCheckpoint{Checkpoints: cps}}); err != nil {
		e.log.Debug("lease checkpoint not committed", "shard", sid, "err", err)
	}
}

// renewal is a lease this server keeps alive for its own process.
type renewal struct {
	group string
	id    int64
}

// AutoRenew keeps a lease alive from this server until StopRenew or Close.
func (e *Engine) AutoRenew(group string, id int64, ttl time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.renewals[renewal{group, id}] = ttl
}

// StopRenew ends AutoRenew for a lease.
func (e *Engine) StopRenew(group string, id int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.renewals, renewal{group, id})
}

// renewLoop sends the keepalives of AutoRenew leases every third of their TTL.
func (e *Engine) renewLoop() {
	defer close(e.renewDone)
	next := map[renewal]time.Time{}
	t := time.NewTicker(renewTick)
	defer t.Stop()
	for {
		select {
		case <-e.life.Done():
			return
		case <-t.C:
		}
		e.mu.Lock()
		due := map[renewal]time.Duration{}
		now := time.Now()
		for r, ttl := range e.renewals {
			if at, ok := next[r]; !ok || now.After(at) {
				due[r] = ttl
			}
		}
		e.mu.Unlock()
		for r, ttl := range due {
			ctx, cancel := context.WithTimeout(e.life, ttl/3)
			_, err := e.KeepAlive(ctx, r.group, r.id)
			cancel()
			switch {
			case err == nil:
				next[r] = time.Now().Add(ttl / 3)
			case errors.Is(err, errs.LeaseNotFound), errors.Is(err, errs.GroupNotFound):
				e.StopRenew(r.group, r.id)
				delete(next, r)
			default: // try again at the next tick
			}
		}
	}
}
