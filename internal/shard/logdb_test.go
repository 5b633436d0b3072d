package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"

	"github.com/dister/dister/internal/fsm"
)

// openEngineLogDB opens dragonboat's own LogDB in dir, wrapped.
func openEngineLogDB(t *testing.T, dir string) *lazyCommitLogDB {
	t.Helper()
	logdb := config.GetTinyMemLogDBConfig()
	logdb.Shards = 1
	cfg := config.NodeHostConfig{NodeHostDir: dir, RTTMillisecond: 20, Expert: config.ExpertConfig{LogDB: logdb}}
	if err := cfg.Prepare(); err != nil {
		t.Fatal(err)
	}
	inner, err := newEngineLogDB(cfg, func(config.LogDBInfo) {}, []string{dir}, []string{dir})
	if err != nil {
		t.Fatal(err)
	}
	return newLazyCommitLogDB(inner)
}

func entries(term, from, to uint64) []pb.Entry {
	var es []pb.Entry
	for i := from; i <= to; i++ {
		es = append(es, pb.Entry{Term: term, Index: i, Cmd: []byte("x")})
	}
	return es
}

// stored is the state the store itself holds for shard 1, replica 1.
func stored(t *testing.T, l *lazyCommitLogDB, shard uint64) pb.State {
	t.Helper()
	rs, err := l.ILogDB.ReadRaftState(shard, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	return rs.State
}

func save(t *testing.T, l *lazyCommitLogDB, uds ...pb.Update) {
	t.Helper()
	if err := l.SaveRaftState(uds, 1); err != nil {
		t.Fatal(err)
	}
}

// TestLazyCommitLogDB runs the wrapper on dragonboat's real LogDB: a state
// that changes the commit index only is held, everything else is written
// at once, and the held state goes out with the replica's next write, at
// Close, or never once the replica's data is removed.
func TestLazyCommitLogDB(t *testing.T) {
	dir := t.TempDir()
	l := openEngineLogDB(t, dir)
	save(t, l, pb.Update{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 2, Vote: 1, Commit: 5}, EntriesToSave: entries(2, 1, 10)})
	if st := stored(t, l, 1); st.Commit != 5 || st.Term != 2 {
		t.Fatalf("first state not written: %+v", st)
	}

	save(t, l, pb.Update{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 2, Vote: 1, Commit: 8}})
	if st := stored(t, l, 1); st.Commit != 5 {
		t.Fatalf("a commit-only state was written: %+v", st)
	}
	rs, err := l.ReadRaftState(1, 1, 0)
	if err != nil || rs.State.Commit != 8 || rs.EntryCount != 10 {
		t.Fatalf("read through the wrapper: %+v %v", rs, err)
	}

	// A new term is written at once, with no entries.
	save(t, l, pb.Update{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 3, Vote: 1, Commit: 8}})
	if st := stored(t, l, 1); st.Term != 3 || st.Commit != 8 {
		t.Fatalf("a new term was not written: %+v", st)
	}
	// So is a new vote.
	save(t, l, pb.Update{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 3, Vote: 2, Commit: 8}})
	if st := stored(t, l, 1); st.Vote != 2 {
		t.Fatalf("a new vote was not written: %+v", st)
	}

	// A held state goes out with the replica's next entries.
	save(t, l, pb.Update{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 3, Vote: 2, Commit: 9}})
	save(t, l, pb.Update{ShardID: 2, ReplicaID: 1, State: pb.State{Term: 1, Vote: 1, Commit: 1}, EntriesToSave: entries(1, 1, 1)})
	if st := stored(t, l, 1); st.Commit != 8 {
		t.Fatalf("another replica's write carried this one's held state: %+v", st)
	}
	save(t, l, pb.Update{ShardID: 1, ReplicaID: 1, EntriesToSave: entries(3, 11, 11)})
	if st := stored(t, l, 1); st.Commit != 9 || st.Term != 3 || st.Vote != 2 {
		t.Fatalf("the held state did not go out with the entries: %+v", st)
	}

	// A state that hands a config change to be applied is written at once,
	// and so is a held state with a later update that hands one.
	save(t, l, pb.Update{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 3, Vote: 2, Commit: 10},
		CommittedEntries: []pb.Entry{{Term: 3, Index: 10, Type: pb.ConfigChangeEntry}}})
	if st := stored(t, l, 1); st.Commit != 10 {
		t.Fatalf("a state applying a config change was held: %+v", st)
	}
	save(t, l, pb.Update{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 3, Vote: 2, Commit: 11}})
	save(t, l, pb.Update{ShardID: 1, ReplicaID: 1,
		CommittedEntries: []pb.Entry{{Term: 3, Index: 11, Type: pb.ConfigChangeEntry}}})
	if st := stored(t, l, 1); st.Commit != 11 {
		t.Fatalf("a held state did not go out with the config change it commits: %+v", st)
	}

	// Held at Close: written.
	save(t, l, pb.Update{ShardID: 1, ReplicaID: 1, EntriesToSave: entries(3, 12, 12)})
	save(t, l, pb.Update{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 3, Vote: 2, Commit: 12}})
	// Held for a replica whose data is then removed: never written.
	save(t, l, pb.Update{ShardID: 2, ReplicaID: 1, State: pb.State{Term: 1, Vote: 1, Commit: 1}, EntriesToSave: entries(1, 2, 2)})
	save(t, l, pb.Update{ShardID: 2, ReplicaID: 1, State: pb.State{Term: 1, Vote: 1, Commit: 2}})
	if err := l.RemoveNodeData(2, 1); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openEngineLogDB(t, dir)
	if st := stored(t, l, 1); st.Commit != 12 {
		t.Fatalf("the state held at Close was lost: %+v", st)
	}
	if _, err := l.ILogDB.ReadRaftState(2, 1, 0); !errors.Is(err, raftio.ErrNoSavedLog) {
		t.Fatalf("a removed replica's held state was written: %v", err)
	}

	// A crash loses the held state: the replica restarts with the older
	// commit index, raised to its snapshot's index when that is higher.
	// (A replica's start reads its state first: until then nothing of it
	// is held.)
	if _, err := l.ReadRaftState(1, 1, 0); err != nil {
		t.Fatal(err)
	}
	save(t, l, pb.Update{ShardID: 1, ReplicaID: 1, EntriesToSave: entries(3, 13, 15)})
	save(t, l, pb.Update{ShardID: 1, ReplicaID: 1, State: pb.State{Term: 3, Vote: 2, Commit: 15}})
	l.dropHeld = true
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l = openEngineLogDB(t, dir)
	defer l.Close()
	if rs, err := l.ReadRaftState(1, 1, 0); err != nil || rs.State.Commit != 12 {
		t.Fatalf("after a crash: %+v %v", rs, err)
	}
	if rs, err := l.ReadRaftState(1, 1, 14); err != nil || rs.State.Commit != 14 || rs.State.Term != 3 {
		t.Fatalf("after a crash, with a snapshot at 14: %+v %v", rs, err)
	}
}

