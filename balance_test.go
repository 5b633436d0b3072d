package dister_test

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// 100,000 priority-weighted picks land within 2% of the weights, picks
// need the view only, and a standby (priority 0) is never picked while a
// weighted instance passes.
func TestBalancerPriorityDistribution(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	s := c.Node(1).Services()
	weights := map[string]int{"a": 1, "b": 2, "c": 3, "d": 4, "standby": 0}
	for id, w := range weights {
		if err := s.Register(ctx, dister.Instance{Service: "w", ID: id, Address: "127.0.0.1:1", Priority: w}); err != nil {
			t.Fatal(err)
		}
	}
	b := c.Node(2).Balancer()
	waitFor(t, func() bool {
		insts, err := c.Node(2).Services().Get(ctx, "w", dister.WithRead(dister.Linearizable()))
		return err == nil && len(insts) == len(weights)
	})
	// The view follows the watch: wait until it has every instance.
	waitFor(t, func() bool {
		seen := map[string]bool{}
		for range 2000 {
			in, err := b.Pick(ctx, "w", dister.RoundRobin())
			if err != nil {
				return false
			}
			seen[in.ID] = true
		}
		return len(seen) == 4
	})
	const n = 100000
	counts := map[string]int{}
	for range n {
		in, err := b.Pick(ctx, "w")
		if err != nil {
			t.Fatal(err)
		}
		counts[in.ID]++
	}
	if counts["standby"] != 0 {
		t.Fatalf("standby picked %d times", counts["standby"])
	}
	for id, w := range weights {
		if w == 0 {
			continue
		}
		want := float64(w) / 10
		got := float64(counts[id]) / n
		if math.Abs(got-want) > 0.02*want+0.002 {
			t.Errorf("%s: share %.4f, want %.4f ±2%%", id, got, want)
		}
	}
	if _, err := b.Pick(ctx, "nosuch"); !errors.Is(err, dister.ErrNoInstance) {
		t.Fatalf("pick of an unknown service: %v", err)
	}
	if _, err := b.Pick(ctx, "bad/name"); !errors.Is(err, dister.ErrInvalid) {
		t.Fatalf("pick of a bad name: %v", err)
	}
}

// HashKey sends a key to the same instance while the set is stable, and
// when one of n instances leaves, about 1/n of the keys move (≤ 1/n + 10%).
func TestBalancerHashKeyStability(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	s := c.Node(1).Services()
	const n = 5
	for i := range n {
		if err := s.Register(ctx, dister.Instance{Service: "h", ID: fmt.Sprint(i), Address: "127.0.0.1:1", Priority: 1}); err != nil {
			t.Fatal(err)
		}
	}
	b := c.Node(1).Balancer()
	assign := func() map[string]string {
		m := map[string]string{}
		for k := range 10000 {
			key := fmt.Sprintf("user-%d", k)
			in, err := b.Pick(ctx, "h", dister.HashKey(key))
			if err != nil {
				t.Fatal(err)
			}
			m[key] = in.ID
		}
		return m
	}
	before := assign()
	if again := assign(); fmt.Sprint(again) != fmt.Sprint(before) {
		t.Fatal("HashKey answers changed with the set stable")
	}
	if err := s.Deregister(ctx, "h", "3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		for k := range 200 {
			if in, _ := b.Pick(ctx, "h", dister.HashKey(fmt.Sprint(k))); in.ID == "3" {
				return false
			}
		}
		return true
	})
	after := assign()
	moved := 0
	for k, id := range before {
		if after[k] != id {
			moved++
			if id != "3" {
				t.Errorf("key %s moved from %s, which did not leave, to %s", k, id, after[k])
			}
		}
	}
	if share := float64(moved) / float64(len(before)); share > 1.0/n+0.10 {
		t.Fatalf("%.3f of the keys moved, want ≤ %.3f", share, 1.0/n+0.10)
	}
}

