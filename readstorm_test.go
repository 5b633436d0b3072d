package dister_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// Reads a server answers from its own state never block, so callers that
// do nothing else keep every processor busy. Go's scheduler then runs the
// goroutines a network read wakes (the Raft transport's, the engine's)
// only now and then: a leader stopped hearing its followers within the
// election timeout and stepped down, again and again, while 64 callers
// read (found with the versus harness's read phases). A storm of local
// reads must not cost a group its leader.
func TestLocalReadStormKeepsLeaders(t *testing.T) {
	regs := map[uint64]*prometheus.Registry{}
	var mu sync.Mutex
	c := testcluster.New(t, 3, func(o *dister.Options) {
		r := prometheus.NewRegistry()
		mu.Lock()
		regs[o.NodeID] = r
		mu.Unlock()
		o.Metrics = r
	})
	ctx := ctxT(t)
	const keys = 2000
	for i := range keys {
		if _, err := c.Node(c.Leader()).KV().Put(ctx, fmt.Sprintf("storm/%05d", i), []byte("value")); err != nil {
			t.Fatal(err)
		}
	}
	changes := func() float64 {
		mu.Lock()
		defer mu.Unlock()
		var sum float64
		for _, r := range regs {
			sum += counterValue(t, r, "dister_leader_changes_total", "default")
		}
		return sum
	}
	before := changes()
	var nodes []*dister.KV
	for _, id := range c.IDs() {
		kv := c.Node(id).KV()
		// Every server has applied the keys: stale reads find them.
		if _, err := kv.Get(ctx, fmt.Sprintf("storm/%05d", keys-1), dister.Linearizable()); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, kv)
	}
	// A deadline of its own, as callers usually pass: no timer per read.
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var stop atomic.Bool
	var reads atomic.Int64
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			kv := nodes[w%len(nodes)]
			for !stop.Load() {
				opt := dister.Stale()
				if w%2 == 0 {
					opt = dister.SessionRead()
				}
				if _, err := kv.Get(rctx, fmt.Sprintf("storm/%05d", rand.IntN(keys)), opt); err != nil {
					t.Error(err)
					return
				}
				reads.Add(1)
			}
		}()
	}
	time.Sleep(6 * time.Second) // 30 election timeouts
	stop.Store(true)
	wg.Wait()
	after := changes()
	t.Logf("%d reads; leader changes of the default group seen by the servers: %v", reads.Load(), after-before)
	if after != before {
		t.Fatalf("the default group's leader changed %v times (as seen by the servers) during a storm of local reads", after-before)
	}
}
