// Package shard runs dister's Raft shards on dragonboat. It is the only
// package that imports dragonboat: it adapts internal/fsm to dragonboat's
// on-disk state machine, retries temporary engine errors, and translates
// engine errors into the sentinels of internal/errs.
package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// Config configures one Host (one dragonboat NodeHost). Zero values are
// replaced by the defaults documented on each field.
type Config struct {
	NodeID   uint64
	DataDir  string // Raft log under DataDir/raft, state under DataDir/state
	RaftAddr string

	// RTT is dragonboat's RTTMillisecond, the unit of the two counts below.
	// 0 = 20ms: 5ms caused spurious elections on a loaded 2-core machine.
	RTT time.Duration
	// ElectionRTT: 0 = 10 (an election after 200-400ms without a leader).
	ElectionRTT uint64
	// HeartbeatRTT: 0 = 1.
	HeartbeatRTT uint64
	// SnapshotEntries: applied entries between snapshots; 0 = 10,000.
	SnapshotEntries uint64
	// CompactionOverhead: entries kept behind a snapshot; 0 = 5,000.
	CompactionOverhead uint64
	// StateCacheBytes is the block cache shared by the state machines of
	// this host (every group); 0 = 64 MiB.
	StateCacheBytes int64
	// SessionHorizon (ms) and EventRetention are passed to fsm.Options.
	SessionHorizon int64
	EventRetention uint64
	// AttemptTimeout bounds one try of a proposal or read; 0 = 3s. A try
	// ends early when the shard's leader changes, so failover does not
	// wait for it.
	AttemptTimeout time.Duration
	Logger         *slog.Logger // nil = slog.Default()

	// OnApply, if set, is called after entries were applied to a shard and
	// after a snapshot was installed in its place. It must not block.
	OnApply func(shardID uint64)
	// OnLeaderChange, if set, is called when this host learns of a new
	// leader (0 = none known). It must not block.
	OnLeaderChange func(shardID, leaderID uint64)

	// TLS, if set, turns on dragonboat's mutual TLS on the Raft transport.
	// dragonboat reads the files when the host starts (a new certificate
	// takes effect at a restart) and trusts any certificate CAFile signed.
	TLS *TLSFiles

	// engineTransport runs dragonboat's built-in TCP transport instead of
	// transport.go's (tests of the two talking to each other).
	engineTransport bool
}

// TLSFiles are the Raft transport's PEM files.
type TLSFiles struct {
	CAFile, CertFile, KeyFile string
}

