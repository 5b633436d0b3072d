package cluster

import (
	"context"
	"os"
	"path/filepath"
	"sort"

	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/svc"
)

// These report engine internals that the public API does not show, for the
// root package's tests (export_test.go).

// SystemLeader is the leader of the system shard as this server knows it
// (0 = none known).
func (e *Engine) SystemLeader() uint64 {
	id, _ := e.host.Leader(SystemShard)
	return id
}

// ShardOf is the shard id of a group as this server's catalog view has it
// (0 = unknown); "_system" names the system shard.
func (e *Engine) ShardOf(group string) uint64 {
	switch group {
	case "_system":
		return SystemShard
	case "", DefaultGroup:
		return DefaultShard
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if g, ok := e.groups[group]; ok {
		return g.Shard
	}
	return 0
}

// CheckerLoads counts the full reads of a group's instances that this
// server's checkers made (one when a checker starts; the changes after it
// come from the watch history).
func (e *Engine) CheckerLoads() uint64 { return e.checkLoads.Load() }

// RaftApplied is the last Raft log index this server's replica of group
// applied ("_system": the catalog), 0 when it runs none: every committed
// entry moves it, whether or not it changed a key.
func (e *Engine) RaftApplied(group string) uint64 { return e.host.Applied(e.ShardOf(group)) }

// ShardMembers reads a shard's Raft configuration through this server:
// voters and non-voters, each sorted.
func (e *Engine) ShardMembers(ctx context.Context, shardID uint64) (voters, nonVoters []uint64, err error) {
	m, err := e.host.Membership(ctx, shardID)
	if err != nil {
		return nil, nil, err
	}
	for id := range m.Voters {
		voters = append(voters, id)
	}
	for id := range m.NonVoters {
		nonVoters = append(nonVoters, id)
	}
	sort.Slice(voters, func(i, j int) bool { return voters[i] < voters[j] })
	sort.Slice(nonVoters, func(i, j int) bool { return nonVoters[i] < nonVoters[j] })
	return voters, nonVoters, nil
}

// LocalShards lists the shards this server has data of on disk, running or
// not, sorted.
func (e *Engine) LocalShards() []uint64 { return e.host.LocalShards() }

// StoredShards lists the shards that have state in this server's store.
func (e *Engine) StoredShards() ([]uint64, error) { return e.host.StoredShards() }

// SetCloseHook makes every state machine started from now on run h (its
// shard id) as its Close begins; nil removes it. For tests.
func (e *Engine) SetCloseHook(h func(shardID uint64)) { e.host.SetCloseHook(h) }

// SetStartHook makes every replica started from now on run h (its shard
// id) once its state machine exists, before the engine knows the replica.
func (e *Engine) SetStartHook(h func(shardID uint64)) { e.host.SetStartHook(h) }

// SetStepHook installs (or, with nil, removes) a hook that runs when a
// membership step is about to start, for tests: "leaving" (id = the
// server; it is recorded as leaving and its removal from the group shards
// begins) and "membership" (id = a shard; the system shard's leader is
// about to reconcile its configuration). An error from the hook fails the
// step. The hook gets a ctx that ends when the step's caller gives up or
// the engine closes.
func (e *Engine) SetStepHook(h func(ctx context.Context, step string, id uint64) error) {
	if h == nil {
		e.stepHook.Store(nil)
		return
	}
	e.stepHook.Store(&h)
}

func (e *Engine) step(ctx context.Context, step string, id uint64) error {
	if h := e.stepHook.Load(); h != nil {
		return (*h)(ctx, step, id)
	}
	return nil
}

// SetCheckWriteHook installs (or, with nil, removes) a hook that runs
// before every write of this server's checkers, with the instance key; a
// test blocks in it to make the write race a registration.
func (e *Engine) SetCheckWriteHook(h func(key, status string)) {
	if h == nil {
		e.checkWriteHook.Store(nil)
		return
	}
	e.checkWriteHook.Store(&h)
}

// CheckerStore is the store a checker of group uses on this server.
func (e *Engine) CheckerStore(ctx context.Context, group string) (svc.Store, error) {
	sid, err := e.resolve(ctx, group)
	if err != nil {
		return nil, err
	}
	return newGroupStore(e, sid), nil
}

// StoredLeases maps each lease of group's local replica to its TTL and
// checkpointed remaining time (ms; 0 = none), as the state machine holds
// them.
func (e *Engine) StoredLeases(ctx context.Context, group string) (map[int64][2]int64, error) {
	sid, err := e.resolve(ctx, group)
	if err != nil {
		return nil, err
	}
	v, err := e.host.Read(ctx, sid, fsm.LeasesQuery{})
	if err != nil {
		return nil, err
	}
	out := map[int64][2]int64{}
	for _, l := range v.(*fsm.LeasesResult).Leases {
		out[l.ID] = [2]int64{l.TTL, l.Remaining}
	}
	return out, nil
}

// RestorePending tells whether restored shards still have to compact
// their Raft log here.
func (e *Engine) RestorePending() bool {
	_, err := os.Stat(filepath.Join(e.cfg.DataDir, restoredFile))
	return err == nil
}

// LessorEpoch reads the lessor epoch of group's shard linearizably: it
// grows with every leader that took over the group's leases (tests).
func (e *Engine) LessorEpoch(ctx context.Context, group string) (uint64, error) {
	sid, err := e.resolve(ctx, group)
	if err != nil {
		return 0, err
	}
	v, err := e.host.Read(ctx, sid, fsm.EpochQuery{})
	if err != nil {
		return 0, err
	}
	return v.(uint64), nil
}

// SetEngineCloseHook installs a function Close runs once it refuses new calls,
// before it waits for the loops and closes the host; for tests.
func (e *Engine) SetEngineCloseHook(h func()) { e.closeHook.Store(&h) }
