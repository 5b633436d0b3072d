package dister_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// staleBound is BalancerStaleAfter in these tests: short, so a view that
// stopped following is found out quickly, yet long enough for a
// leader-confirmed progress note on a loaded machine.
const staleBound = 3 * time.Second

func shortStale(o *dister.Options) { o.BalancerStaleAfter = staleBound }

// pickStaysFresh picks from b for twice the bound and fails at the first
// error: an idle view of a healthy cluster must not go stale.
func pickStaysFresh(t *testing.T, b *dister.Balancer, service, want string) {
	t.Helper()
	ctx := ctxT(t)
	for end := time.Now().Add(2 * staleBound); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if in, err := b.Pick(ctx, service); err != nil || in.ID != want {
			t.Fatalf("pick from an idle view of a healthy cluster: %q, %v", in.ID, err)
		}
	}
}

// TestBalancerStaleViewWithoutQuorum: a server cut off from the others
// (here: they stopped) keeps its local view, but once the view has not
// been confirmed for BalancerStaleAfter, Pick fails with ErrStaleView
// instead of serving instances that may be gone; Fresh() cannot read
// either; and the view is fresh again once the cluster is back. Before,
// the Pick went on answering from the old view.
func TestBalancerStaleViewWithoutQuorum(t *testing.T) {
	t.Parallel() // mostly waiting out the bound
	c := testcluster.New(t, 3, shortStale)
	ctx := ctxT(t)
	if err := c.Node(1).Services().Register(ctx, dister.Instance{Service: "api", ID: "a", Address: "10.0.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	b := c.Node(3).Balancer()
	waitFor(t, func() bool { in, err := b.Pick(ctx, "api"); return err == nil && in.ID == "a" })
	pickStaysFresh(t, b, "api", "a")

	c.Stop(1)
	c.Stop(2)
	waitFor(t, func() bool { _, err := b.Pick(ctx, "api"); return errors.Is(err, dister.ErrStaleView) })
	if in, err := b.Pick(ctx, "api", dister.RoundRobin()); !errors.Is(err, dister.ErrStaleView) {
		t.Fatalf("round robin from a stale view: %q, %v", in.ID, err)
	}
	fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	in, err := b.Pick(fctx, "api", dister.Fresh())
	cancel()
	if err == nil || errors.Is(err, dister.ErrStaleView) {
		t.Fatalf("fresh pick without a quorum: %q, %v; want a quorum or deadline error", in.ID, err)
	}

	c.Restart(1)
	c.Restart(2)
	waitFor(t, func() bool { in, err := b.Pick(ctx, "api"); return err == nil && in.ID == "a" })
}

// TestBalancerFreshReadsPastTheView: with the server's watch fan-out held
// (its view stopped following), Pick answers from the view while
// Fresh() sees the registry as it is now.
func TestBalancerFreshReadsPastTheView(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	s := c.Node(1).Services()
	if err := s.Register(ctx, dister.Instance{Service: "api", ID: "a", Address: "10.0.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	b := c.Node(3).Balancer()
	waitFor(t, func() bool { in, err := b.Pick(ctx, "api"); return err == nil && in.ID == "a" })
	_, unblock := holdHubs(c.Node(3))
	defer unblock()
	if err := s.Register(ctx, dister.Instance{Service: "api", ID: "b", Address: "10.0.0.2:80"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Deregister(ctx, "api", "a"); err != nil {
		t.Fatal(err)
	}
	if in, err := b.Pick(ctx, "api"); err != nil || in.ID != "a" {
		t.Fatalf("pick from the held view: %q, %v; want the old instance a", in.ID, err)
	}
	for _, opt := range []dister.PickOption{dister.PriorityWeighted(), dister.RoundRobin(), dister.HashKey("k")} {
		if in, err := b.Pick(ctx, "api", dister.Fresh(), opt); err != nil || in.ID != "b" {
			t.Fatalf("fresh pick: %q, %v; want b", in.ID, err)
		}
	}
	unblock()
	waitFor(t, func() bool { in, err := b.Pick(ctx, "api"); return err == nil && in.ID == "b" })
}

// TestClientBalancerStaleAndFresh: the same in the client role, whose
// views follow a watch stream from a server: Fresh() reads past a view
// that is behind, and a client that lost every server gets ErrStaleView.
func TestClientBalancerStaleAndFresh(t *testing.T) {
	t.Parallel() // mostly waiting out the bound
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	var seeds []string
	for _, id := range c.IDs() {
		seeds = append(seeds, c.Options(id).PeerAddr)
	}
	cl, err := dister.Open(ctx, dister.Options{Role: dister.RoleClient, Servers: seeds,
		BalancerStaleAfter: staleBound, Logger: testcluster.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	if err := cl.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	s := c.Node(1).Services()
	if err := s.Register(ctx, dister.Instance{Service: "api", ID: "a", Address: "10.0.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	b := cl.Balancer()
	waitFor(t, func() bool { in, err := b.Pick(ctx, "api"); return err == nil && in.ID == "a" })
	pickStaysFresh(t, b, "api", "a")

	// Hold every server's fan-out: the client's view stops following.
	for _, id := range c.IDs() {
		_, unblock := holdHubs(c.Node(id))
		defer unblock()
	}
	if err := s.Register(ctx, dister.Instance{Service: "api", ID: "b", Address: "10.0.0.2:80"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Deregister(ctx, "api", "a"); err != nil {
		t.Fatal(err)
	}
	if in, err := b.Pick(ctx, "api", dister.Fresh()); err != nil || in.ID != "b" {
		t.Fatalf("fresh pick on a client: %q, %v; want b", in.ID, err)
	}
	// With the fan-outs held the view hears nothing and goes stale.
	waitFor(t, func() bool { _, err := b.Pick(ctx, "api"); return errors.Is(err, dister.ErrStaleView) })
}

// TestPickAllocatesNothing: a Pick from a view (each strategy, with the
// staleness check) allocates nothing; BenchmarkPick measures its speed.
func TestPickAllocatesNothing(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	for _, id := range []string{"a", "b", "c"} {
		if err := c.Node(1).Services().Register(ctx, dister.Instance{Service: "api", ID: id, Address: "10.0.0.1:80", Priority: 2}); err != nil {
			t.Fatal(err)
		}
	}
	b := c.Node(1).Balancer()
	waitFor(t, func() bool { _, err := b.Pick(ctx, "api", dister.HashKey("k")); return err == nil })
	for _, opt := range []dister.PickOption{dister.PriorityWeighted(), dister.RoundRobin(), dister.HashKey("user-42")} {
		if n := testing.AllocsPerRun(1000, func() {
			if _, err := b.Pick(ctx, "api", opt); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%+v: %.1f allocations per Pick, want 0", opt, n)
		}
	}
}
