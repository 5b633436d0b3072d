package dister_test

import (
	"context"
	"math"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// A session read whose floor the replica has applied is answered from
// memory at once. The check for a floor beyond the group (waitFloor) once
// armed a 250 ms timer for every such read: 14% fewer session reads per
// second (BenchmarkGet/session, 212,612 and 213,697 ops/s against
// 245,500 and 251,373). The allocations of a read tell that apart without
// timing anything.
func TestSessionReadAtAppliedFloorAllocates(t *testing.T) {
	c := testcluster.New(t, 1)
	kv := c.Node(c.Leader()).KV()
	ctx := context.Background()
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	// AllocsPerRun counts the whole process's allocations, the cluster's
	// own goroutines' too: the least of a few rounds is the read's.
	read := func(opt dister.ReadOption) float64 {
		least := math.Inf(1)
		for range 5 {
			least = min(least, testing.AllocsPerRun(2000, func() {
				if _, err := kv.Get(ctx, "k", opt); err != nil {
					t.Fatal(err)
				}
			}))
		}
		return least
	}
	session, stale := read(dister.SessionRead()), read(dister.Stale())
	t.Logf("allocations per read: session %.1f, stale %.1f", session, stale)
	if session > stale {
		t.Fatalf("a session read at an applied floor allocates %.1f objects, a stale read %.1f: the floor's wait costs what it need not", session, stale)
	}
}
