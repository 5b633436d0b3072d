package dister_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/dister/dister"
)

// Benchmarks of a client node over 3 servers in the same process (over
// loopback gRPC), with the figures of BenchmarkPut and BenchmarkGet:
//
//	go test -run '^$' -bench BenchmarkClient -benchtime 20000x .

func BenchmarkClientPut(b *testing.B) {
	for _, writers := range []int{64, 256} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			c := benchCluster(b)
			kv := openClient(b, c, 0).KV()
			runParallel(b, writers, func(ctx context.Context, w, i int) error {
				_, err := kv.Put(ctx, fmt.Sprintf("bench/%05d", rand.IntN(benchKeys)), benchValue)
				return err
			})
		})
	}
}

// BenchmarkClientGet: 64 readers of 10,000 keys. "hits" reads keys the
// cache holds (warmed first); "misses" a cache of 1 key, so every read
// goes to a server; "through" turns the cache off. Each reports the share
// of reads answered from the cache.
func BenchmarkClientGet(b *testing.B) {
	for _, mode := range []struct {
		name  string
		opt   dister.ReadOption
		cache int
	}{
		{"linearizable/hits", dister.Linearizable(), 0},
		{"linearizable/through", dister.Linearizable(), -1},
		{"session/hits", dister.SessionRead(), 0},
		{"session/misses", dister.SessionRead(), 1},
	} {
		b.Run(mode.name+"/readers=64", func(b *testing.B) {
			c := benchCluster(b)
			fill(b, c.Node(c.Leader()).KV())
			kv := openClient(b, c, mode.cache).KV()
			ctx := context.Background()
			if mode.cache >= 0 {
				for k := range benchKeys { // warm the cache
					if _, err := kv.Get(ctx, fmt.Sprintf("bench/%05d", k)); err != nil {
						b.Fatal(err)
					}
				}
			}
			var hits atomic.Int64
			runParallel(b, 64, func(ctx context.Context, w, i int) error {
				var hit bool
				_, err := kv.Get(ctx, fmt.Sprintf("bench/%05d", rand.IntN(benchKeys)), mode.opt, dister.CacheInfo(&hit))
				if hit {
					hits.Add(1)
				}
				return err
			})
			b.ReportMetric(float64(hits.Load())/float64(b.N), "hit-ratio")
		})
	}
}
