package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// promoteLag is how far (in applied entries) a non-voter may trail this
// server before it is promoted to voter.
const promoteLag = 64

// reconcileLoop keeps this server in line with the catalog: it runs a pass
// at every catalog change, every leader change of the system shard, and
// every ReconcileInterval.
func (e *Engine) reconcileLoop(ctx context.Context) {
	defer close(e.done)
	t := time.NewTicker(e.cfg.ReconcileInterval)
	defer t.Stop()
	var r reconciler
	for {
		r.pass(ctx, e)
		select {
		case <-ctx.Done():
			return
		case <-e.wake:
		case <-t.C:
		}
	}
}

// reconciler is the state one reconcileLoop keeps between passes.
type reconciler struct {
	started       map[uint64]string // group shard id -> name, started by this loop
	recorded      bool              // this server's catalog record matches its addresses
	membersAt     int64             // catalog revision of the last membership pass with nothing left to do
	membersLeader bool
}

func (r *reconciler) pass(ctx context.Context, e *Engine) {
	if r.started == nil {
		r.started = map[uint64]string{}
	}
	cat, err := e.readCatalog(ctx, Stale)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Debug("reconcile: read catalog", "err", err)
		}
		return
	}
	self := e.cfg.NodeID
	if cat.removed[self] {
		r.leave(e)
		e.settle(cat)
		return
	}
	r.syncGroups(e, cat)
	e.settle(cat)
	if !r.recorded {
		r.recordSelf(ctx, e, cat)
	}
	leader, _ := e.host.Leader(SystemShard)
	if leader != self {
		r.membersLeader = false
		return
	}
	if r.membersLeader && r.membersAt == cat.revision {
		return
	}
	if r.syncMembers(ctx, e, cat) {
		r.membersAt, r.membersLeader = cat.revision, true
	} else {
		r.membersLeader = false
	}
}

// syncGroups starts the shards of new groups and removes those of deleted ones.
func (r *reconciler) syncGroups(e *Engine, cat *catalog) {
	self := e.cfg.NodeID
	for name, g := range cat.groups {
		if e.host.Running(g.Shard) {
			r.started[g.Shard] = name
			continue
		}
		var err error
		if _, initial := g.Members[self]; initial {
			err = e.host.StartShard(g.Shard, g.Members, false)
		} else {
			err = e.host.StartShard(g.Shard, nil, true)
		}
		if err != nil {
			e.log.Warn("reconcile: start group shard", "group", name, "shard", g.Shard, "err", err)
			continue
		}
		r.started[g.Shard] = name
	}
	for sid, name := range r.started {
		if g, ok := cat.groups[name]; ok && g.Shard == sid {
			continue
		}
		e.endHub(sid, fmt.Errorf("group %q was deleted: %w", name, errs.GroupNotFound))
		if err := e.host.RemoveShardData(sid); err != nil {
			e.log.Warn("reconcile: remove deleted group", "group", name, "shard", sid, "err", err)
			continue
		}
		delete(r.started, sid)
	}
}

// recordSelf writes this server's addresses into the catalog when they are
// missing or stale (first start of an initial member, or a new PeerAddr).
func (r *reconciler) recordSelf(ctx context.Context, e *Engine, cat *catalog) {
	self := e.cfg.NodeID
	want := Peer{RaftAddr: e.cfg.RaftAddr, PeerAddr: e.cfg.PeerAddr}
	if cat.servers[self] == want {
		r.recorded = true
		return
	}
	if _, ok := e.host.Leader(SystemShard); !ok {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	val, _ := json.Marshal(want)
	_, err := e.txn(wctx, SystemShard, &fsm.Txn{
		Compares: []fsm.Compare{{Key: removedKey(self), Target: fsm.TargetCreateRevision, Op: fsm.OpEqual, Int: 0}},
		Then:     []fsm.Op{{Type: fsm.OpPut, Key: serverKey(self), Value: val}},
	})
	if err != nil && ctx.Err() == nil {
		e.log.Debug("reconcile: record own addresses", "err", err)
	}
}

// syncMembers, on the system shard's leader, makes every shard's Raft
// membership match the catalog: servers join as non-voters, are promoted
// once caught up, and removed servers leave. It reports whether nothing was
// left to do.
func (r *reconciler) syncMembers(ctx context.Context, e *Engine, cat *catalog) bool {
	shards := []uint64{SystemShard, DefaultShard}
	for _, g := range cat.groups {
		if e.host.Running(g.Shard) {
			shards = append(shards, g.Shard)
		}
	}
	done := true
	for _, s := range shards {
		ok, err := r.syncShard(ctx, e, cat, s)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, errs.Closed) {
				e.log.Debug("reconcile: membership", "shard", s, "err", err)
			}
			return false
		}
		done = done && ok
	}
	return done
}

func (r *reconciler) syncShard(ctx context.Context, e *Engine, cat *catalog, shardID uint64) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	m, err := e.host.Membership(cctx, shardID)
	if err != nil {
		return false, err
	}
	done := true
	for id, p := range cat.servers {
		_, voter := m.Voters[id]
		_, learner := m.NonVoters[id]
		_, gone := m.Removed[id]
		switch {
		case gone || cat.removed[id] || voter:
		case !learner:
			done = false
			if err := e.host.AddNonVoter(cctx, shardID, id, p.RaftAddr); err != nil {
				return false, err
			}
			e.log.Info("added non-voting member", "shard", shardID, "member", id)
		case r.caughtUp(cctx, e, shardID, p):
			if err := e.host.AddVoter(cctx, shardID, id, p.RaftAddr); err != nil {
				return false, err
			}
			e.log.Info("promoted member to voter", "shard", shardID, "member", id)
		default:
			done = false
		}
	}
	for id := range cat.removed {
		_, voter := m.Voters[id]
		_, learner := m.NonVoters[id]
		if voter || learner {
			if err := e.host.RemoveMember(cctx, shardID, id); err != nil {
				return false, err
			}
			e.log.Info("removed member", "shard", shardID, "member", id)
		}
	}
	return done, nil
}

// caughtUp asks a non-voter how far it has applied shardID.
func (r *reconciler) caughtUp(ctx context.Context, e *Engine, shardID uint64, p Peer) bool {
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := e.peers.Status(sctx, p.PeerAddr)
	if err != nil {
		return false
	}
	return st.Applied[shardID]+promoteLag >= e.host.Applied(shardID)
}

// leave stops every group shard of a server that was removed.
func (r *reconciler) leave(e *Engine) {
	e.mu.Lock()
	already := e.removed
	e.removed = true
	e.mu.Unlock()
	if already {
		return
	}
	e.log.Warn("this server was removed from the cluster; stopping its shards")
	for sid := range r.started {
		_ = e.host.StopShard(sid)
	}
	_ = e.host.StopShard(DefaultShard)
}

// settle publishes the catalog this pass acted on and wakes waiters.
func (e *Engine) settle(cat *catalog) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.groups = cat.groups
	e.servers = cat.servers
	e.prober.SetAllowScript(cat.settings.ScriptChecks)
	e.recorded = cat.servers[e.cfg.NodeID] == Peer{RaftAddr: e.cfg.RaftAddr, PeerAddr: e.cfg.PeerAddr}
	close(e.settled)
	e.settled = make(chan struct{})
}