// TestRestartAfterLosingHeldCommits: every replica of a group loses the
// commit index it held (as in a crash of all three servers) after a
// snapshot at the last entry was written. The group restarts, keeps every
// write and takes new ones. dragonboat refuses (panics on) a stored commit
// index below the snapshot, which ReadRaftState raises.
func TestRestartAfterLosingHeldCommits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	openHost := replicaOpener(t, 5, 3, Config{SnapshotEntries: 1000, CompactionOverhead: 5})
	open := func() map[uint64]*Host {
		hosts := map[uint64]*Host{1: openHost(1), 2: openHost(2), 3: openHost(3)}
		if err := hosts[1].WaitLeader(ctx, 5); err != nil {
			t.Fatal(err)
		}
		return hosts
	}
	put := func(h *Host, seq uint64, key string) int64 {
		t.Helper()
		cmd, err := fsm.EncodeCommand(&fsm.Command{Session: 3, Seq: seq, Kind: fsm.KindTxn,
			Txn: &fsm.Txn{Then: []fsm.Op{{Type: fsm.OpPut, Key: key, Value: []byte("v")}}}})
		if err != nil {
			t.Fatal(err)
		}
		res, err := h.Propose(ctx, 5, cmd)
		if err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
		r, err := fsm.DecodeResult(res)
		if err != nil {
			t.Fatal(err)
		}
		return r.Revision
	}

	hosts := open()
	var last int64
	for i := range 50 {
		last = put(hosts[uint64(i%3+1)], uint64(i+1), fmt.Sprintf("k%d", i))
	}
	held := 0
	for id, h := range hosts {
		if err := h.WaitRevision(ctx, 5, last); err != nil {
			t.Fatal(err)
		}
		for {
			if err := h.CompactLog(ctx, 5); err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("snapshot on %d: %v", id, ctx.Err())
			}
			time.Sleep(10 * time.Millisecond)
		}
		l := h.logdb.Load()
		l.mu.Lock()
		if st, ok := l.held[replicaKey{5, id}]; ok && st.Commit > l.written[replicaKey{5, id}].Commit {
			held++
		}
		l.mu.Unlock()
	}
	if held == 0 {
		t.Fatal("no replica held a commit index at the crash: the test proves nothing")
	}
	for _, h := range hosts {
		crash(h)
	}

	hosts = open()
	for i := range 50 {
		v, err := hosts[1].Read(ctx, 5, fsm.GetQuery{Key: fmt.Sprintf("k%d", i)})
		if err != nil || !v.(*fsm.GetResult).Found {
			t.Fatalf("k%d after the restart: %+v %v", i, v, err)
		}
	}
	if rev := put(hosts[2], 51, "after"); rev != last+1 {
		t.Fatalf("first write after the restart at revision %d, want %d", rev, last+1)
	}
}

