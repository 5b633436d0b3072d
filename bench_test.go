package dister_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/benchrun"
	"github.com/dister/dister/internal/testcluster"
)

// The benchmarks run a 3-server cluster in one process (fsync on), with
// 256-byte values over 10,000 keys, and report ops/s and latency
// percentiles:
//
//	go test -run '^$' -bench . -benchtime 20000x .

const benchKeys = 10000

var benchValue = make([]byte, 256)

func benchCluster(b *testing.B) *testcluster.Cluster {
	c := testcluster.New(b, 3)
	c.Leader()
	return c
}

// runParallel runs b.N ops over `workers` goroutines and reports ops/s,
// p50 and p99.
func runParallel(b *testing.B, workers int, op func(ctx context.Context, w, i int) error) {
	// DISTER_SCALE_CPUPROFILE profiles the measured window alone (with a
	// fixed -benchtime Nx, so that one window runs).
	benchrun.Run(b, benchrun.Spec{Workers: workers, Window: func() func() { return scaleProfile(b) }}, op)
}

func BenchmarkPut(b *testing.B) {
	for _, writers := range []int{1, 64, 256} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			c := benchCluster(b)
			kv := c.Node(c.Leader()).KV()
			runParallel(b, writers, func(ctx context.Context, w, i int) error {
				_, err := kv.Put(ctx, fmt.Sprintf("bench/%05d", rand.IntN(benchKeys)), benchValue)
				return err
			})
		})
	}
}

// BenchmarkPutViaFollower writes through a follower, which forwards to the
// leader: what an embedded server that is not the leader sees.
func BenchmarkPutViaFollower(b *testing.B) {
	c := benchCluster(b)
	leader := c.Leader()
	var kv *dister.KV
	for _, id := range c.IDs() {
		if id != leader {
			kv = c.Node(id).KV()
			break
		}
	}
	runParallel(b, 64, func(ctx context.Context, w, i int) error {
		_, err := kv.Put(ctx, fmt.Sprintf("bench/%05d", rand.IntN(benchKeys)), benchValue)
		return err
	})
}

// BenchmarkPutSpread spreads its writers over the three servers, each
// write with a deadline of its own, as apps embedding every server do
// (and as the versus harness drives dister): two thirds of the writes go
// through followers.
func BenchmarkPutSpread(b *testing.B) {
	for _, writers := range []int{64, 256} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			c := benchCluster(b)
			var kvs []*dister.KV
			for _, id := range c.IDs() {
				kvs = append(kvs, c.Node(id).KV())
			}
			runParallel(b, writers, func(ctx context.Context, w, i int) error {
				ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				_, err := kvs[w%len(kvs)].Put(ctx, fmt.Sprintf("bench/%05d", rand.IntN(benchKeys)), benchValue)
				return err
			})
		})
	}
}

func BenchmarkGet(b *testing.B) {
	for _, mode := range []struct {
		name string
		opt  dister.ReadOption
	}{{"linearizable", dister.Linearizable()}, {"session", dister.SessionRead()}, {"stale", dister.Stale()}} {
		b.Run(mode.name+"/readers=64", func(b *testing.B) {
			c := benchCluster(b)
			kv := c.Node(c.Leader()).KV()
			fill(b, kv)
			runParallel(b, 64, func(ctx context.Context, w, i int) error {
				_, err := kv.Get(ctx, fmt.Sprintf("bench/%05d", rand.IntN(benchKeys)), mode.opt)
				return err
			})
		})
	}
}

func fill(b *testing.B, kv *dister.KV) {
	b.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := w; k < benchKeys; k += 64 {
				if _, err := kv.Put(ctx, fmt.Sprintf("bench/%05d", k), benchValue); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkOpenToFirstWrite: three servers opened one after another, until
// the first write is acknowledged.
func BenchmarkOpenToFirstWrite(b *testing.B) {
	var total time.Duration
	for range b.N {
		members := map[uint64]dister.Peer{}
		for id := uint64(1); id <= 3; id++ {
			members[id] = dister.Peer{RaftAddr: testcluster.FreeAddr(b), PeerAddr: testcluster.FreeAddr(b)}
		}
		dirs := []string{b.TempDir(), b.TempDir(), b.TempDir()}
		start := time.Now()
		var nodes []*dister.Node
		for id := uint64(1); id <= 3; id++ {
			n, err := dister.Open(context.Background(), dister.Options{NodeID: id, DataDir: dirs[id-1],
				RaftAddr: members[id].RaftAddr, PeerAddr: members[id].PeerAddr, InitialMembers: members,
				Logger: testcluster.Logger()})
			if err != nil {
				b.Fatal(err)
			}
			nodes = append(nodes, n)
		}
		if _, err := nodes[0].KV().Put(context.Background(), "first", nil); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		for _, n := range nodes {
			n.Close()
		}
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/open-to-write")
}

// BenchmarkFailover closes the leader while a writer on a survivor writes
// continuously, and reports the no-write gap: from the last write
// acknowledged before the close began to the first one acknowledged after.
func BenchmarkFailover(b *testing.B) {
	var gaps []time.Duration
	for range b.N {
		c := testcluster.New(b, 3)
		leader := c.Leader()
		var survivor uint64
		for _, id := range c.IDs() {
			if id != leader {
				survivor = id
			}
		}
		kv := c.Node(survivor).KV()
		var (
			mu   sync.Mutex
			acks []time.Time
			stop atomic.Bool
			done = make(chan struct{})
		)
		go func() {
			defer close(done)
			for !stop.Load() {
				if _, err := kv.Put(context.Background(), "failover", nil); err == nil {
					mu.Lock()
					acks = append(acks, time.Now())
					mu.Unlock()
				}
			}
		}()
		time.Sleep(200 * time.Millisecond) // steady writes before the failure
		closing := time.Now()
		c.Stop(leader)
		var gap time.Duration
		for gap == 0 {
			time.Sleep(time.Millisecond)
			mu.Lock()
			i, _ := slices.BinarySearchFunc(acks, closing, func(a, t time.Time) int { return a.Compare(t) })
			if i > 0 && i < len(acks) {
				gap = acks[i].Sub(acks[i-1])
			}
			mu.Unlock()
		}
		stop.Store(true)
		<-done
		gaps = append(gaps, gap)
		c.CloseAll()
	}
	slices.Sort(gaps)
	b.ReportMetric(float64(gaps[len(gaps)/2].Milliseconds()), "ms-gap-p50")
	b.ReportMetric(float64(gaps[len(gaps)-1].Milliseconds()), "ms-gap-max")
}
