package dister_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// BenchmarkGroups measures what groups cost on 3 servers in one process
// (fsync on, 256-byte values): with N groups ("default" and N-1 created),
//
//	create-s          wall time to create the N-1 groups one after another through one Node
//	heap-KiB/group    Go heap growth per group (after GC, all three servers together), idle
//	goroutines/group  goroutine growth per group (all three servers together), idle
//	idle-cores        process CPU over an idle window with the N groups, in cores
//	puts/s-64, p99-ms-64, puts/s-256, p99-ms-256
//	                  puts spread over the N groups round-robin by 64 and 256 writers, each
//	                  writer through the leader's Node of its group
//	quiet-p99-ms, loaded-p99-ms
//	                  put p99 of one writer in group 1, alone and while 64 writers load "default"
//	failover-ms       the longest gap between acknowledged writes of a survivor writing to
//	                  group 1 (default when N=1) while the server that leads it closes
//
//	go test -run '^$' -bench 'BenchmarkGroups/groups=100$' -benchtime 1x -timeout 30m .
//
// DISTER_GROUPS_PHASE sets the length of the idle and write windows
// (default 5s); CI runs groups=10 with 2s. DISTER_GROUPS_RTT=50ms runs
// the servers with that Raft tick and the default election timeout (200
// ms) in ticks: fewer ticks and heartbeats per second for every group.
// DISTER_GROUPS_PROFILE=create|idle|put64 with DISTER_SCALE_CPUPROFILE=FILE
// writes a CPU profile of that window. DISTER_GROUPS_SNAPSHOT_ENTRIES=N
// makes every group take a snapshot each N applied entries (10,000 by
// default), so the loaded group of the isolation window snapshots often
// and loaded-p99-ms shows what that costs the probed group.
func BenchmarkGroups(b *testing.B) {
	phase := 5 * time.Second
	if v := os.Getenv("DISTER_GROUPS_PHASE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("DISTER_GROUPS_PHASE=%q: %v", v, err)
		}
		phase = d
	}
	for _, n := range []int{1, 10, 100, 300, 1000} {
		b.Run(fmt.Sprintf("groups=%d", n), func(b *testing.B) {
			for range b.N {
				benchGroups(b, n, phase)
			}
		})
	}
}

func benchGroups(b *testing.B, n int, phase time.Duration) {
	var tune []testcluster.Option
	if v := os.Getenv("DISTER_GROUPS_RTT"); v != "" {
		rtt, err := time.ParseDuration(v)
		if err != nil || rtt < time.Millisecond || rtt > 100*time.Millisecond {
			b.Fatalf("DISTER_GROUPS_RTT=%q: want 1ms to 100ms", v)
		}
		tune = append(tune, func(o *dister.Options) {
			// The same election timeout as the default (200 ms), in fewer ticks.
			o.RTT, o.ElectionRTT = rtt, max(3, uint64(200*time.Millisecond/rtt))
		})
	}
	if v := os.Getenv("DISTER_GROUPS_SNAPSHOT_ENTRIES"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			b.Fatalf("DISTER_GROUPS_SNAPSHOT_ENTRIES=%q: want a positive count", v)
		}
		tune = append(tune, func(o *dister.Options) { o.SnapshotEntries = n })
	}
	c := testcluster.New(b, 3, tune...)
	first := c.Node(c.Leader())
	time.Sleep(time.Second) // let start-up work settle before the baseline
	heap0, gor0 := heapAfterGC(), runtime.NumGoroutine()

	var names []string
	start := time.Now()
	withProfile(b, "create", func() { names = createGroups(b, first, n) })
	created := time.Since(start)
	waitAllLeaders(b, c, names)
	time.Sleep(time.Second) // as before the baseline: let the last start-up work settle
	heap1, gor1 := heapAfterGC(), runtime.NumGoroutine()
	var idle float64
	withProfile(b, "idle", func() { idle = cpuCores(func() { time.Sleep(phase) }) })

	leaders := groupLeaders(b, c, names)
	var puts64, p99at64 float64
	withProfile(b, "put64", func() { puts64, p99at64 = spreadPuts(b, c, names, leaders, 64, phase) })
	puts256, p99at256 := spreadPuts(b, c, names, leaders, 256, phase)
	var alone, beside float64
	if n > 1 {
		alone, beside = isolation(b, c, leaders, names[0], names[1], phase)
	}

	victim := names[min(1, len(names)-1)]
	failover := groupFailover(b, c, victim, leaders[victim])

	if n > 1 {
		b.ReportMetric(created.Seconds(), "create-s")
		per := float64(n - 1)
		b.ReportMetric((float64(heap1)-float64(heap0))/per/1024, "heap-KiB/group")
		b.ReportMetric(float64(gor1-gor0)/per, "goroutines/group")
		b.ReportMetric(alone, "quiet-p99-ms")
		b.ReportMetric(beside, "loaded-p99-ms")
	}
	b.ReportMetric(idle, "idle-cores")
	b.ReportMetric(puts64, "puts/s-64")
	b.ReportMetric(p99at64, "p99-ms-64")
	b.ReportMetric(puts256, "puts/s-256")
	b.ReportMetric(p99at256, "p99-ms-256")
	b.ReportMetric(float64(failover.Milliseconds()), "failover-ms")
}

