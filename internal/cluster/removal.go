package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
)

// Removing a server is a sequence of steps, each recorded in the catalog
// so that whichever server leads the system shard can resume it after a
// crash or a leader change:
//
//  1. leaving/<id>: the removal is decided (after the live-majority check).
//     The server keeps running every replica.
//  2. The server is taken out of the default group's shard and every
//     group's shard, one configuration change each. A shard that fails is
//     retried later; it does not hold up the others.
//  3. removed/<id> (and server/<id>, leaving/<id> deleted) once every group
//     shard dropped it. The server applies this entry through its system
//     replica and only then stops its group replicas: they are out of every
//     configuration by now, so stopping them costs no group its quorum.
//  4. The system shard drops it last, once it reports that it left (or does
//     not answer), so that it could still read step 3.
const (
	// liveTimeout bounds the status call that tells a live server.
	liveTimeout = time.Second
	// shardStepTimeout bounds one shard's configuration change in step 2,
	// so that a shard without quorum does not hold up the others for long.
	shardStepTimeout = 10 * time.Second
	// leavePatience is how long step 4 waits for a server that answers
	// but has not reported leaving yet.
	leavePatience = 10 * time.Second
	// removalTimeout bounds one attempt of the reconciler at a removal.
	removalTimeout = time.Minute
)

// RemoveServer takes a server out of the cluster for good (its id is never
// reused). ErrNotFound if no such server; ErrInvalid for the last voter or
// when a group would be left without a live majority. It returns once
// every step is done; if it returns early (ctx, Close), the system shard's
// leader finishes the removal.
func (e *Engine) RemoveServer(ctx context.Context, id uint64) error {
	if e.closed.Load() {
		return errs.Closed
	}
	bctx, stop := e.bounded(ctx)
	defer stop()
	err := e.removeServer(bctx, id)
	if err != nil && ctx.Err() == nil && e.life.Err() != nil {
		return errs.Closed
	}
	return err
}

