package dister_test

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// liveHeap is the Go heap that the last GC found live: what a save keeps,
// unlike HeapAlloc, which also counts garbage not collected yet.
func liveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

var snapshotMB = flag.Int("snapshot.mb", 1024, "MiB of 64 KiB values BenchmarkSnapshot fills the cluster with")

// BenchmarkSnapshot fills a 3-server cluster with -snapshot.mb MiB of
// 64 KiB values and reports the speed of a save and of one server's
// restore, the growth of the live Go heap during the save (it must stay
// under 64 MiB: the save streams), and the p99 of 16 writers' puts without and during a
// save:
//
//	go test -run '^$' -bench Snapshot -benchtime 1x -timeout 30m .
func BenchmarkSnapshot(b *testing.B) {
	ctx := context.Background()
	c := testcluster.New(b, 3)
	leader := c.Node(c.Leader())
	kv := leader.KV()
	const valueSize = 64 << 10
	n := *snapshotMB << 20 / valueSize
	var next atomic.Int64
	var wg sync.WaitGroup
	fillStart := time.Now()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := make([]byte, valueSize)
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				_, _ = rand.Read(v)
				// A loaded machine may lose the leader now and then under
				// this much data: the same put again is harmless here.
				var err error
				for try := 0; try < 10; try++ {
					if _, err = kv.Put(ctx, fmt.Sprintf("big/%07d", i), v); err == nil {
						break
					}
				}
				if err != nil {
					b.Errorf("fill: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.Logf("filled %d MiB in %v", *snapshotMB, time.Since(fillStart))
	saver := c.Node(func() uint64 { f, _ := c.Followers(); return f[0] }())
	dir := b.TempDir()

	// Save alone: speed and heap growth.
	var info dister.SnapshotInfo
	var growth uint64
	var saveTook time.Duration
	b.ResetTimer()
	for i := range b.N {
		file := filepath.Join(dir, fmt.Sprintf("s%d.snap", i))
		f, err := os.Create(file)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		base := liveHeap()
		var peak atomic.Uint64
		done := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				if h := liveHeap(); h > peak.Load() {
					peak.Store(h)
				}
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		start := time.Now()
		info, err = saver.Snapshot(ctx, f)
		saveTook = time.Since(start)
		close(done)
		<-sampled
		if err != nil {
			b.Fatal(err)
		}
		_ = f.Close()
		if p := peak.Load(); p > base {
			growth = max(growth, p-base)
		}
	}
	b.StopTimer()
	mb := float64(info.Bytes) / (1 << 20)
	b.ReportMetric(mb/saveTook.Seconds(), "save-MB/s")
	b.ReportMetric(float64(growth)/(1<<20), "heap-growth-MiB")
	if growth > 64<<20 {
		b.Errorf("the heap grew by %d MiB during the save, more than 64", growth>>20)
	}
	file := filepath.Join(dir, "s0.snap")

	// Restore of one server's data dir.
	o := dister.Options{NodeID: 1, DataDir: filepath.Join(dir, "restored"), RaftAddr: testcluster.FreeAddr(b), PeerAddr: testcluster.FreeAddr(b)}
	start := time.Now()
	if _, err := dister.Restore(ctx, file, o); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(mb/time.Since(start).Seconds(), "restore-MB/s")

	// 16 writers' latency for as long as a save takes, without one, then
	// during one.
	p99 := func(during func()) float64 {
		var mu sync.Mutex
		var lat []time.Duration
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v := make([]byte, 256)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					t0 := time.Now()
					if _, err := kv.Put(ctx, fmt.Sprintf("lat/%02d/%04d", w, i%1000), v); err != nil {
						continue
					}
					d := time.Since(t0)
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			}()
		}
		during()
		close(stop)
		wg.Wait()
		slices.Sort(lat)
		return float64(lat[len(lat)*99/100].Microseconds()) / 1000
	}
	b.ReportMetric(p99(func() { time.Sleep(saveTook) }), "put-p99-ms-idle")
	b.ReportMetric(p99(func() {
		f, err := os.Create(filepath.Join(dir, "during.snap"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if _, err := saver.Snapshot(ctx, f); err != nil {
			b.Error(err)
		}
	}), "put-p99-ms-saving")
}
