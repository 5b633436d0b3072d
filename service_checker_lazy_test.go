package dister_test

import (
	"net"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// checkersRunning sums the service checkers of c's running servers.
func checkersRunning(c *testcluster.Cluster) int {
	n := 0
	for _, id := range c.IDs() {
		if node := c.Node(id); node != nil {
			n += dister.Checkers(node)
		}
	}
	return n
}

// A group without services runs no checker on its leader; the first
// registration starts one (the instance's check runs), and when the
// leader stops, the new leader of the group starts its own and the check
// goes on.
func TestCheckerOnlyForGroupsWithServices(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	for _, g := range []string{"quiet", "busy"} {
		if err := c.Node(1).CreateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range []string{"default", "quiet", "busy"} {
		if _, err := c.Node(1).Group(g).KV().Put(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond) // five passes of the check loop
	if n := checkersRunning(c); n != 0 {
		t.Fatalf("%d checkers run for groups without services", n)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	s := c.Node(2).Group("busy").Services()
	if err := s.Register(ctx, dister.Instance{Service: "cache", ID: "1", Address: addr,
		Check: dister.Check{Type: dister.CheckTCP, Target: addr, Interval: fastCheck}}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, "cache", "1", dister.StatusPassing)
	waitFor(t, func() bool { return checkersRunning(c) == 1 })

	// The group's leader stops: its successor checks, and only it.
	leader, err := c.Node(2).Group("busy").Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Stop(leader)
	survivor := c.Node(leader%3 + 1)
	s = survivor.Group("busy").Services()
	ln.Close()
	waitStatus(t, s, "cache", "1", dister.StatusCritical)
	waitFor(t, func() bool { return checkersRunning(c) == 1 })
	time.Sleep(300 * time.Millisecond)
	if n := checkersRunning(c); n != 1 {
		t.Fatalf("%d checkers after the failover, want 1 (group busy only)", n)
	}
}
