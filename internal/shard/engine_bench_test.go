package shard

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lni/dragonboat/v4"
	sm "github.com/lni/dragonboat/v4/statemachine"

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

// BenchmarkEngineAlone measures the ceiling dragonboat sets on puts here:
// three hosts in one process with the settings NewHost gives them (LogDB,
// transport, RTT), a state machine that does nothing, every write its own
// proposal of the size of a put of a 16-byte key and a 256-byte value
// (the engine takes every proposal waiting at a step into one log write).
// "leader": every writer proposes on the leader's host; "spread": writers
// are spread over the three hosts, two thirds proposing on followers,
// which forward to the leader. Whatever dister adds (its state machine,
// events, dedup, group commit, the public API) can only cost more.
func BenchmarkEngineAlone(b *testing.B) {
	for _, place := range []string{"leader", "spread"} {
		for _, writers := range []int{1, 64, 256} {
			b.Run(fmt.Sprintf("%s/writers=%d", place, writers), func(b *testing.B) {
				hosts, leader := engineHosts(b)
				on := make([]*dragonboat.NodeHost, 0, len(hosts))
				if place == "leader" {
					on = append(on, leader)
				} else {
					on = hosts
				}
				cmd := make([]byte, 16+256+24) // key, value, command framing
				engineRun(b, writers, func(ctx context.Context, w int) error {
					nh := on[w%len(on)]
					_, err := nh.SyncPropose(ctx, nh.GetNoOPSession(engineShard), cmd)
					return err
				})
			})
		}
	}
}

// BenchmarkHostPut is BenchmarkEngineAlone with dister's state machine:
// every write a put command with a dedup id of its own on a random key of
// 10,000, proposed on the leader's host "alone" (one proposal per write)
// or "batched" (group commit, as the engine proposes). Against
// BenchmarkEngineAlone it tells what the state machine and the batching
// cost; against the root package's BenchmarkPut, what the layers above.
func BenchmarkHostPut(b *testing.B) {
	for _, mode := range []string{"alone", "batched"} {
		for _, writers := range []int{64, 256} {
			b.Run(fmt.Sprintf("%s/writers=%d", mode, writers), func(b *testing.B) {
				hosts := fsmHosts(b)
				var leader *Host
				for _, h := range hosts {
					if id, ok := h.Leader(engineShard); ok && id == h.NodeID() {
						leader = h
					}
				}
				leader.SetBatching(mode == "batched")
				value := make([]byte, 256)
				var seqs [256]atomic.Uint64
				engineRun(b, writers, func(ctx context.Context, w int) error {
					cmd, err := fsm.EncodeCommand(&fsm.Command{Session: uint64(w + 1), Seq: seqs[w].Add(1), Kind: fsm.KindTxn,
						Txn: &fsm.Txn{Then: []fsm.Op{{Type: fsm.OpPut, Key: fmt.Sprintf("bench/%05d", rand.IntN(10000)), Value: value}}}})
					if err != nil {
						return err
					}
					_, err = leader.Propose(ctx, engineShard, cmd)
					return err
				})
			})
		}
	}
}

// fsmHosts starts three hosts running engineShard with dister's state
// machine, its leader elected.
func fsmHosts(b *testing.B) []*Host {
	b.Helper()
	members := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		members[id] = freeAddr(b)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var hosts []*Host
	for id := uint64(1); id <= 3; id++ {
		h, err := NewHost(Config{NodeID: id, DataDir: b.TempDir(), RaftAddr: members[id], Logger: log})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(h.Close)
		if err := h.StartShard(engineShard, members, false); err != nil {
			b.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, h := range hosts {
		if err := h.WaitLeader(ctx, engineShard); err != nil {
			b.Fatal(err)
		}
	}
	return hosts
}

const engineShard = 100

// engineHosts starts three hosts running engineShard with noopMachine and
// returns them and the leader's.
func engineHosts(b *testing.B) ([]*dragonboat.NodeHost, *dragonboat.NodeHost) {
	b.Helper()
	members := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		members[id] = freeAddr(b)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var hosts []*dragonboat.NodeHost
	for id := uint64(1); id <= 3; id++ {
		h, err := NewHost(Config{NodeID: id, DataDir: b.TempDir(), RaftAddr: members[id], Logger: log})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(h.Close)
		rc := h.shardConfig(engineShard, false)
		if err := h.nh.StartOnDiskReplica(members, false, func(uint64, uint64) sm.IOnDiskStateMachine { return &noopMachine{} }, rc); err != nil {
			b.Fatal(err)
		}
		hosts = append(hosts, h.nh)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if id, _, ok, err := hosts[0].GetLeaderID(engineShard); err == nil && ok && id != 0 {
			return hosts, hosts[id-1]
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Fatal("no leader")
	return nil, nil
}

// engineRun runs b.N calls of op over writers goroutines, each with a
// deadline of its own, and reports ops/s and the p50 and p99 of a call.
func engineRun(b *testing.B, writers int, op func(ctx context.Context, w int) error) {
	b.Helper()
	var next atomic.Int64
	lat := make([]time.Duration, b.N)
	var failed atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				t0 := time.Now()
				if err := op(ctx, w); err != nil {
					failed.Add(1)
				}
				lat[i] = time.Since(t0)
				cancel()
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d proposals failed", f, b.N)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/el.Seconds(), "ops/s")
	b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
}