func (c *Config) setDefaults() {
	if c.RTT == 0 {
		c.RTT = 20 * time.Millisecond
	}
	if c.ElectionRTT == 0 {
		c.ElectionRTT = 10
	}
	if c.HeartbeatRTT == 0 {
		c.HeartbeatRTT = 1
	}
	if c.SnapshotEntries == 0 {
		c.SnapshotEntries = 10000
	}
	if c.CompactionOverhead == 0 {
		c.CompactionOverhead = 5000
	}
	if c.StateCacheBytes == 0 {
		c.StateCacheBytes = 64 << 20
	}
	if c.AttemptTimeout == 0 {
		c.AttemptTimeout = 3 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Host owns one NodeHost and the state machines of its replicas.
type Host struct {
	cfg Config
	nh  *dragonboat.NodeHost

	mu       sync.Mutex
	machines map[uint64]*fsm.StateMachine // shardID -> running state machine
	learners map[uint64]bool              // shards joined as non-voters (see roles.go)
	shared   *fsm.Shared                  // caches shared by the state machines
	leaders  map[uint64]*leaderState
	readers  map[uint64]*readBatcher  // linearizable read rounds per shard
	writers  map[uint64]*writeBatcher // group commit per shard
	batching atomic.Bool              // group commit on (SetBatching)
	// removedHere: shards whose local replica applied its own removal
	// (see RemovedHere); memory only, a restart forgets it.
	removedHere map[uint64]bool
	// closing: per shard started here, closed once its state machine closed.
	closing map[uint64]chan struct{}
	// registering: per shard, set while a StartShard call has had its
	// state machine made (Running is true) and dragonboat has not returned
	// from registering the replica yet (it answers ErrShardNotFound);
	// closed when that call returns. Nothing else sets it: a replica that
	// stopped or applied its own removal is never in it.
	registering map[uint64]chan struct{}
	closeHook   atomic.Pointer[func(shardID uint64)] // tests only
	startHook   atomic.Pointer[func(shardID uint64)] // tests only
	// snapshotsReceived counts snapshots streamed to this host's replicas.
	snapshotsReceived atomic.Uint64
	// transport is the Raft transport dragonboat made (nil with its own).
	transport atomic.Pointer[transport]
	// logdb is the Raft log store dragonboat made (see logdb.go).
	logdb atomic.Pointer[lazyCommitLogDB]

	life   context.Context // ends at Close; bounds work the host starts itself
	end    context.CancelFunc
	rounds sync.WaitGroup // read-round and write-batch goroutines

	closed atomic.Bool
	// refusing: no new proposal or read is handed to the engine (its
	// user is closing; see Refuse).
	refusing   atomic.Bool
	closeOnce  sync.Once
	submitHook atomic.Pointer[func(shardID uint64)] // tests only
}

type leaderState struct {
	id      uint64
	changed chan struct{} // closed and replaced when id changes
}

// NewHost starts a NodeHost. No shard runs until StartShard.
func NewHost(cfg Config) (*Host, error) {
	cfg.setDefaults()
	installLogger(cfg.Logger, cfg.RaftAddr)
	h := &Host{
		cfg:      cfg,
		machines: make(map[uint64]*fsm.StateMachine),
		learners: make(map[uint64]bool),
		leaders:  make(map[uint64]*leaderState),
		readers:  make(map[uint64]*readBatcher),
		writers:  make(map[uint64]*writeBatcher),

		removedHere: make(map[uint64]bool),
		closing:     make(map[uint64]chan struct{}),
		registering: make(map[uint64]chan struct{}),
	}
	h.life, h.end = context.WithCancel(context.Background())
	raftDir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(raftDir, 0o750); err != nil {
		return nil, errs.Mark(fmt.Errorf("create raft dir: %w", err), errs.Invalid)
	}
	logdb := config.GetTinyMemLogDBConfig()
	// One LogDB shard: every group's entries share one WAL and one fsync
	// per batch instead of one per group. It cannot change after the data
	// dir is created.
	logdb.Shards = 1
	// 16 MiB memtables, not the tiny config's 4: each flush writes and
	// syncs a table the next Raft fsyncs wait behind, and with 4 MiB one
	// came every second at 15,000 puts/s (BenchmarkPutSpread p99 at 256
	// writers 43.3 and 42.5 ms with 4 MiB, 35.2 and 32.5 ms with 16, same
	// run). At most KVMaxWriteBufferNumber (4) of them are held.
	logdb.KVWriteBufferSize = 16 << 20
	if err := h.loadLearners(); err != nil {
		return nil, err
	}
	nhc := config.NodeHostConfig{
		NodeHostDir:         raftDir,
		WALDir:              raftDir,
		RTTMillisecond:      uint64(cfg.RTT / time.Millisecond),
		RaftAddress:         cfg.RaftAddr,
		RaftEventListener:   (*listener)(h),
		SystemEventListener: (*sysListener)(h),
		Expert: config.ExpertConfig{LogDB: logdb,
			LogDBFactory: lazyCommitFactory{made: &h.logdb}},
	}
	if !cfg.engineTransport {
		nhc.Expert.TransportFactory = transportFactory{log: cfg.Logger, made: &h.transport}
	}
	if t := cfg.TLS; t != nil {
		nhc.MutualTLS, nhc.CAFile, nhc.CertFile, nhc.KeyFile = true, t.CAFile, t.CertFile, t.KeyFile
	}
	nh, err := dragonboat.NewNodeHost(nhc)
	if err != nil {
		h.end()
		// Address in use, unusable directory, or a data dir written with
		// other settings: all problems of the configuration.
		return nil, errs.Mark(fmt.Errorf("start raft host on %s in %s: %w", cfg.RaftAddr, raftDir, err), errs.Invalid)
	}
	h.nh = nh
	// After the NodeHost: it holds the data dir's lock, so no second
	// process opens the store.
	if h.shared, err = fsm.OpenShared(filepath.Join(cfg.DataDir, "state", "store"), cfg.StateCacheBytes); err != nil {
		nh.Close()
		h.end()
		return nil, fmt.Errorf("start: %w", err)
	}
	return h, nil
}

// Refuse makes every request not yet handed to the engine end with
// ErrClosed (surely not applied), while the shards keep running: the
// engine's user calls it as its Close begins, so that a request that
// passed its own check before and waited (for a replica to start, for a
// leader) is not submitted while Close waits for its loops, only to have
// its outcome unknown once the host closes.
func (h *Host) Refuse() { h.refusing.Store(true) }

// Close stops every shard and the NodeHost. It is idempotent.
func (h *Host) Close() {
	h.closeOnce.Do(func() {
		h.mu.Lock() // see joinRound
		h.closed.Store(true)
		h.mu.Unlock()
		h.end()
		h.rounds.Wait()
		h.nh.Close() // closes the state machines, which leave the store
		if err := h.shared.Close(); err != nil {
			h.cfg.Logger.Warn("close the state store", "err", err)
		}
		h.mu.Lock()
		for _, ls := range h.leaders {
			close(ls.changed)
		}
		h.leaders = map[uint64]*leaderState{}
		h.mu.Unlock()
	})
}

// NodeID is this host's replica id in every shard.
func (h *Host) NodeID() uint64 { return h.cfg.NodeID }

func (h *Host) shardConfig(shardID uint64, nonVoting bool) config.Config {
	return config.Config{
		IsNonVoting:        nonVoting,
		ShardID:            shardID,
		ReplicaID:          h.cfg.NodeID,
		ElectionRTT:        h.cfg.ElectionRTT,
		HeartbeatRTT:       h.cfg.HeartbeatRTT,
		CheckQuorum:        true,
		PreVote:            true,
		SnapshotEntries:    h.cfg.SnapshotEntries,
		CompactionOverhead: h.cfg.CompactionOverhead,
	}
}

// StopShard stops the local replica; its data stays.
func (h *Host) StopShard(shardID uint64) error {
	if h.closed.Load() {
		return errs.Closed
	}
	err := h.nh.StopShard(shardID)
	h.mu.Lock()
	delete(h.machines, shardID)
	// A batcher in use keeps working for its callers (they hold it); the
	// map forgets it so a deleted group leaves nothing behind.
	delete(h.readers, shardID)
	delete(h.writers, shardID)
	// Wake whoever waits for a leader of it (WaitLeader, a request in
	// flight): none will come.
	if ls := h.leaders[shardID]; ls != nil {
		ls.id = 0
		close(ls.changed)
		ls.changed = make(chan struct{})
	}
	h.mu.Unlock()
	if err != nil && !errors.Is(err, dragonboat.ErrShardNotFound) {
		return fmt.Errorf("stop shard %d: %w", shardID, translate(err))
	}
	return nil
}

// RemoveShardData stops the local replica and deletes its log and state,
// for a shard that is gone for good (a deleted group).
func (h *Host) RemoveShardData(shardID uint64) error {
	h.mu.Lock()
	closed := h.closing[shardID]
	h.mu.Unlock()
	if err := h.StopShard(shardID); err != nil {
		return err
	}
	// RemoveData fails while the replica is still closing; retry briefly.
	var err error
	for range 200 {
		err = h.nh.RemoveData(shardID, h.cfg.NodeID)
		if !errors.Is(err, dragonboat.ErrShardNotStopped) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("remove shard %d data: %w", shardID, translate(err))
	}
	// The replica counts as stopped before its state machine is closed
	// (dragonboat closes it on a worker of its own): the state stays until
	// that Close returned, pebble may still write and read it.
	if closed != nil {
		select {
		case <-closed:
		case <-time.After(time.Minute):
			return fmt.Errorf("remove shard %d state: its state machine did not close in a minute", shardID)
		case <-h.life.Done():
			return errs.Closed
		}
		h.mu.Lock()
		if h.closing[shardID] == closed {
			delete(h.closing, shardID)
		}
		h.mu.Unlock()
	}
	if err := os.RemoveAll(h.stateDir(shardID)); err != nil {
		return fmt.Errorf("remove shard %d state: %w", shardID, err)
	}
	if err := h.shared.DropShard(shardID); err != nil {
		return fmt.Errorf("remove shard %d state: %w", shardID, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.removedHere, shardID)
	return h.setLearner(shardID, false)
}

// SetCloseHook makes every state machine started from now on run h (its
// shard id) as its Close begins; nil removes it. For tests.
func (h *Host) SetCloseHook(hook func(shardID uint64)) {
	if hook == nil {
		h.closeHook.Store(nil)
		return
	}
	h.closeHook.Store(&hook)
}

// Running tells whether this host runs a replica of shardID.
func (h *Host) Running(shardID uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.machines[shardID]
	return ok
}

// Applied is the last index applied by the local replica (0 if none).
func (h *Host) Applied(shardID uint64) uint64 {
	if m := h.machine(shardID); m != nil {
		return m.Applied()
	}
	return 0
}

// Revision is the group revision of the local replica (0 if none).
func (h *Host) Revision(shardID uint64) int64 {
	if m := h.machine(shardID); m != nil {
		return m.Revision()
	}
	return 0
}

func (h *Host) machine(shardID uint64) *fsm.StateMachine {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.machines[shardID]
}

func (h *Host) stateDir(shardID uint64) string { return StateDir(h.cfg.DataDir, shardID) }

// StateDir is where a host with dataDir keeps the state machine of
// shardID (a restore seeds it there before the host first starts).
func StateDir(dataDir string, shardID uint64) string {
	return filepath.Join(dataDir, "state", fmt.Sprintf("shard-%d", shardID))
}

// CompactLog makes the local replica of shardID take a snapshot and drop
// its whole Raft log behind it, so a replica that joins later is sent the
// state instead of the log (a restored replica's state did not come from
// its log).
func (h *Host) CompactLog(ctx context.Context, shardID uint64) error {
	_, err := h.nh.SyncRequestSnapshot(ctx, shardID, dragonboat.SnapshotOption{
		OverrideCompactionOverhead: true, CompactionOverhead: 0})
	if err != nil {
		return fmt.Errorf("compact the log of shard %d: %w", shardID, translate(err))
	}
	return nil
}

// Leader reports the leader this host knows of for shardID. dragonboat
// publishes a new leader to its event listener and to GetLeaderID at
// different moments, so either one counts.
func (h *Host) Leader(shardID uint64) (uint64, bool) {
	id, _, ok, err := h.nh.GetLeaderID(shardID)
	if err == nil && ok {
		return id, true
	}
	if err != nil {
		return 0, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if ls := h.leaders[shardID]; ls != nil && ls.id != 0 {
		return ls.id, true
	}
	return 0, false
}

// leaderChanged returns a channel closed at the next leader change of
// shardID seen by this host.
func (h *Host) leaderChanged(shardID uint64) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed.Load() {
		c := make(chan struct{})
		close(c)
		return c
	}
	ls := h.leaders[shardID]
	if ls == nil {
		ls = &leaderState{changed: make(chan struct{})}
		h.leaders[shardID] = ls
	}
	return ls.changed
}

// listener receives dragonboat's Raft events; its methods must not block.
type listener Host

var _ raftio.IRaftEventListener = (*listener)(nil)

func (l *listener) LeaderUpdated(info raftio.LeaderInfo) {
	h := (*Host)(l)
	h.mu.Lock()
	ls := h.leaders[info.ShardID]
	if ls == nil {
		ls = &leaderState{changed: make(chan struct{})}
		h.leaders[info.ShardID] = ls
	}
	changed := ls.id != info.LeaderID
	if changed && !h.closed.Load() {
		ls.id = info.LeaderID
		close(ls.changed)
		ls.changed = make(chan struct{})
	}
	h.mu.Unlock()
	if changed && h.cfg.OnLeaderChange != nil {
		h.cfg.OnLeaderChange(info.ShardID, info.LeaderID)
	}
}

// Shards lists the shards this host runs.
func (h *Host) Shards() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]uint64, 0, len(h.machines))
	for id := range h.machines {
		out = append(out, id)
	}
	return out
}