func TestBalancerUnknownGroup(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	b := c.Node(1).Group("nosuch").Balancer()
	if _, err := b.Pick(ctx, "svc"); !errors.Is(err, dister.ErrGroupNotFound) {
		t.Fatalf("pick in a missing group: %v, want ErrGroupNotFound", err)
	}
	// Created later: the same Balancer starts afresh.
	if err := c.Node(1).CreateGroup(ctx, "nosuch"); err != nil {
		t.Fatal(err)
	}
	if err := c.Node(1).Group("nosuch").Services().Register(ctx, dister.Instance{Service: "svc", ID: "1", Address: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if in, err := b.Pick(ctx, "svc"); err != nil || in.ID != "1" {
		t.Fatalf("pick after the group was created: %v, %v", in.ID, err)
	}
}

// Views of services without instances that nobody picks from are dropped
// at the next sweep; views of services with instances stay longer.
func TestBalancerDropsIdleEmptyViews(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	b := c.Node(1).Group("default").Balancer()
	dister.SetViewIdle(b, 100*time.Millisecond)
	if err := c.Node(1).Services().Register(ctx, dister.Instance{Service: "real", ID: "1", Address: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Pick(ctx, "real"); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := b.Pick(ctx, fmt.Sprintf("ghost%d", i)); !errors.Is(err, dister.ErrNoInstance) {
			t.Fatalf("pick of a service without instances: %v", err)
		}
	}
	if n := dister.ViewCount(b); n != 21 {
		t.Fatalf("%d views, want 21", n)
	}
	waitFor(t, func() bool { return dister.ViewCount(b) == 1 })
	// The remaining view still serves, and a dropped one comes back.
	if in, err := b.Pick(ctx, "real"); err != nil || in.ID != "1" {
		t.Fatalf("pick after the sweep: %v, %v", in.ID, err)
	}
	if err := c.Node(1).Services().Register(ctx, dister.Instance{Service: "ghost3", ID: "x", Address: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { in, err := b.Pick(ctx, "ghost3"); return err == nil && in.ID == "x" })
}

// TestRoundRobinFairUnderChanges: the rotation goes on when the instance
// set changes between picks (a real Balancer over a changing registry).
// Before, every change restarted it at the first instance.
func TestRoundRobinFairUnderChanges(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	s, b := c.Node(1).Services(), c.Node(1).Balancer()
	for i := range 10 {
		if err := s.Register(ctx, dister.Instance{Service: "rr", ID: fmt.Sprint(i), Address: fmt.Sprintf("10.0.0.%d:80", i+1)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { _, err := b.Pick(ctx, "rr"); return err == nil })
	seen := map[string]int{}
	for i := range 30 {
		// A change of the set (an instance that is never picked).
		if err := s.Register(ctx, dister.Instance{Service: "rr", ID: "x", Address: "10.0.0.99:80", Priority: i,
			Check: dister.Check{Type: dister.CheckNever}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond) // let the view follow
		in, err := b.Pick(ctx, "rr", dister.RoundRobin())
		if err != nil {
			t.Fatal(err)
		}
		seen[in.ID]++
	}
	if len(seen) < 8 {
		t.Fatalf("round robin over 10 instances picked only %v in 30 picks with a change before each", seen)
	}
}

// TestBalancerDropsIdleViews: a view with instances that no Pick read for
// ten sweep periods is dropped too (memory follows the services in use),
// and the next Pick loads it again.
func TestBalancerDropsIdleViews(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	b := c.Node(1).Group("default").Balancer()
	dister.SetViewIdle(b, 50*time.Millisecond)
	if err := c.Node(1).Services().Register(ctx, dister.Instance{Service: "real", ID: "1", Address: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Pick(ctx, "real"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return dister.ViewCount(b) == 0 })
	if in, err := b.Pick(ctx, "real"); err != nil || in.ID != "1" {
		t.Fatalf("pick after the view was dropped: %v, %v", in.ID, err)
	}
	if n := dister.ViewCount(b); n != 1 {
		t.Fatalf("%d views after a Pick, want 1", n)
	}
}

// TestBalancerViewFollowsChanges: a view fed change by change by the
// watch (registrations, re-registrations with other priorities, never
// checked instances, deregistrations, on the real store) ends up with the
// candidates a fresh read of the registry gives.
func TestBalancerViewFollowsChanges(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	s, b := c.Node(1).Services(), c.Node(1).Balancer()
	r := rand.New(rand.NewPCG(9, 10))
	if err := s.Register(ctx, dister.Instance{Service: "f", ID: "seed", Address: "10.0.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Pick(ctx, "f"); err != nil { // the view starts here
		t.Fatal(err)
	}
	for range 120 {
		id := fmt.Sprint("i", r.IntN(25))
		in := dister.Instance{Service: "f", ID: id, Address: "10.0.0.2:80", Priority: r.IntN(3)}
		switch r.IntN(4) {
		case 0:
			if err := s.Deregister(ctx, "f", id); err != nil && !errors.Is(err, dister.ErrNotFound) {
				t.Fatal(err)
			}
			continue
		case 1:
			in.Check = dister.Check{Type: dister.CheckNever}
		}
		if err := s.Register(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	insts, err := s.Get(ctx, "f", dister.WithRead(dister.Linearizable()))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	anyWeight := false
	for _, in := range insts {
		anyWeight = anyWeight || (in.Status == dister.StatusPassing && in.Priority > 0)
	}
	for _, in := range insts {
		if in.Status == dister.StatusPassing && (in.Priority > 0 || !anyWeight) {
			want[in.ID] = true
		}
	}
	waitFor(t, func() bool {
		got := map[string]bool{}
		for range 2 * len(want) {
			in, err := b.Pick(ctx, "f", dister.RoundRobin())
			if err != nil {
				return false
			}
			got[in.ID] = true
		}
		return maps.Equal(got, want)
	})
}
