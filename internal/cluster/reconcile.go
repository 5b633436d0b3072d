package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
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
	synced        bool              // a pass acted on the committed catalog once
	recorded      bool              // this server's catalog record matches its addresses
	membersAt     int64             // catalog revision of the last membership pass with nothing left to do
	membersLeader bool
	// membersKey is the servers' part of the catalog (membershipKey) at
	// the last full membership pass with nothing left to do, and
	// membersShards the shards it found in line (with those checked since).
	membersKey    string
	membersShards map[uint64]bool
	// moved is closed once the system shard applies anything after the
	// current pass read the committed catalog (Engine.catalogChan).
	moved <-chan struct{}
}

// firstReadTimeout bounds the committed-catalog read of a pass before the
// first one succeeded, so that the loop keeps answering Close and kicks.
const firstReadTimeout = 5 * time.Second

func (r *reconciler) pass(ctx context.Context, e *Engine) {
	if r.started == nil {
		r.started = map[uint64]string{}
	}
	var cat *catalog
	var err error
	if r.synced {
		cat, err = e.readCatalog(ctx, Stale)
	} else {
		// After a start the local replica may still replay or miss what
		// was committed while this server was down (a group deleted
		// meanwhile): start from the committed catalog, then follow the
		// local replica, which applies in order.
		rctx, cancel := context.WithTimeout(ctx, firstReadTimeout)
		cat, err = e.readCatalog(rctx, Linearizable)
		cancel()
	}
	if err != nil {
		if ctx.Err() == nil {
			e.log.Debug("reconcile: read catalog", "err", err)
		}
		if !r.synced {
			// A server removed while it was down can no longer read the
			// committed catalog, but may have its removal in its own copy:
			// a removal is for good, so a stale copy showing it is right.
			if local, lerr := e.readCatalog(ctx, Stale); lerr == nil {
				if _, gone := local.removed[e.cfg.NodeID]; gone {
					e.leave()
				}
			}
		}
		return
	}
	if !r.synced {
		r.removeLeftovers(e, cat)
		r.synced = true
	}
	self := e.cfg.NodeID
	if _, gone := cat.removed[self]; gone {
		e.leave()
		e.settle(cat)
		if leader, _ := e.host.Leader(SystemShard); leader == self {
			// Only the system shard's leader finishes removals, and while
			// this server leads it nobody else takes it out.
			rctx, cancel := context.WithTimeout(ctx, removalTimeout)
			if err := e.advanceRemoval(rctx, self); err != nil && ctx.Err() == nil {
				e.log.Debug("reconcile: leave the system shard", "err", err)
			}
			cancel()
		}
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
	// Membership changes act on the committed catalog, not on what this
	// replica has applied so far (a new leader may trail its own commit).
	// Taken before the read: what the system shard applies after it may
	// change the catalog this pass acts on.
	r.moved = e.catalogChan()
	lctx, cancel := context.WithTimeout(ctx, firstReadTimeout)
	lcat, err := e.readCatalog(lctx, Linearizable)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			e.log.Debug("reconcile: read catalog", "err", err)
		}
		r.membersLeader = false
		return
	}
	key := membershipKey(lcat)
	if r.membersLeader && r.membersKey == key {
		// Only groups came or went since every shard was found in line:
		// the new ones are all there is to check (a full pass per group
		// created made creating N groups cost N² membership reads).
		if r.syncNewShards(ctx, e, lcat) {
			r.membersAt = lcat.revision
		}
		return
	}
	if shards, ok := r.syncMembers(ctx, e, lcat); ok {
		r.membersAt, r.membersLeader = lcat.revision, true
		r.membersKey, r.membersShards = key, shards
	} else {
		r.membersLeader = false
	}
}

// membershipKey is what of cat a membership pass acts on besides the
// groups: the servers, their addresses, and the removals.
func membershipKey(cat *catalog) string {
	var b strings.Builder
	for _, id := range sortedIDs(cat.servers) {
		fmt.Fprintf(&b, "s%d=%s;", id, cat.servers[id].RaftAddr)
	}
	for _, id := range sortedIDs(cat.leaving) {
		fmt.Fprintf(&b, "l%d;", id)
	}
	for _, id := range sortedIDs(cat.removed) {
		fmt.Fprintf(&b, "r%d;", id)
	}
	fmt.Fprintf(&b, "R%d", cat.removalsRev)
	return b.String()
}