// createGroups creates groups g0001... through n until there are n with
// "default", one after another, and returns their names.
func createGroups(b *testing.B, n *dister.Node, groups int) []string {
	names := []string{"default"}
	start := time.Now()
	for i := 1; i < groups; i++ {
		name := fmt.Sprintf("g%04d", i)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := n.CreateGroup(ctx, name)
		cancel()
		if err != nil {
			b.Fatalf("create %s: %v", name, err)
		}
		names = append(names, name)
		if i%100 == 0 {
			progress("groups: created %d of %d in %v", i, groups-1, time.Since(start).Round(time.Millisecond))
		}
	}
	return names
}

// withProfile runs f under a CPU profile when DISTER_GROUPS_PROFILE is
// phase (create, idle or put64), into the file DISTER_SCALE_CPUPROFILE names.
func withProfile(b *testing.B, phase string, f func()) {
	if os.Getenv("DISTER_GROUPS_PROFILE") != phase {
		f()
		return
	}
	stop := scaleProfile(b)
	defer stop()
	f()
}

// waitAllLeaders waits until every server knows a leader of every group.
func waitAllLeaders(b *testing.B, c *testcluster.Cluster, names []string) {
	deadline := time.Now().Add(2*time.Minute + time.Duration(len(names))*100*time.Millisecond)
	for _, name := range names {
		for _, id := range c.IDs() {
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				l, err := c.Node(id).Group(name).Leader(ctx)
				cancel()
				if err == nil && l != 0 {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("group %s on server %d: no leader (%v)", name, id, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
}

func groupLeaders(b *testing.B, c *testcluster.Cluster, names []string) map[string]uint64 {
	out := map[string]uint64{}
	for _, name := range names {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		l, err := c.Node(c.IDs()[0]).Group(name).Leader(ctx)
		cancel()
		if err != nil || l == 0 {
			b.Fatalf("group %s: leader %d, %v", name, l, err)
		}
		out[name] = l
	}
	return out
}

// spreadPuts runs `writers` writers for d, writer w writing to group
// w mod N through that group's leader, and returns puts/s and p99 in ms.
func spreadPuts(b *testing.B, c *testcluster.Cluster, names []string, leaders map[string]uint64,
	writers int, d time.Duration) (float64, float64) {
	kvs := make([]*dister.KV, len(names))
	for i, name := range names {
		kvs[i] = c.Node(leaders[name]).Group(name).KV()
	}
	var (
		stop   atomic.Bool
		failed atomic.Int64
		wg     sync.WaitGroup
		lat    = make([][]time.Duration, writers)
	)
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kv := kvs[w%len(kvs)]
			for !stop.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				_, err := kv.Put(ctx, fmt.Sprintf("bench/%05d", rand.IntN(benchKeys)), benchValue)
				cancel()
				if err != nil {
					failed.Add(1)
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d puts failed", f)
	}
	all := slices.Concat(lat...)
	if len(all) == 0 {
		b.Fatal("no put succeeded")
	}
	slices.Sort(all)
	return float64(len(all)) / elapsed.Seconds(), float64(all[len(all)*99/100].Microseconds()) / 1000
}

// isolation returns the put p99 (ms) of one writer in group probe through
// its leader, alone and while 64 writers load group loaded.
func isolation(b *testing.B, c *testcluster.Cluster, leaders map[string]uint64, loaded, probe string,
	d time.Duration) (alone, beside float64) {
	_, alone = spreadPuts(b, c, []string{probe}, leaders, 1, d)
	kv := c.Node(leaders[loaded]).Group(loaded).KV()
	var (
		stop  atomic.Bool
		acked atomic.Int64
		wg    sync.WaitGroup
	)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if _, err := kv.Put(ctx, fmt.Sprintf("load/%05d", rand.IntN(benchKeys)), benchValue); err == nil {
					acked.Add(1)
				}
				cancel()
			}
		}()
	}
	// The probe starts once every loader has had a write through, on average.
	for deadline := time.Now().Add(time.Minute); acked.Load() < 64; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("the load on group %s: %d writes in a minute", loaded, acked.Load())
		}
	}
	_, beside = spreadPuts(b, c, []string{probe}, leaders, 1, d)
	stop.Store(true)
	wg.Wait()
	return alone, beside
}

// groupFailover closes the server leading group name while a survivor
// writes to it continuously, and returns the longest gap between two
// acknowledged writes: the group's time without a leader, as a writer sees
// it (the close of a server with many groups takes a while itself).
func groupFailover(b *testing.B, c *testcluster.Cluster, name string, leader uint64) time.Duration {
	var survivor uint64
	for _, id := range c.IDs() {
		if id != leader {
			survivor = id
			break
		}
	}
	kv := c.Node(survivor).Group(name).KV()
	var (
		closed  atomic.Bool
		writing = make(chan struct{}) // closed at the first acknowledged write
		done    = make(chan time.Duration, 1)
	)
	go func() {
		var last time.Time
		gap := time.Duration(0)
		for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := kv.Put(ctx, "failover", nil)
			cancel()
			if err != nil {
				continue
			}
			now := time.Now()
			if last.IsZero() {
				close(writing)
			} else {
				gap = max(gap, now.Sub(last))
			}
			last = now
			if closed.Load() {
				done <- gap
				return
			}
		}
		done <- -1
	}()
	select {
	case <-writing:
	case gap := <-done:
		b.Fatalf("group %s: no write in 3 minutes before its leader closed (%v)", name, gap)
	}
	c.Stop(leader)
	closed.Store(true)
	gap := <-done
	if gap < 0 {
		b.Fatalf("group %s: no write 3 minutes after its leader closed", name)
	}
	return gap
}
