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

// Once DeleteGroup returns, no server that answers serves the group: a
// read through any of them right after finds it gone. Before the fix
// DeleteGroup returned when the server it ran on had dropped the group,
// and the others kept answering until their own reconcile pass
// (TestClientEverySDKCall read a deleted group in 2 of 20 runs; this test
// failed in 2 of 3 runs of 10 rounds).
func TestDeletedGroupGoneOnEveryServer(t *testing.T) {
	c := testcluster.New(t, 3)
	// DeleteGroup itself sometimes takes about 5 s (its own server's
	// replica closing); the rounds need more than ctxT's 30 s then.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for round := range 5 {
		name := fmt.Sprintf("gone%d", round)
		if err := c.Node(1).CreateGroup(ctx, name); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Node(1).Group(name).KV().Put(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		// Every server serves the group before it goes.
		for _, id := range c.IDs() {
			waitFor(t, func() bool {
				_, err := c.Node(id).Group(name).KV().Get(ctx, "k", dister.Stale())
				return err == nil
			})
		}
		if err := c.Node(1).DeleteGroup(ctx, name); err != nil {
			t.Fatal(err)
		}
		for _, id := range c.IDs() {
			for _, read := range []dister.ReadOption{dister.Stale(), dister.Linearizable()} {
				if _, err := c.Node(id).Group(name).KV().Get(ctx, "k", read); !errors.Is(err, dister.ErrGroupNotFound) {
					t.Fatalf("round %d: server %d reads the deleted group: %v", round, id, err)
				}
			}
		}
	}
}
