package dister

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/dister/dister/internal/client"
	"github.com/dister/dister/internal/cluster"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/svc"
)

// SetProposeHook exposes the engine's test hook: h runs after every
// committed proposal with its encoded bytes.
func SetProposeHook(n *Node, h func(ctx context.Context, shardID uint64, cmd []byte)) {
	server(n).SetTxnHook(h)
}

// SetSubmitHook runs h each time n hands a proposal to the Raft engine.
func SetSubmitHook(n *Node, h func(shardID uint64)) { server(n).SetSubmitHook(h) }

// ProposeAgain re-sends an encoded proposal, as a retry after a lost reply.
func ProposeAgain(ctx context.Context, n *Node, shardID uint64, cmd []byte) (revision int64, succeeded bool, err error) {
	r, err := server(n).ProposeAgain(ctx, shardID, cmd)
	if err != nil {
		return 0, false, err
	}
	return r.Revision, r.Succeeded, nil
}

// SetViewIdle shortens a Balancer's sweep period; call it before its first
// Pick.
func SetViewIdle(b *Balancer, d time.Duration) { b.idle = d }

// ViewCount is how many services a Balancer keeps a view of.
func ViewCount(b *Balancer) int64 { return b.count.Load() }

// SystemLeader is the system shard's leader as n knows it (0 = none).
func SystemLeader(n *Node) uint64 { return server(n).SystemLeader() }

// ShardOf is the shard id of a group as n knows it (0 = unknown); "_system"
// names the system shard.
func ShardOf(n *Node, group string) uint64 { return server(n).ShardOf(group) }

// ShardMembers reads a shard's Raft configuration through n.
func ShardMembers(ctx context.Context, n *Node, shardID uint64) (voters, nonVoters []uint64, err error) {
	return server(n).ShardMembers(ctx, shardID)
}

// LocalShards lists the shards n has data of on disk.
func LocalShards(n *Node) []uint64 { return server(n).LocalShards() }

// StoredShards lists the shards that have state in n's store.
func StoredShards(n *Node) []uint64 {
	ids, _ := server(n).StoredShards()
	return ids
}

// SeedStoredShard leaves state of shard in the store of the stopped
// server whose data dir is dataDir, as a crash in the middle of removing
// it would.
func SeedStoredShard(dataDir string, shard uint64) error {
	st, err := fsm.OpenShared(filepath.Join(dataDir, "state", "store"), 1<<20)
	if err != nil {
		return err
	}
	sm := fsm.New(filepath.Join(dataDir, "state", "unused"), fsm.Options{Shared: st, Shard: shard})
	_, err = sm.Open(nil)
	_ = sm.Close()
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	return err
}

// SetCloseHook makes every state machine n starts from now on run h (its
// shard id) as its Close begins.
func SetCloseHook(n *Node, h func(shardID uint64)) { server(n).SetCloseHook(h) }

// SetStartHook makes every replica n starts from now on run h (its shard
// id) once its state machine exists, before the engine knows the replica;
// nil removes it.
func SetStartHook(n *Node, h func(shardID uint64)) { server(n).SetStartHook(h) }

// SetStepHook runs h when a membership step is about to start on n; an
// error from h fails the step.
func SetStepHook(n *Node, h func(ctx context.Context, step string, id uint64) error) {
	server(n).SetStepHook(h)
}

// SetHubHook makes every watch hub of n run h (shard id of its group)
// before it reads what the local replica applied; nil removes it. A test
// blocks in h to make a hub fall behind.
func SetHubHook(n *Node, h func(shardID uint64)) { server(n).SetHubHook(h) }

// ClientFeedServer is the PeerAddr of the server that streams a client
// node's cache feed of group ("" = none yet).
func ClientFeedServer(n *Node, group string) string {
	return n.e.(*client.Engine).FeedServer(group)
}

// ClientFeedsUnfiltered makes a client node's caches follow their groups
// through unfiltered watches, as against a server of an earlier version
// (call it before the first Get).
func ClientFeedsUnfiltered(n *Node) { n.e.(*client.Engine).UseUnfilteredFeeds() }

// ClientFeedFiltered tells whether the cache feed of group is filtered.
func ClientFeedFiltered(n *Node, group string) bool {
	return n.e.(*client.Engine).FeedFiltered(group)
}

// ClientWriteCalls counts the calls a client node made for writes:
// Propose calls, ProposeMany calls and the commands those carried.
func ClientWriteCalls(n *Node) (proposes, manys, commandsInMany int64) {
	return n.e.(*client.Engine).WriteCalls()
}

// ClientQueuedWrites is how many writes wait in a client node's queues
// for a call to the leader.
func ClientQueuedWrites(n *Node) int { return n.e.(*client.Engine).QueuedWrites() }

// SetPeerProposeHook runs h as each client Propose (n 1, many false) or
// ProposeMany (n commands) reaches server n; its error fails the call.
func SetPeerProposeHook(n *Node, h func(ctx context.Context, count int, many bool) error) {
	server(n).SetPeerProposeHook(h)
}

// ClientCacheLen is the number of keys a client node caches of group.
func ClientCacheLen(n *Node, group string) int { return n.e.(*client.Engine).CacheLen(group) }

