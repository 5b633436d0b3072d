package shard

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/dister/dister/internal/benchrun"
	"github.com/dister/dister/internal/fsm"
)

// noopMachine applies nothing, as an on-disk state machine (the kind
// dister's is): with it, a write costs only what the engine (log, fsync,
// replication, commit) and the host's settings cost.
type noopMachine struct{ applied atomic.Uint64 }

func (m *noopMachine) Open(<-chan struct{}) (uint64, error) { return 0, nil }
func (m *noopMachine) Update(es []sm.Entry) ([]sm.Entry, error) {
	for i := range es {
		es[i].Result = sm.Result{Value: es[i].Index}
	}
	m.applied.Store(es[len(es)-1].Index)
	return es, nil
}
func (m *noopMachine) Lookup(any) (any, error)                              { return m.applied.Load(), nil }
func (m *noopMachine) Sync() error                                          { return nil }
func (m *noopMachine) PrepareSnapshot() (any, error)                        { return nil, nil }
func (m *noopMachine) SaveSnapshot(any, io.Writer, <-chan struct{}) error   { return nil }
func (m *noopMachine) RecoverFromSnapshot(io.Reader, <-chan struct{}) error { return nil }
func (m *noopMachine) Close() error                                         { return nil }

// pebbleMachine is the least a pebble-backed state machine does, set up as
// dister's store is (64 MiB memtables, a WAL written unsynced): each entry
// is one Set of its key (the command's first 16 bytes) to the command, and
// each Update one batch with the applied index, committed without sync.
type pebbleMachine struct {
	dir     string
	db      *pebble.DB
	applied atomic.Uint64
}

func (m *pebbleMachine) Open(<-chan struct{}) (uint64, error) {
	db, err := pebble.Open(m.dir, &pebble.Options{MemTableSize: 64 << 20, WALBytesPerSync: 256 << 10, Logger: silentPebble{}})
	m.db = db
	return 0, err
}
func (m *pebbleMachine) Update(es []sm.Entry) ([]sm.Entry, error) {
	b := m.db.NewBatch()
	defer b.Close()
	for i := range es {
		if err := b.Set(es[i].Cmd[:16], es[i].Cmd, nil); err != nil {
			return nil, err
		}
		es[i].Result = sm.Result{Value: es[i].Index}
	}
	var ab [8]byte
	binary.BigEndian.PutUint64(ab[:], es[len(es)-1].Index)
	if err := b.Set([]byte("applied"), ab[:], nil); err != nil {
		return nil, err
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return nil, err
	}
	m.applied.Store(es[len(es)-1].Index)
	return es, nil
}
func (m *pebbleMachine) Lookup(any) (any, error)                              { return m.applied.Load(), nil }
func (m *pebbleMachine) Sync() error                                          { return m.db.LogData(nil, pebble.Sync) }
func (m *pebbleMachine) PrepareSnapshot() (any, error)                        { return nil, nil }
func (m *pebbleMachine) SaveSnapshot(any, io.Writer, <-chan struct{}) error   { return nil }
func (m *pebbleMachine) RecoverFromSnapshot(io.Reader, <-chan struct{}) error { return nil }
func (m *pebbleMachine) Close() error {
	if m.db == nil { // Open failed
		return nil
	}
	return m.db.Close()
}

// silentPebble drops pebble's log lines.
type silentPebble struct{}

func (silentPebble) Infof(string, ...any)  {}
func (silentPebble) Fatalf(string, ...any) {}

// BenchmarkEngineAlone measures the ceiling dragonboat sets on puts here:
// three hosts in one process with the settings NewHost gives them (LogDB,
// transport, RTT), every write its own proposal of the size of a put of a
// 16-byte key and a 256-byte value on a random key of 10,000 (the engine
// takes every proposal waiting at a step into one log write), applied by
// a state machine that does nothing ("noop") or by the least a pebble
// state machine does ("pebble"). "leader": every writer proposes on the
// leader's host; "spread": writers are spread over the three hosts, two
// thirds proposing on followers, which forward to the leader. Whatever
// dister adds (its records, events, dedup, group commit, the public API)
// can only cost more.
func BenchmarkEngineAlone(b *testing.B) {
	for _, machine := range []string{"noop", "pebble"} {
		for _, place := range []string{"leader", "spread"} {
			for _, writers := range []int{1, 64, 256} {
				b.Run(fmt.Sprintf("%s/%s/writers=%d", machine, place, writers), func(b *testing.B) {
					benchEngine(b, machine, place, writers)
				})
			}
		}
	}
}