// moveCatalog wakes what waits for the system shard to apply more.
func (e *Engine) moveCatalog() {
	e.movedMu.Lock()
	close(e.catalogMoved)
	e.catalogMoved = make(chan struct{})
	e.movedMu.Unlock()
}

// catalogChan is the channel moveCatalog closes next.
func (e *Engine) catalogChan() <-chan struct{} {
	e.movedMu.Lock()
	defer e.movedMu.Unlock()
	return e.catalogMoved
}

// untilMoved returns ctx, cancelled as well once moved is closed: the
// system shard applied something after the pass began, so the catalog it
// acts on is out of date (a group it checks may be deleted, and waiting
// for that group's leader would hold up the pass that stops it).
func untilMoved(ctx context.Context, moved <-chan struct{}) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-moved:
			cancel()
		case <-cctx.Done():
		}
	}()
	return cctx, cancel
}

// syncNewShards brings the group shards that the last passes have not
// found in line into line; it reports whether they all are now. A group
// whose shard this server does not run is skipped, as a full pass skips
// it, and checked at the next catalog change.
func (r *reconciler) syncNewShards(ctx context.Context, e *Engine, cat *catalog) bool {
	r.forgetDeletedShards(cat)
	done := true
	for _, g := range cat.groups {
		if r.membersShards[g.Shard] {
			continue
		}
		if !e.host.Running(g.Shard) {
			continue
		}
		ok, err := false, e.step(ctx, "membership", g.Shard)
		if err == nil {
			ok, err = r.syncShard(ctx, e, cat, g.Shard)
		}
		if err != nil && ctx.Err() == nil && !errors.Is(err, errs.Closed) {
			e.log.Debug("reconcile: membership", "shard", g.Shard, "err", err)
		}
		if err != nil || !ok {
			done = false
			continue
		}
		r.membersShards[g.Shard] = true
	}
	return done
}

// forgetDeletedShards drops the shards of deleted groups from
// membersShards, which would otherwise grow by one entry per group ever
// created. Shard ids are not reused, so a dropped one is never checked
// again.
func (r *reconciler) forgetDeletedShards(cat *catalog) {
	live := make(map[uint64]bool, len(cat.groups))
	for _, g := range cat.groups {
		live[g.Shard] = true
	}
	for s := range r.membersShards {
		if s != SystemShard && s != DefaultShard && !live[s] {
			delete(r.membersShards, s)
		}
	}
}

