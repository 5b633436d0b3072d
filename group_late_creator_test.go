package dister_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// A group's creator whose replica starts late (held 700 ms here, after
// the others elected a leader at their election timeout) leaves that
// leader in place. Each new leader's first entry raises the applied
// index, which counts them. Found by review: 2 of 10 groups got two more
// leaders before the creator campaigned once only (4 here, for CI's time).
// A trial during which the default group changed leader too tells nothing
// (the machine starved the engine: CI runs other packages' tests beside
// this one) and is run again, up to 4 times in all.
func TestLateCreatorKeepsNewGroupsLeader(t *testing.T) {
	regs := map[uint64]*prometheus.Registry{}
	var mu sync.Mutex
	c := testcluster.New(t, 3, func(o *dister.Options) {
		o.HeartbeatRTT = 4
		r := prometheus.NewRegistry()
		mu.Lock()
		regs[o.NodeID] = r
		mu.Unlock()
		o.Metrics = r
	})
	defaultChanges := func() float64 {
		mu.Lock()
		defer mu.Unlock()
		var sum float64
		for _, r := range regs {
			sum += counterValue(t, r, "dister_leader_changes_total", "default")
		}
		return sum
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	creator := c.Node(c.Leader())
	var other *dister.Node
	for _, id := range c.IDs() {
		if c.Node(id) != creator {
			other = c.Node(id)
		}
	}
	const trials, inconclusiveAllowed = 4, 4
	inconclusive := 0
	for i := 0; i < trials+inconclusive; i++ {
		name := fmt.Sprintf("late%d", i)
		dister.SetStartHook(creator, func(uint64) { time.Sleep(700 * time.Millisecond) })
		done := make(chan error, 1)
		go func() { done <- creator.CreateGroup(ctx, name) }()
		var before uint64
		for {
			if l, err := other.Group(name).Leader(ctx); err == nil && l != 0 {
				time.Sleep(100 * time.Millisecond)
				before = dister.RaftApplied(other, name)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		dister.SetStartHook(creator, nil)
		control := defaultChanges()
		time.Sleep(time.Second)
		after := dister.RaftApplied(other, name)
		if after != before && defaultChanges() != control && inconclusive < inconclusiveAllowed {
			inconclusive++
			t.Logf("group %s: %d new leaders, but the default group changed leader too: trial run again", name, after-before)
			continue
		}
		if after != before {
			t.Fatalf("group %s: applied index %d once led, %d a second after its creator's replica started (%d new leaders)",
				name, before, after, after-before)
		}
	}
}