func (e *Engine) removeServer(ctx context.Context, id uint64) error {
	if err := e.decideRemoval(ctx, id); err != nil {
		return err
	}
	if id == e.cfg.NodeID {
		if asked, err := e.askLeaderToRemove(ctx, id); asked {
			return err
		}
	}
	// Retry what may pass on a later try (a group just created and not
	// started here yet, an election) until ctx ends.
	backoff := 50 * time.Millisecond
	for {
		err := e.advanceRemoval(ctx, id)
		if err == nil || e.closed.Load() || errors.Is(err, errs.Invalid) {
			return err
		}
		select {
		case <-ctx.Done():
			return stepCtxError(ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// decideRemoval records the removal of server id as under way (step 1)
// once the live-majority check passed, or finds it under way or done
// already. The record is written only if no other removal was decided
// since the catalog the check read: otherwise it checks again, against
// the other removal too.
func (e *Engine) decideRemoval(ctx context.Context, id uint64) error {
	for {
		cat, err := e.readCatalog(ctx, Linearizable)
		if err != nil {
			return err
		}
		m, err := e.host.Membership(ctx, SystemShard)
		if err != nil {
			return err
		}
		p, listed := cat.servers[id]
		_, leaving := cat.leaving[id]
		_, removed := cat.removed[id]
		if !listed && !leaving && !m.Has(id) {
			return fmt.Errorf("server %d: %w", id, errs.NotFound)
		}
		if leaving || removed {
			return nil // under way: help it along
		}
		if _, voter := m.Voters[id]; voter && len(m.Voters) == 1 {
			return fmt.Errorf("server %d is the last voter: %w", id, errs.Invalid)
		}
		if err := e.checkRemoval(ctx, cat, id); err != nil {
			return err
		}
		if err := e.step(ctx, "decide", id); err != nil {
			return err
		}
		val, _ := json.Marshal(p)
		res, err := e.txn(ctx, SystemShard, &fsm.Txn{
			Compares: []fsm.Compare{
				{Key: keyRemovals, Target: fsm.TargetModRevision, Op: fsm.OpEqual, Int: cat.removalsRev},
			},
			Then: []fsm.Op{
				{Type: fsm.OpPut, Key: leavingKey(id), Value: val},
				{Type: fsm.OpPut, Key: keyRemovals, Value: []byte(strconv.FormatUint(id, 10))},
			},
		})
		if err != nil {
			return err
		}
		if res.Succeeded {
			e.log.Info("removing server", "member", id)
			e.kick()
			return nil
		}
		// Another removal was decided meanwhile (or this one): read again.
	}
}

// askLeaderToRemove hands the removal of this server (id) to another
// server: the system shard's leader once leadership moved off this server
// (see shard.Host.MoveLeadership). It reports false, and this server goes
// on by itself, when no other leader is known. A server that takes itself
// out of a group shard through its own replica may never hear that the
// change committed (the leader sends nothing to a replica it removed), and
// its request then waits out shardStepTimeout: TestRemoveLiveServerOfTwo
// through server 2 ran out of its 15 s so.
func (e *Engine) askLeaderToRemove(ctx context.Context, id uint64) (bool, error) {
	leader, ok := e.otherLeader(ctx)
	if !ok {
		return false, nil
	}
	e.mu.Lock()
	lp, known := e.servers[leader]
	e.mu.Unlock()
	if !known {
		return false, nil
	}
	if err := e.peers.Call(ctx, lp.PeerAddr, peer.OpRemoveServer, peer.ServerRequest{ID: id}, nil); err != nil {
		return true, fmt.Errorf("ask the system shard's leader %d to remove server %d: %w", leader, id, err)
	}
	return true, nil
}

// handOverWait bounds otherLeader.
const handOverWait = 3 * time.Second

// otherLeader moves the system shard's leadership off this server (see
// shard.Host.MoveLeadership) and returns the leader once another server
// is known to lead it. While none is known (an election, or a transfer
// under way: a RemoveServer call and the reconcile pass may both hand the
// leadership over at once) it waits, at most handOverWait: reading "no
// leader" as "nobody else can drive this removal" made the reconcile pass
// drive it after all (TestRemoveLiveServerOfTwo, 1 of 73 runs).
func (e *Engine) otherLeader(ctx context.Context) (uint64, bool) {
	self := e.cfg.NodeID
	ctx, cancel := context.WithTimeout(ctx, handOverWait)
	defer cancel()
	for {
		if err := e.host.MoveLeadership(ctx, SystemShard, self); err != nil {
			return 0, false
		}
		if leader, ok := e.host.Leader(SystemShard); ok && leader != self {
			return leader, true
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// bounded derives a ctx that also ends when the engine closes.
func (e *Engine) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(e.life, cancel)
	return ctx, func() { stop(); cancel() }
}

// shardRef names a shard for messages.
type shardRef struct {
	id   uint64
	name string
}

// catalogShards lists the default group's shard and every group's shard,
// sorted by name.
func catalogShards(cat *catalog) []shardRef {
	out := []shardRef{{DefaultShard, fmt.Sprintf("group %q", DefaultGroup)}}
	names := make([]string, 0, len(cat.groups))
	for n := range cat.groups {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out = append(out, shardRef{cat.groups[n].Shard, fmt.Sprintf("group %q", n)})
	}
	return out
}

// checkRemoval refuses (ErrInvalid) a removal after which some shard would
// not have a live majority of its voters, or that could not commit because
// the shard has none now (etcd's strict reconfiguration check). Live = this
// server, or a server that answers the status call within liveTimeout and
// runs the shard. Servers whose removal is under way count as gone already:
// they leave every configuration soon.
func (e *Engine) checkRemoval(ctx context.Context, cat *catalog, id uint64) error {
	status := e.statuses(ctx, cat.servers)
	var short []string
	for _, s := range append(catalogShards(cat), shardRef{SystemShard, "the catalog (system shard)"}) {
		mctx, cancel := context.WithTimeout(ctx, shardStepTimeout)
		m, err := e.host.Membership(mctx, s.id)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return stepCtxError(ctx.Err(), err)
			}
			// Nothing is known, nothing changed: the caller may try again.
			return fmt.Errorf("check the removal of server %d: read the configuration of %s: %w", id, s.name, err)
		}
		live := func(v uint64) bool {
			if v == e.cfg.NodeID {
				return true
			}
			st, ok := status[v]
			_, runs := st.Applied[s.id]
			return ok && runs
		}
		before, after, remain := 0, 0, 0
		for v := range m.Voters {
			if live(v) {
				before++
			}
			_, leaving := cat.leaving[v]
			_, removed := cat.removed[v]
			if v != id && !leaving && !removed {
				remain++
				if live(v) {
					after++
				}
			}
		}
		if 2*before <= len(m.Voters) || 2*after <= remain {
			short = append(short, fmt.Sprintf("%s (%d of %d voters would remain live)", s.name, after, remain))
		}
	}
	if len(short) > 0 {
		return fmt.Errorf("removing server %d would leave %s without a live majority: %w",
			id, strings.Join(short, ", "), errs.Invalid)
	}
	return nil
}

// statuses asks every server but this one for its status, in parallel;
// the map holds those that answered as themselves.
func (e *Engine) statuses(ctx context.Context, servers map[uint64]Peer) map[uint64]peer.Status {
	sctx, cancel := context.WithTimeout(ctx, liveTimeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[uint64]peer.Status{}
	for id, p := range servers {
		if id == e.cfg.NodeID {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := e.peers.Status(sctx, p.PeerAddr)
			if err == nil && st.NodeID == id {
				mu.Lock()
				out[id] = st
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}

// advanceRemoval takes the removal of server id through the steps that
// are left, as the catalog records them. Several servers may run it at
// once (the caller of RemoveServer and the system shard's leader): every
// step is idempotent.
func (e *Engine) advanceRemoval(ctx context.Context, id uint64) error {
	for {
		if id == e.cfg.NodeID && e.host.RemovedHere(SystemShard) {
			return nil // the last step is done; this replica can read no more
		}
		cat, err := e.readCatalog(ctx, Linearizable)
		if err != nil {
			return err
		}
		p, leaving := cat.leaving[id]
		if !leaving {
			if rp, removed := cat.removed[id]; removed {
				return e.finishRemoval(ctx, id, rp)
			}
			return nil // never started, or someone finished it
		}
		if err := e.step(ctx, "leaving", id); err != nil {
			return err
		}
		if err := e.leaveGroups(ctx, cat, id); err != nil {
			return err
		}
		val, _ := json.Marshal(p)
		res, err := e.txn(ctx, SystemShard, &fsm.Txn{
			Compares: []fsm.Compare{
				{Key: leavingKey(id), Target: fsm.TargetCreateRevision, Op: fsm.OpGreater, Int: 0},
				// A group created since the read above may have the server
				// as a member: then go round again.
				{Key: keyNextShard, Target: fsm.TargetModRevision, Op: fsm.OpEqual, Int: cat.nextShardRev},
			},
			Then: []fsm.Op{
				{Type: fsm.OpDelete, Key: serverKey(id)},
				{Type: fsm.OpDelete, Key: leavingKey(id)},
				{Type: fsm.OpPut, Key: removedKey(id), Value: val},
			},
		})
		if err != nil {
			return err
		}
		if res.Succeeded {
			e.log.Info("server left every group; recorded as removed", "member", id)
		}
	}
}

// leaveGroups takes server id out of every group's shard (step 2). Every
// shard is tried; the errors of those that failed are returned together.
func (e *Engine) leaveGroups(ctx context.Context, cat *catalog, id uint64) error {
	var failed []error
	for _, s := range catalogShards(cat) {
		sctx, cancel := context.WithTimeout(ctx, shardStepTimeout)
		err := e.removeFromShard(sctx, s.id, id)
		cancel()
		if ctx.Err() != nil {
			return stepCtxError(ctx.Err(), err)
		}
		if err != nil {
			failed = append(failed, fmt.Errorf("remove server %d from %s: %w", id, s.name, err))
		}
	}
	return errors.Join(failed...)
}

// finishRemoval takes a removed server out of the system shard (step 4),
// once it knows that it was removed.
func (e *Engine) finishRemoval(ctx context.Context, id uint64, p Peer) error {
	self := id == e.cfg.NodeID
	if self && e.host.RemovedHere(SystemShard) {
		return nil
	}
	m, err := e.host.Membership(ctx, SystemShard)
	if err != nil {
		return err
	}
	if !m.Has(id) {
		return nil
	}
	if self {
		// This server removes itself: it knows, and leaves first. If it
		// leads the system shard, another voter takes over first (see
		// shard.Host.MoveLeadership), so that the leader asked below is
		// another server.
		e.leave()
		if leader, ok := e.otherLeader(ctx); ok {
			e.mu.Lock()
			lp, known := e.servers[leader]
			e.mu.Unlock()
			if known {
				// Once out of the configuration, this replica may never
				// learn that its removal committed (a leader sends nothing
				// to a replica it removed): the leader takes it out, and
				// its answer is sure.
				if err := e.peers.Call(ctx, lp.PeerAddr, peer.OpRemoveServer, peer.ServerRequest{ID: id}, nil); err != nil {
					return fmt.Errorf("ask the system shard's leader %d to take server %d out: %w", leader, id, err)
				}
				return nil
			}
		}
	} else if err := e.waitLeft(ctx, id, p); err != nil {
		return err
	}
	if err := e.host.RemoveMember(ctx, SystemShard, id); err != nil {
		if self && (e.host.RemovedHere(SystemShard) || errors.Is(err, errs.Closed) && !e.closed.Load()) {
			// dragonboat stops a replica once it applied its own removal,
			// and ends the request with it: the change committed.
			return nil
		}
		return fmt.Errorf("remove server %d from the system shard: %w", id, err)
	}
	e.log.Info("removed server from the system shard", "member", id)
	return nil
}

// waitLeft waits until server id reports that it left, does not answer
// (nothing to wait for), or leavePatience passed.
func (e *Engine) waitLeft(ctx context.Context, id uint64, p Peer) error {
	if p.PeerAddr == "" {
		return nil
	}
	deadline := time.Now().Add(leavePatience)
	for {
		sctx, cancel := context.WithTimeout(ctx, liveTimeout)
		st, err := e.peers.Status(sctx, p.PeerAddr)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil || st.NodeID != id || st.Left {
			return nil
		}
		if time.Now().After(deadline) {
			e.log.Warn("removed server has not confirmed leaving; taking it out of the system shard anyway", "member", id)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (e *Engine) removeFromShard(ctx context.Context, shardID, id uint64) error {
	// A server that removes itself cannot read a shard's configuration
	// through its replica once that replica applied its removal.
	self := id == e.cfg.NodeID
	if self && e.host.RemovedHere(shardID) {
		return nil
	}
	m, err := e.host.Membership(ctx, shardID)
	if err != nil {
		if self && e.host.RemovedHere(shardID) {
			return nil
		}
		return err
	}
	if !m.Has(id) {
		return nil
	}
	if err := e.host.RemoveMember(ctx, shardID, id); err != nil {
		if self && (e.host.RemovedHere(shardID) || errors.Is(err, errs.Closed) && !e.closed.Load()) {
			// dragonboat stops a replica once it applied its own removal,
			// and ends the request that went through it: it committed.
			return nil
		}
		return err
	}
	e.log.Info("removed member", "shard", shardID, "member", id)
	return nil
}

// leave stops every replica but the system shard's on a server that was
// removed: by now it is out of every group shard's configuration
// (removed/<id> is recorded only after that), so no group loses a voter it
// counts on. The system replica stays until the system shard drops it.
func (e *Engine) leave() {
	e.shardsMu.Lock()
	defer e.shardsMu.Unlock()
	e.mu.Lock()
	already := e.removed
	e.removed = true
	e.mu.Unlock()
	if already {
		return
	}
	e.log.Warn("this server was removed from the cluster; stopping its shards")
	for _, sid := range e.host.Shards() {
		if sid != SystemShard {
			_ = e.host.StopShard(sid)
		}
	}
	e.mu.Lock()
	e.left = true
	e.mu.Unlock()
}

// hasLeft tells whether this server learned of its removal and stopped
// its group replicas.
func (e *Engine) hasLeft() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.left
}

// stepCtxError is ctx's error, carrying the last step error when there was
// one, so that the caller sees both why it stopped and what was failing.
func stepCtxError(ctxErr, last error) error {
	if last == nil {
		return ctxErr
	}
	return fmt.Errorf("%w (last try: %w)", ctxErr, last)
}