// Checkers is how many service checkers server n runs (one per group it
// leads that holds services).
func Checkers(n *Node) int { return server(n).Checkers() }

// server is n's server engine (tests of the server role only).
func server(n *Node) *cluster.Engine { return n.e.(*cluster.Engine) }

// NodeLogger is the logger n writes to (Options.Logger, or what Open chose).
func NodeLogger(n *Node) *slog.Logger { return n.log }

// SetCheckWriteHook runs h (the instance key) before every checker write
// on n; nil removes it.
func SetCheckWriteHook(n *Node, h func(key string)) {
	if h == nil {
		server(n).SetCheckWriteHook(nil)
		return
	}
	server(n).SetCheckWriteHook(func(key, _ string) { h(key) })
}

// SetCheckStatusHook runs h (the instance key and the status written, ""
// for a removal) before every checker write on n; nil removes it.
func SetCheckStatusHook(n *Node, h func(key, status string)) { server(n).SetCheckWriteHook(h) }

// CheckerStore is the store n's checker of group writes through.
func CheckerStore(ctx context.Context, n *Node, group string) (svc.Store, error) {
	return server(n).CheckerStore(ctx, group)
}

// CheckerLoads counts the full reads of a group's instances n's checkers
// made.
func CheckerLoads(n *Node) uint64 { return server(n).CheckerLoads() }

// RaftApplied is the last Raft index n's replica of group applied
// ("_system": the catalog).
func RaftApplied(n *Node, group string) uint64 { return server(n).RaftApplied(group) }

// ProbesNotRun counts the probes n's checkers could not run.
func ProbesNotRun(n *Node) uint64 { return server(n).ProbesNotRun() }

// InstanceLease is the lease that keeps a ttl instance's heartbeat (0 if
// none), read linearizably through n.
func InstanceLease(ctx context.Context, n *Node, group, service, id string) (LeaseID, error) {
	sts, _, err := n.e.Instances(ctx, group, service, cluster.ReadOpts{Consistency: cluster.Linearizable})
	if err != nil {
		return 0, err
	}
	for _, st := range sts {
		if st.Record.ID == id {
			return LeaseID(st.Record.Lease), nil
		}
	}
	return 0, ErrNotFound
}

// KeepAliveBatches counts the KeepAliveBatch calls n's keeper made.
func KeepAliveBatches(n *Node) int64 {
	n.keep.mu.Lock()
	defer n.keep.mu.Unlock()
	return n.keep.batches
}

// StoredLeases maps each lease of a group, as n's replica stores it, to
// its TTL and checkpointed remaining time in ms (0 = no checkpoint).
func StoredLeases(ctx context.Context, n *Node, group string) (map[int64][2]int64, error) {
	return server(n).StoredLeases(ctx, group)
}

// RestorePending tells whether n still has restored shards whose Raft log
// it has not compacted.
func RestorePending(n *Node) bool { return server(n).RestorePending() }

// FeedHooks receive what a coalescing feed of a service (the one the
// Balancer's views use) delivers; Put may block to hold the feed.
type FeedHooks struct {
	Load     func(rev int64)
	Put      func(id string)
	Commit   func(rev int64)
	Progress func(rev int64)
}

// Feed runs a coalescing feed of service on g until ctx ends.
func Feed(ctx context.Context, g *Group, service string, h FeedHooks) error {
	return g.Services().feed(ctx, service, feedFuncs{
		load:     func(rev int64, _ []*Instance) bool { h.Load(rev); return true },
		put:      func(in *Instance) { h.Put(in.ID) },
		del:      func(string) {},
		commit:   func(rev int64) bool { h.Commit(rev); return true },
		progress: h.Progress,
		coalesce: true,
	})
}

// RequestProgress asks every watch of group on n for a progress note, as
// the Balancer's confirmation does.
func RequestProgress(ctx context.Context, n *Node, group string) error {
	return n.e.RequestProgress(ctx, group)
}

// LessorEpoch is the lessor epoch of group: it grows with every leader
// that took over the group's leases.
func LessorEpoch(ctx context.Context, n *Node, group string) (uint64, error) {
	return server(n).LessorEpoch(ctx, group)
}

// SetKeeperRenewedHook runs h after each of n's keeper's KeepAliveBatch
// calls, before the keeper acts on the answer (nil removes it).
func SetKeeperRenewedHook(n *Node, h func(group string, err error)) {
	if h == nil {
		n.keep.renewed.Store(nil)
		return
	}
	n.keep.renewed.Store(&h)
}

// KeptLeases is how many leases and instances n's keeper keeps for group.
func KeptLeases(n *Node, group string) (leases, insts int) {
	n.keep.mu.Lock()
	defer n.keep.mu.Unlock()
	if g := n.keep.groups[group]; g != nil {
		return len(g.leases), len(g.insts)
	}
	return 0, 0
}

// SetEngineCloseHook runs h in n.Close once n refuses new calls, before
// Close waits for n's loops and closes its Raft host.
func SetEngineCloseHook(n *Node, h func()) { server(n).SetEngineCloseHook(h) }