// TestSelfRemovalSurvivesCrash: a replica that applied its own removal
// still knows it is removed after a crash. dragonboat stops such a replica
// at once, so the update that told it the removal committed (commit only)
// is its last one; dragonboat rebuilds membership at restart from the
// entries up to the stored commit, so a held state lost in the crash
// brought the replica back as a member no leader would ever contact.
// (Found by review.)
func TestSelfRemovalSurvivesCrash(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open := replicaOpener(t, 5, 3, Config{})
	hosts := map[uint64]*Host{1: open(1), 2: open(2), 3: open(3)}
	makeLeader(ctx, t, hosts[1], 5, 1)
	if _, err := hosts[1].Propose(ctx, 5, txnCmd(t, 1)); err != nil {
		t.Fatal(err)
	}
	if err := hosts[1].RemoveMember(ctx, 5, 3); err != nil {
		t.Fatalf("remove 3: %v", err)
	}
	for !hosts[3].RemovedHere(5) {
		if ctx.Err() != nil {
			t.Fatal("replica 3 never applied its removal")
		}
		time.Sleep(10 * time.Millisecond)
	}
	crash(hosts[3])

	hosts[3] = open(3)
	deadline := time.Now().Add(10 * time.Second)
	for !hosts[3].RemovedHere(5) {
		if time.Now().After(deadline) {
			t.Fatalf("after the crash replica 3 runs again (running %v) and does not know it was removed", hosts[3].Running(5))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestShrinkToOneVoterSurvivesCrash: a group of two voters removes one and
// the removed server goes away for good. The leader learned the removal
// committed from the follower's ack, a commit-only update; had a crash
// lost it, the leader would restart counting two voters and the group
// would never have a leader again. (Found by review.)
func TestShrinkToOneVoterSurvivesCrash(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	open := replicaOpener(t, 7, 2, Config{})
	h1, h2 := open(1), open(2)
	makeLeader(ctx, t, h1, 7, 1)
	if _, err := h1.Propose(ctx, 7, txnCmd(t, 1)); err != nil {
		t.Fatal(err)
	}
	if err := h1.RemoveMember(ctx, 7, 2); err != nil {
		t.Fatalf("remove 2: %v", err)
	}
	h2.Close() // the removed server is decommissioned
	crash(h1)

	h1 = open(1)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := h1.WaitLeader(wctx, 7); err != nil {
		t.Fatalf("the one remaining voter has no leader after its restart: %v", err)
	}
	if _, err := h1.Propose(wctx, 7, txnCmd(t, 2)); err != nil {
		t.Fatalf("write after the restart: %v", err)
	}
}

// replicaOpener returns what opens host id (1..n) of n with the settings
// of cfg, each with a data dir of its own that outlives it, and starts
// its replica of shard.
func replicaOpener(t *testing.T, shard uint64, n int, cfg Config) func(id uint64) *Host {
	addrs, dirs := map[uint64]string{}, map[uint64]string{}
	for id := uint64(1); id <= uint64(n); id++ {
		addrs[id], dirs[id] = freeAddr(t), t.TempDir()
	}
	return func(id uint64) *Host {
		c := cfg
		c.NodeID, c.DataDir, c.RaftAddr = id, dirs[id], addrs[id]
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		h, err := NewHost(c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close)
		if err := h.StartShard(shard, addrs, false); err != nil {
			t.Fatal(err)
		}
		return h
	}
}

// crash closes h losing what its Raft log store holds in memory only, as
// a crash of the process would.
func crash(h *Host) {
	l := h.logdb.Load()
	l.mu.Lock()
	l.dropHeld = true
	l.mu.Unlock()
	h.Close()
}