func benchEngine(b *testing.B, machine, place string, writers int) {
	hosts, leader := benchHosts(b, func(h *Host, dir string, members map[uint64]string) error {
		create := func(uint64, uint64) sm.IOnDiskStateMachine {
			if machine == "pebble" {
				return &pebbleMachine{dir: filepath.Join(dir, "bench-state")}
			}
			return &noopMachine{}
		}
		return h.nh.StartOnDiskReplica(members, false, create, h.shardConfig(engineShard, false))
	})
	on := []*Host{leader}
	if place == "spread" {
		on = hosts
	}
	benchrun.Run(b, benchrun.Spec{Workers: writers, Timeout: 5 * time.Second}, func(ctx context.Context, w, _ int) error {
		// key, value, command framing; a new one each time, as the
		// engine holds on to it after the call (a follower may need it)
		cmd := make([]byte, 16+256+24)
		copy(cmd, fmt.Sprintf("bench/%010d", rand.IntN(10000)))
		nh := on[w%len(on)].nh
		_, err := nh.SyncPropose(ctx, nh.GetNoOPSession(engineShard), cmd)
		return err
	})
}

// BenchmarkHostPut is BenchmarkEngineAlone with dister's state machine:
// every write a put command with a dedup id of its own on a random key of
// 10,000, proposed "alone" (one proposal per write) or "batched" (group
// commit, as the engine proposes), on the leader's host or spread over the
// three. Against BenchmarkEngineAlone it tells what the state machine and
// the batching cost; against the root package's BenchmarkPut and
// BenchmarkPutSpread, what the layers above.
func BenchmarkHostPut(b *testing.B) {
	for _, mode := range []string{"alone", "batched"} {
		for _, place := range []string{"leader", "spread"} {
			for _, writers := range []int{64, 256} {
				b.Run(fmt.Sprintf("%s/%s/writers=%d", mode, place, writers), func(b *testing.B) {
					benchHostPut(b, mode, place, writers)
				})
			}
		}
	}
}

func benchHostPut(b *testing.B, mode, place string, writers int) {
	hosts, leader := benchHosts(b, func(h *Host, _ string, members map[uint64]string) error {
		h.SetBatching(mode == "batched")
		return h.StartShard(engineShard, members, false)
	})
	on := []*Host{leader}
	if place == "spread" {
		on = hosts
	}
	value := make([]byte, 256)
	seqs := make([]atomic.Uint64, writers)
	benchrun.Run(b, benchrun.Spec{Workers: writers, Timeout: 5 * time.Second}, func(ctx context.Context, w, _ int) error {
		cmd, err := fsm.EncodeCommand(&fsm.Command{Session: uint64(w + 1), Seq: seqs[w].Add(1), Kind: fsm.KindTxn,
			Txn: &fsm.Txn{Then: []fsm.Op{{Type: fsm.OpPut, Key: fmt.Sprintf("bench/%05d", rand.IntN(10000)), Value: value}}}})
		if err != nil {
			return err
		}
		_, err = on[w%len(on)].Propose(ctx, engineShard, cmd)
		return err
	})
}

const engineShard = 100

// benchHosts starts three hosts, has start run engineShard on each (dir
// is the host's data dir), and returns them and the leader's once it is
// elected.
func benchHosts(b *testing.B, start func(h *Host, dir string, members map[uint64]string) error) ([]*Host, *Host) {
	b.Helper()
	members := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		members[id] = freeAddr(b)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var hosts []*Host
	for id := uint64(1); id <= 3; id++ {
		dir := b.TempDir()
		h, err := NewHost(Config{NodeID: id, DataDir: dir, RaftAddr: members[id], Logger: log})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(h.Close)
		if err := start(h, dir, members); err != nil {
			b.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if id, ok := hosts[0].Leader(engineShard); ok && id != 0 {
			return hosts, hosts[id-1]
		}
	}
	b.Fatal("no leader elected")
	return nil, nil
}