// syncGroups starts the shards of new groups and removes those of deleted ones.
func (r *reconciler) syncGroups(e *Engine, cat *catalog) {
	self := e.cfg.NodeID
	// Shards start and stop under shardsMu, so that none starts after
	// this server left (leave may run on a RemoveServer caller).
	e.shardsMu.Lock()
	defer e.shardsMu.Unlock()
	if e.hasLeft() {
		return
	}
	// Publish the catalog's groups before a deleted group's shard stops:
	// from now on nothing is routed to it (resolve asks the catalog).
	e.mu.Lock()
	e.groups = cat.groups
	e.mu.Unlock()
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

// removeLeftovers removes, at start, the data of shards that no group of
// the committed catalog names: groups deleted while this server was down,
// or deleted just before a crash cut the removal of their data short.
// Shard ids are never reused, so such data can serve nothing.
func (r *reconciler) removeLeftovers(e *Engine, cat *catalog) {
	keep := map[uint64]bool{SystemShard: true, DefaultShard: true}
	for _, g := range cat.groups {
		keep[g.Shard] = true
	}
	for _, sid := range e.host.LocalShards() {
		if keep[sid] || e.host.Running(sid) {
			continue
		}
		if err := e.host.RemoveShardData(sid); err != nil {
			e.log.Warn("reconcile: remove data of a deleted group", "shard", sid, "err", err)
			continue
		}
		e.log.Info("removed data of a shard no group names any more", "shard", sid)
	}
}

// recordSelf writes this server's addresses and flags into the catalog when
// they are missing or stale (first start of an initial member, a new
// PeerAddr, a restart with other flags).
func (r *reconciler) recordSelf(ctx context.Context, e *Engine, cat *catalog) {
	self := e.cfg.NodeID
	want := Peer{RaftAddr: e.cfg.RaftAddr, PeerAddr: e.cfg.PeerAddr}
	if e.recordedIn(cat) {
		r.recorded = true
		return
	}
	if _, ok := e.host.Leader(SystemShard); !ok {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	val, _ := json.Marshal(want)
	flags, _ := json.Marshal(e.ownFlags())
	_, err := e.txn(wctx, SystemShard, &fsm.Txn{
		Compares: []fsm.Compare{{Key: removedKey(self), Target: fsm.TargetCreateRevision, Op: fsm.OpEqual, Int: 0}},
		Then: []fsm.Op{{Type: fsm.OpPut, Key: serverKey(self), Value: val},
			{Type: fsm.OpPut, Key: flagsKey(self), Value: flags}},
	})
	if err != nil && ctx.Err() == nil {
		e.log.Debug("reconcile: record own addresses", "err", err)
	}
}

// handOver moves the system shard's leadership off this server, whose
// removal is under way, and reports whether another server leads it now:
// that one drives the removal. Driven from here, this server's reconcile
// pass could wait out shardStepTimeout on a change to a group shard made
// through its own replica, which another server's removal of it had
// already committed (its replica, out of the configuration, never hears
// of it): meanwhile it does not act on removed/<id>, and once the other
// server gave up waiting (leavePatience) and took it out of the system
// shard, it could never learn that it was removed and kept its replicas
// running (TestRemoveLiveServerOfTwo, seen once in 40 runs).
func (r *reconciler) handOver(ctx context.Context, e *Engine) bool {
	_, ok := e.otherLeader(ctx)
	return ok
}

// syncMembers, on the system shard's leader, makes every shard's Raft
// membership match the catalog: removals under way are taken a step
// further, servers join as non-voters and are promoted once caught up, and
// removed servers leave. A shard that fails does not stop the others. It
// reports whether nothing was left to do.
func (r *reconciler) syncMembers(ctx context.Context, e *Engine, cat *catalog) (map[uint64]bool, bool) {
	done := true
	inLine := map[uint64]bool{}
	for _, id := range sortedIDs(cat.leaving) {
		done = false // the catalog changes when the removal is recorded
		if id == e.cfg.NodeID && r.handOver(ctx, e) {
			return nil, false
		}
		rctx, cancel := context.WithTimeout(ctx, removalTimeout)
		err := e.advanceRemoval(rctx, id)
		cancel()
		if err != nil && ctx.Err() == nil && !errors.Is(err, errs.Closed) {
			e.log.Warn("reconcile: remove server", "member", id, "err", err)
		}
	}
	shards := []uint64{SystemShard, DefaultShard}
	for _, g := range cat.groups {
		if e.host.Running(g.Shard) {
			shards = append(shards, g.Shard)
		}
	}
	for _, s := range shards {
		ok, err := false, e.step(ctx, "membership", s)
		if err == nil {
			ok, err = r.syncShard(ctx, e, cat, s)
		}
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, errs.Closed) {
				e.log.Debug("reconcile: membership", "shard", s, "err", err)
			}
			done = false
			continue
		}
		if ok {
			inLine[s] = true
		}
		done = done && ok
	}
	return inLine, done
}

