package dister_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// BenchmarkWatchLatency: 16 writers put b.N keys on a 3-server cluster;
// watchers on a follower report put→event latency (from the Put call to
// the event's arrival):
//
//	go test -run '^$' -bench WatchLatency -benchtime 4000x .
func BenchmarkWatchLatency(b *testing.B) {
	for _, watchers := range []int{1, 1000} {
		b.Run(fmt.Sprintf("watchers=%d", watchers), func(b *testing.B) {
			c := testcluster.New(b, 3)
			leader := c.Leader()
			var follower uint64
			for _, id := range c.IDs() {
				if id != leader {
					follower = id
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var started, acked sync.Map // key -> time.Time
			lat := make([][]time.Duration, watchers)
			gap := make([][]time.Duration, watchers)
			var wg sync.WaitGroup
			for w := range watchers {
				events := c.Node(follower).KV().Watch(ctx, "lat/")
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := 0; n < b.N; {
						ev := <-events
						if ev.Err != nil {
							b.Error(ev.Err)
							return
						}
						if ev.Type != dister.EventPut {
							continue
						}
						now := time.Now()
						t0, _ := started.Load(ev.Entry.Key)
						lat[w] = append(lat[w], now.Sub(t0.(time.Time)))
						if t1, ok := acked.Load(ev.Entry.Key); ok {
							gap[w] = append(gap[w], now.Sub(t1.(time.Time)))
						} else {
							gap[w] = append(gap[w], 0) // the event came before the ack
						}
						n++
					}
				}()
			}
			b.ResetTimer()
			kv := c.Node(leader).KV()
			var wwg sync.WaitGroup
			next := make(chan int)
			for range 16 {
				wwg.Add(1)
				go func() {
					defer wwg.Done()
					for i := range next {
						k := fmt.Sprintf("lat/%07d", i)
						started.Store(k, time.Now())
						if _, err := kv.Put(ctx, k, benchValue); err != nil {
							b.Error(err)
						}
						acked.Store(k, time.Now())
					}
				}()
			}
			for i := range b.N {
				next <- i
			}
			close(next)
			wwg.Wait()
			wg.Wait()
			b.StopTimer()
			all := slices.Concat(lat...)
			slices.Sort(all)
			b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
			gaps := slices.Concat(gap...)
			slices.Sort(gaps)
			b.ReportMetric(float64(gaps[len(gaps)/2].Microseconds())/1000, "ack-to-event-p50-ms")
			b.ReportMetric(float64(gaps[len(gaps)*99/100].Microseconds())/1000, "ack-to-event-p99-ms")
		})
	}
}

// BenchmarkIdleWatchers reports the memory 10,000 idle watchers hold.
func BenchmarkIdleWatchers(b *testing.B) {
	const n = 10000
	c := testcluster.New(b, 1)
	kv := c.Node(1).KV()
	for range b.N {
		ctx, cancel := context.WithCancel(context.Background())
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		chans := make([]<-chan dister.WatchEvent, n)
		for i := range n {
			chans[i] = kv.Watch(ctx, fmt.Sprintf("idle/%d/", i))
		}
		if _, err := kv.Put(context.Background(), "other", nil); err != nil { // a write none of them matches
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse+after.StackInuse-before.HeapInuse-before.StackInuse)/n, "bytes/watcher")
		b.ReportMetric(float64(runtime.NumGoroutine()-g0)/n, "goroutines/watcher")
		cancel()
		for _, ch := range chans {
			for range ch {
			}
		}
	}
}
