// Package benchrun runs a benchmark's closed-loop workers and reports what
// dister's benchmarks report: ops/s and the p50 and p99 of a call. It is
// for benchmarks only; no package of the product imports it.
package benchrun

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Spec says how Run runs.
type Spec struct {
	// Workers is the number of goroutines calling op (at least 1).
	Workers int
	// Timeout gives each call a deadline of its own; 0: none.
	Timeout time.Duration
	// Window, if set, is called as the measured window starts, and what it
	// returns as the window ends (to profile the window alone).
	Window func() (end func())
}

// Run makes b.N calls of op over s.Workers goroutines (w the worker, i the
// call's number), fails b if any call failed, and reports ops/s over the
// window and the p50 and p99 latency of a call.
func Run(b *testing.B, s Spec, op func(ctx context.Context, w, i int) error) {
	b.Helper()
	workers := max(s.Workers, 1)
	lat := make([][]time.Duration, workers)
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	end := func() {}
	if s.Window != nil {
		end = s.Window()
	}
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if s.Timeout > 0 {
					ctx, cancel = context.WithTimeout(ctx, s.Timeout)
				}
				t0 := time.Now()
				err := op(ctx, w, i)
				d := time.Since(t0)
				cancel()
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				lat[w] = append(lat[w], d)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	end()
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d calls failed, the first: %v", f, b.N, firstErr.Load())
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
}