func sortedIDs(m map[uint64]Peer) []uint64 {
	out := make([]uint64, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (r *reconciler) syncShard(ctx context.Context, e *Engine, cat *catalog, shardID uint64) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if shardID != SystemShard && shardID != DefaultShard && r.moved != nil {
		// A group's shard: stop when the catalog moves (it may have
		// deleted the group); the next pass, already due, looks again.
		var stop context.CancelFunc
		cctx, stop = untilMoved(cctx, r.moved)
		defer stop()
	}
	m, err := e.host.Membership(cctx, shardID)
	if err != nil {
		return false, err
	}
	done := true
	for id, p := range cat.servers {
		_, voter := m.Voters[id]
		_, learner := m.NonVoters[id]
		_, gone := m.Removed[id]
		_, removed := cat.removed[id]
		_, leaving := cat.leaving[id]
		switch {
		case gone || removed || leaving || voter:
		case !learner:
			done = false
			if err := e.host.AddNonVoter(cctx, shardID, id, p.RaftAddr); err != nil {
				return false, err
			}
			e.log.Info("added non-voting member", "shard", shardID, "member", id)
		case r.caughtUp(cctx, e, shardID, id, p):
			if err := e.host.AddVoter(cctx, shardID, id, p.RaftAddr); err != nil {
				return false, err
			}
			e.log.Info("promoted member to voter", "shard", shardID, "member", id)
		default:
			done = false
		}
	}
	for id, p := range cat.removed {
		if !m.Has(id) {
			continue
		}
		if shardID == SystemShard {
			// Last step of a removal: only once the server knows.
			if err := e.finishRemoval(ctx, id, p); err != nil {
				return false, err
			}
			continue
		}
		// Left over in a group shard (one created while the server was
		// leaving, say); the server stopped its replicas already.
		if err := e.host.RemoveMember(cctx, shardID, id); err != nil {
			return false, err
		}
		e.log.Info("removed member", "shard", shardID, "member", id)
	}
	return done, nil
}

// caughtUp asks non-voter id how far it has applied shardID. A server that
// does not run the shard at all is not caught up, however young the shard
// is (its applied index is absent, not 0).
func (r *reconciler) caughtUp(ctx context.Context, e *Engine, shardID, id uint64, p Peer) bool {
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := e.peers.Status(sctx, p.PeerAddr)
	// Another server answering at that address (a record with another's
	// peer address) is not this one: it made a server that never started a
	// voter, and the cluster lost the majority it counted on.
	if err != nil || st.NodeID != id {
		return false
	}
	applied, runs := st.Applied[shardID]
	return runs && applied+promoteLag >= e.host.Applied(shardID)
}

// settle publishes the catalog this pass acted on and wakes waiters.
func (e *Engine) settle(cat *catalog) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.groups = cat.groups
	e.servers = cat.servers
	e.flags = cat.flags
	e.prober.SetAllowScript(cat.settings.ScriptChecks && e.cfg.EnableScriptChecks)
	e.recorded = e.recordedIn(cat)
	e.host.SetBatching(allGroupCommit(cat, e.host.KnownReplicas()))
	close(e.settled)
	e.settled = make(chan struct{})
}

// ownFlags are this server's flags as the catalog should record them.
func (e *Engine) ownFlags() serverFlags {
	return serverFlags{ScriptChecks: e.cfg.EnableScriptChecks, GroupCommit: true}
}

// allGroupCommit tells whether every server that may apply this server's
// entries records that it applies batch entries: the servers of cat, the
// members each group was created with, and the replicas this server's
// shards know of (an initial member that has not started yet is in none
// of the catalog's lists). A server of an older version would fail batch
// entries, and its state would part from the others'.
func allGroupCommit(cat *catalog, replicas map[uint64]bool) bool {
	ids := maps.Clone(replicas)
	if ids == nil {
		ids = map[uint64]bool{}
	}
	for id := range cat.servers {
		ids[id] = true
	}
	for _, g := range cat.groups {
		for id := range g.Members {
			ids[id] = true
		}
	}
	for id := range ids {
		if _, removed := cat.removed[id]; removed {
			continue
		}
		if !cat.flags[id].GroupCommit {
			return false
		}
	}
	return len(ids) > 0
}

// recordedIn tells whether cat has this server's addresses and flags.
func (e *Engine) recordedIn(cat *catalog) bool {
	f, ok := cat.flags[e.cfg.NodeID]
	return cat.servers[e.cfg.NodeID] == Peer{RaftAddr: e.cfg.RaftAddr, PeerAddr: e.cfg.PeerAddr} &&
		ok && f == e.ownFlags()
}
