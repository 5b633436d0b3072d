package shard

import (
	"errors"
	"sync"
	"sync/atomic"
	_ "unsafe" // go:linkname, see newEngineLogDB

	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// The Raft log store. dragonboat's LogDB writes every non-empty update
// with an fsync, including an update whose only change is the replica's
// commit index. A write's commit reaches each of the three replicas as
// such an update, so a lone writer cost 4.6 fsyncs where Raft needs 3 (the
// leader's and two followers' appends), and each of those syncs held the
// shard's step loop for about half a millisecond while the next proposal
// or the next append waited.
//
// Raft does not need the commit index on disk: it is volatile state (the
// Raft paper, figure 2), re-learned from the leader after a restart. Term,
// vote, entries and snapshots are what must be durable before a replica
// answers. etcd's raft says the same: a Ready whose hard state changed in
// its commit only does not need a sync (it still writes it, unsynced; this
// holds it in memory). So lazyCommitLogDB holds such an update and writes
// it with the replica's next update that is written anyway (entries, a
// snapshot, a new term or vote), or at Close. After a crash a replica
// restarts with an older commit index and applies again, as no-ops, the
// entries its state machine already has (its applied index is stored with
// its state; dragonboat skips up to it).
//
// One exception: dragonboat rebuilds a replica's membership at a restart
// from its snapshot and the config changes up to the stored commit. A
// config change it applied must not be forgotten (a replica that applied
// its own removal would come back as a member no leader contacts; a group
// shrunk to one voter would wait forever for the removed one's vote). So
// an update that hands a config change to be applied is written, with its
// held state, before it is applied, as dragonboat's LogDB alone does.

// newEngineLogDB is dragonboat's own LogDB (internal/logdb, the factory
// dragonboat uses when none is given). dragonboat offers no way to wrap it
// but this: the symbol is pinned with the module's version in go.mod, and
// TestLazyCommitLogDB runs it.
//
//go:linkname newEngineLogDB github.com/lni/dragonboat/v4/internal/logdb.NewDefaultLogDB
func newEngineLogDB(cfg config.NodeHostConfig, cb config.LogDBCallback, dirs, walDirs []string) (raftio.ILogDB, error)

// engineLogDBName is the name dragonboat records in a data dir for its own
// LogDB; the wrapper keeps it, so existing data dirs open unchanged.
const engineLogDBName = "sharded-pebble"

// lazyCommitFactory makes the LogDB of one NodeHost and keeps it in made.
type lazyCommitFactory struct {
	made *atomic.Pointer[lazyCommitLogDB]
}

func (f lazyCommitFactory) Create(cfg config.NodeHostConfig, cb config.LogDBCallback, dirs, walDirs []string) (raftio.ILogDB, error) {
	inner, err := newEngineLogDB(cfg, cb, dirs, walDirs)
	if err != nil {
		return nil, err
	}
	// dragonboat runs this check on its own LogDB type only.
	if c, ok := inner.(interface{ SelfCheckFailed() (bool, error) }); ok {
		failed, err := c.SelfCheckFailed()
		if err == nil && failed {
			err = errors.New("the raft log was written in a format this version cannot read")
		}
		if err != nil {
			return nil, errors.Join(err, inner.Close())
		}
	}
	l := newLazyCommitLogDB(inner)
	f.made.Store(l)
	return l, nil
}

func (lazyCommitFactory) Name() string { return engineLogDBName }

type replicaKey struct{ shard, replica uint64 }

// lazyCommitLogDB is dragonboat's LogDB with updates that change a
// replica's commit index only held back (see the top of this file).
//
// A replica's updates come from its shard's step loop alone, one call at a
// time, so its held state is written by that loop too: never by another
// shard's write, which could land after a newer term or vote of this one.
type lazyCommitLogDB struct {
	raftio.ILogDB

	mu      sync.Mutex
	written map[replicaKey]pb.State // the last state handed to the store
	held    map[replicaKey]pb.State // newer than written, in Commit only
	// dropHeld makes Close lose the held states, as a crash would (tests).
	dropHeld bool
}

func newLazyCommitLogDB(inner raftio.ILogDB) *lazyCommitLogDB {
	return &lazyCommitLogDB{ILogDB: inner,
		written: make(map[replicaKey]pb.State), held: make(map[replicaKey]pb.State)}
}

// SaveRaftState writes updates, except the state of those that change
// only their replica's commit index, which is held.
func (l *lazyCommitLogDB) SaveRaftState(updates []pb.Update, workerID uint64) error {
	out := make([]pb.Update, 0, len(updates))
	l.mu.Lock()
	for _, ud := range updates {
		k := replicaKey{ud.ShardID, ud.ReplicaID}
		mayHold := len(ud.EntriesToSave) == 0 && pb.IsEmptySnapshot(ud.Snapshot) &&
			!appliesConfigChange(ud)
		if !pb.IsEmptyState(ud.State) {
			if w, ok := l.written[k]; ok && mayHold && w.Term == ud.State.Term && w.Vote == ud.State.Vote {
				l.held[k] = ud.State
				continue
			}
		} else if h, ok := l.held[k]; ok && !mayHold {
			ud.State = h // ud is a copy: dragonboat's update is untouched
		}
		if !pb.IsEmptyState(ud.State) {
			delete(l.held, k)
			l.written[k] = ud.State
		}
		out = append(out, ud)
	}
	l.mu.Unlock()
	if len(out) == 0 {
		return nil
	}
	return l.ILogDB.SaveRaftState(out, workerID)
}

// appliesConfigChange reports whether ud hands a membership change to be
// applied (see the top of this file).
func appliesConfigChange(ud pb.Update) bool {
	for i := range ud.CommittedEntries {
		if ud.CommittedEntries[i].Type == pb.ConfigChangeEntry {
			return true
		}
	}
	return false
}

// ReadRaftState answers the replica's newest state, held or written. A
// commit index below the replica's snapshot (held when the process
// stopped, while the snapshot was written) is raised to it: the snapshot
// holds applied, hence committed, entries, and dragonboat refuses a
// state that commits less than its snapshot.
func (l *lazyCommitLogDB) ReadRaftState(shardID, replicaID, snapshotIndex uint64) (raftio.RaftState, error) {
	rs, err := l.ILogDB.ReadRaftState(shardID, replicaID, snapshotIndex)
	if err != nil {
		return rs, err
	}
	k := replicaKey{shardID, replicaID}
	l.mu.Lock()
	if !pb.IsEmptyState(rs.State) {
		l.written[k] = rs.State
	}
	if h, ok := l.held[k]; ok {
		rs.State = h
	}
	l.mu.Unlock()
	if !pb.IsEmptyState(rs.State) && rs.State.Commit < snapshotIndex {
		rs.State.Commit = snapshotIndex
	}
	return rs, nil
}

// forget drops what is known of a replica whose data is going away or
// being replaced, so no held state of it is written afterwards.
func (l *lazyCommitLogDB) forget(shardID, replicaID uint64) {
	k := replicaKey{shardID, replicaID}
	l.mu.Lock()
	delete(l.held, k)
	delete(l.written, k)
	l.mu.Unlock()
}

func (l *lazyCommitLogDB) RemoveNodeData(shardID, replicaID uint64) error {
	l.forget(shardID, replicaID)
	return l.ILogDB.RemoveNodeData(shardID, replicaID)
}

func (l *lazyCommitLogDB) ImportSnapshot(ss pb.Snapshot, replicaID uint64) error {
	l.forget(ss.ShardID, replicaID)
	return l.ILogDB.ImportSnapshot(ss, replicaID)
}

// Close writes the held states, so a clean restart resumes at the commit
// index each replica had, then closes the store. dragonboat closes its
// LogDB after its step loops stopped.
func (l *lazyCommitLogDB) Close() error {
	l.mu.Lock()
	var flush []pb.Update
	if !l.dropHeld {
		for k, st := range l.held {
			flush = append(flush, pb.Update{ShardID: k.shard, ReplicaID: k.replica, State: st})
		}
	}
	l.held = make(map[replicaKey]pb.State)
	l.mu.Unlock()
	var err error
	if len(flush) > 0 {
		err = l.ILogDB.SaveRaftState(flush, 1)
	}
	return errors.Join(err, l.ILogDB.Close())
}