// WaitLeader returns once this host knows a leader for shardID. It fails
// (ErrGroupNotFound) when the shard does not run here or stops meanwhile.
func (h *Host) WaitLeader(ctx context.Context, shardID uint64) error {
	for {
		changed := h.leaderChanged(shardID)
		if h.closed.Load() {
			return errs.Closed
		}
		if !h.Running(shardID) || h.RemovedHere(shardID) {
			return fmt.Errorf("shard %d is not running here: %w", shardID, errs.GroupNotFound)
		}
		if _, ok := h.Leader(shardID); ok {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctxError(ctx.Err(), errLeaderChanged)
		}
	}
}

// LeaseGeneration is the local state machine's lease generation (see
// fsm.StateMachine.LeaseGeneration); 0 if the shard is not running here.
func (h *Host) LeaseGeneration(shardID uint64) uint64 {
	if m := h.machine(shardID); m != nil {
		return m.LeaseGeneration()
	}
	return 0
}

// ReservedGeneration is the local state machine's reserved-namespace
// generation (see fsm.StateMachine.ReservedGeneration); 0 if the shard is
// not running here.
func (h *Host) ReservedGeneration(shardID uint64) uint64 {
	if m := h.machine(shardID); m != nil {
		return m.ReservedGeneration()
	}
	return 0
}

