package dister_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dister/dister"
)

// Benchmarks of a client node over 3 servers in the same process (over
// loopback gRPC), with the figures of BenchmarkPut and BenchmarkGet:
//
//	go test -run '^$' -bench BenchmarkClient -benchtime 20000x .

// BenchmarkClientPut: writers on one client node, and spread over 3
// ("nodes=3": writer w on node w%3, as the versus harness writes).
func BenchmarkClientPut(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		for _, writers := range []int{64, 256} {
			name := fmt.Sprintf("writers=%d", writers)
			if nodes > 1 {
				name += fmt.Sprintf("/nodes=%d", nodes)
			}
			b.Run(name, func(b *testing.B) {
				c := benchCluster(b)
				kvs := make([]*dister.KV, nodes)
				for i := range kvs {
					kvs[i] = openClient(b, c, 0).KV()
				}
				runParallel(b, writers, func(ctx context.Context, w, i int) error {
					_, err := kvs[w%nodes].Put(ctx, fmt.Sprintf("bench/%05d", rand.IntN(benchKeys)), benchValue)
					return err
				})
			})
		}
	}
}

// BenchmarkClientGet: 64 readers of 10,000 keys. "hits" reads keys the
// cache holds (warmed first); "misses" a cache of 1 key, so every read
// goes to a server; "through" turns the cache off; "nodes=3" spreads the
// readers over 3 client nodes (reader w on node w%3), as the versus
// harness does. Each reports the share of reads answered from the cache.
func BenchmarkClientGet(b *testing.B) {
	for _, mode := range []struct {
		name  string
		opt   dister.ReadOption
		cache int
		nodes int
	}{
		{"linearizable/hits", dister.Linearizable(), 0, 1},
		{"linearizable/hits/nodes=3", dister.Linearizable(), 0, 3},
		{"linearizable/through", dister.Linearizable(), -1, 1},
		{"session/hits", dister.SessionRead(), 0, 1},
		{"session/misses", dister.SessionRead(), 1, 1},
	} {
		b.Run(mode.name+"/readers=64", func(b *testing.B) {
			c := benchCluster(b)
			fill(b, c.Node(c.Leader()).KV())
			kvs := make([]*dister.KV, mode.nodes)
			for i := range kvs {
				kvs[i] = openClient(b, c, mode.cache).KV()
			}
			ctx := context.Background()
			if mode.cache >= 0 {
				for _, kv := range kvs {
					for k := range benchKeys { // warm the cache
						if _, err := kv.Get(ctx, fmt.Sprintf("bench/%05d", k)); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			var hits atomic.Int64
			runParallel(b, 64, func(ctx context.Context, w, i int) error {
				var hit bool
				_, err := kvs[w%len(kvs)].Get(ctx, fmt.Sprintf("bench/%05d", rand.IntN(benchKeys)), mode.opt, dister.CacheInfo(&hit))
				if hit {
					hits.Add(1)
				}
				return err
			})
			b.ReportMetric(float64(hits.Load())/float64(b.N), "hit-ratio")
		})
	}
}

// BenchmarkClientFollowers: what client nodes that follow a group cost
// the servers. Every client node's cache follows the group through one
// feed from a server, which carries the events of the keys it caches
// (and progress notes for the other revisions). The writes (256-byte values) come from the leader at 5,000 puts/s
// (b.N of them); with 0 and with 20 client nodes following, it reports
// the loopback bytes per write (every byte the process sent itself:
// Raft, peer API) and the process's CPU per write (servers and client
// nodes together: they share the process). The difference between the
// two runs is what following costs.
//
//	go test -run '^$' -bench BenchmarkClientFollowers -benchtime 10000x .
//
// Each client node's feed carries only the events of the keys its cache
// holds: in the cached=0 runs the nodes read one key that does not exist,
// in the cached=5% runs each reads (and caches) its own 5% of the keys
// written, so the feeds together carry the events of all of them. The
// unfiltered run follows the group as a node did before feeds were
// filtered (every event to every node).
func BenchmarkClientFollowers(b *testing.B) {
	type shape struct {
		followers, cachedPct int
		unfiltered           bool
	}
	for _, sh := range []shape{{0, 0, false}, {20, 0, false}, {20, 5, false}, {20, 5, true}} {
		name := fmt.Sprintf("followers=%d/cached=%d%%", sh.followers, sh.cachedPct)
		if sh.unfiltered {
			name += "/unfiltered"
		}
		b.Run(name, func(b *testing.B) {
			c := benchCluster(b)
			kv := c.Node(c.Leader()).KV()
			ctx := context.Background()
			share := benchKeys * sh.cachedPct / 100
			if share > 0 {
				for i := range benchKeys {
					if _, err := kv.Put(ctx, fmt.Sprintf("bench/%05d", i), benchValue); err != nil {
						b.Fatal(err)
					}
				}
			}
			for n := range sh.followers {
				// A first Get starts the node's feed of the group.
				// A cache of share keys: its warm-up's keys make way for
				// the node's own share as it reads them.
				cl := openClient(b, c, share)
				if sh.unfiltered {
					dister.ClientFeedsUnfiltered(cl)
				}
				ckv := cl.KV()
				if _, err := ckv.Get(ctx, "bench/none"); err != nil && !errors.Is(err, dister.ErrNotFound) {
					b.Fatal(err)
				}
				for i := range share {
					if _, err := ckv.Get(ctx, fmt.Sprintf("bench/%05d", (n*share+i)%benchKeys)); err != nil {
						b.Fatal(err)
					}
				}
			}
			time.Sleep(200 * time.Millisecond) // the feeds open
			const rate = 5000
			bytes0, cpu0 := loopbackBytes(b), processCPU()
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			var failed atomic.Int64
			for i := range b.N {
				// Paced: write i is due at start + i/rate.
				if d := time.Until(start.Add(time.Duration(i) * time.Second / rate)); d > 0 {
					time.Sleep(d)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := kv.Put(ctx, fmt.Sprintf("bench/%05d", i%benchKeys), benchValue); err != nil {
						failed.Add(1)
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			time.Sleep(100 * time.Millisecond) // the feeds deliver the last writes
			b.StopTimer()
			if f := failed.Load(); f > 0 {
				b.Fatalf("%d of %d puts failed", f, b.N)
			}
			n := float64(b.N)
			b.ReportMetric(n/elapsed.Seconds(), "puts/s")
			b.ReportMetric(float64(loopbackBytes(b)-bytes0)/n, "lo-bytes/put")
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/n, "cpu-µs/put")
		})
	}
}

// loopbackBytes is what the loopback interface has carried (Linux).
func loopbackBytes(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		b.Skipf("no /proc/net/dev: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || name != "lo" {
			continue
		}
		fields := strings.Fields(rest)
		v, err := strconv.ParseInt(fields[0], 10, 64) // received bytes
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
	b.Skip("no loopback interface in /proc/net/dev")
	return 0
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
