package dister_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestBalancerPastViewBoundStaleWithoutQuorum: once a Balancer keeps
// MaxBalancedServices views, Picks of further services read the registry
// each time; on a server cut off from the others such a Pick must not
// answer from its own replica as if it were current, any more than a view
// would (ErrStaleView, or a failed read). Before, it read the local
// replica (a session read needs no leader) and served the old instance.
func TestBalancerPastViewBoundStaleWithoutQuorum(t *testing.T) {
	c := testcluster.New(t, 3, shortStale)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := c.Node(1).Services().Register(ctx, dister.Instance{Service: "api", ID: "a", Address: "10.0.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	b := c.Node(3).Balancer()
	waitFor(t, func() bool { in, err := b.Pick(ctx, "api"); return err == nil && in.ID == "a" })
	// Fill the bound with views of services that have no instances.
	for i := 0; dister.ViewCount(b) < dister.MaxBalancedServices; i++ {
		if _, err := b.Pick(ctx, fmt.Sprintf("empty-%d", i)); !errors.Is(err, dister.ErrNoInstance) {
			t.Fatalf("pick of an empty service: %v", err)
		}
	}
	if err := c.Node(1).Services().Register(ctx, dister.Instance{Service: "over", ID: "o", Address: "10.0.0.2:80"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { in, err := b.Pick(ctx, "over"); return err == nil && in.ID == "o" })
	if n := dister.ViewCount(b); n != dister.MaxBalancedServices {
		t.Fatalf("%d views, want the bound %d", n, dister.MaxBalancedServices)
	}

	c.Stop(1)
	c.Stop(2)
	// The view of "api" goes stale; wait for that, then the Pick past the
	// bound must not serve either.
	waitFor(t, func() bool { _, err := b.Pick(ctx, "api"); return errors.Is(err, dister.ErrStaleView) })
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	defer pcancel()
	if in, err := b.Pick(pctx, "over"); err == nil {
		t.Fatalf("pick past the view bound on a server without quorum: served %q from its own replica", in.ID)
	}
}

// TestBalancerFreshRoundRobinRotates: RoundRobin under Fresh() rotates
// through the instances of a service this Balancer keeps no view of, as
// it does from a view. Before, each such Pick started a new rotation, so
// every one returned the first instance.
func TestBalancerFreshRoundRobinRotates(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	for _, id := range []string{"a", "b", "c"} {
		if err := c.Node(1).Services().Register(ctx, dister.Instance{Service: "api", ID: id, Address: "10.0.0.1:80"}); err != nil {
			t.Fatal(err)
		}
	}
	b := c.Node(1).Balancer()
	seen := map[string]int{}
	for range 6 {
		in, err := b.Pick(ctx, "api", dister.Fresh(), dister.RoundRobin())
		if err != nil {
			t.Fatal(err)
		}
		seen[in.ID]++
	}
	if len(seen) != 3 {
		t.Fatalf("6 fresh round-robin picks of 3 instances: %v", seen)
	}
}