// CompactRevision is the lowest revision the local replica's watch history
// can start from (1 if the shard is not running here).
func (h *Host) CompactRevision(shardID uint64) int64 {
	if m := h.machine(shardID); m != nil {
		return m.CompactRevision()
	}
	return 1
}

// HasData tells whether this host runs shardID or keeps data of it.
func (h *Host) HasData(shardID uint64) bool {
	if h.Running(shardID) || h.nh.HasNodeInfo(shardID, h.cfg.NodeID) {
		return true
	}
	if _, err := os.Stat(h.stateDir(shardID)); err == nil {
		return true
	}
	return h.shared.HasShard(shardID)
}

// StoredShards lists the shards that have state in this host's store.
func (h *Host) StoredShards() ([]uint64, error) { return h.shared.Shards() }

// LocalShards lists the shards this host has data of, running or not: a
// replica in the Raft log database, state in the store or a state
// directory (a restore's seed, an earlier binary's), or a role record.
func (h *Host) LocalShards() []uint64 {
	seen := map[uint64]bool{}
	if info := h.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{}); info != nil {
		for _, ni := range info.LogInfo {
			if ni.ReplicaID == h.cfg.NodeID {
				seen[ni.ShardID] = true
			}
		}
	}
	if ents, err := os.ReadDir(filepath.Join(h.cfg.DataDir, "state")); err == nil {
		for _, de := range ents {
			var id uint64
			if n, _ := fmt.Sscanf(de.Name(), "shard-%d", &id); n == 1 && de.Name() == fmt.Sprintf("shard-%d", id) {
				seen[id] = true
			}
		}
	}
	if ids, err := h.shared.Shards(); err == nil {
		for _, id := range ids {
			seen[id] = true
		}
	}
	h.mu.Lock()
	for id := range h.learners {
		seen[id] = true
	}
	for id := range h.machines {
		seen[id] = true
	}
	h.mu.Unlock()
	out := make([]uint64, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
