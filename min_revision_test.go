package dister_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// A read at a MinRevision the group has not reached could only wait to
// its caller's deadline: it is ErrInvalid instead, on the leader and on
// followers, while a MinRevision the group has reached is served.
func TestMinRevisionBeyondGroupIsInvalid(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rev, err := c.Node(c.Leader()).KV().Put(ctx, "k", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range c.IDs() {
		kv := c.Node(id).KV()
		e, err := kv.Get(ctx, "k", dister.MinRevision(rev))
		if err != nil || string(e.Value) != "v" {
			t.Fatalf("server %d, min revision %d: %v, %v", id, rev, e, err)
		}
		for _, opt := range []dister.ReadOption{dister.SessionRead(), dister.Stale()} {
			_, err := kv.Get(ctx, "k", opt, dister.MinRevision(rev+1000))
			if !errors.Is(err, dister.ErrInvalid) || ctx.Err() != nil {
				t.Fatalf("server %d, get at min revision %d beyond %d: %v", id, rev+1000, rev, err)
			}
			_, _, err = kv.List(ctx, "", opt, dister.MinRevision(rev+1000))
			if !errors.Is(err, dister.ErrInvalid) {
				t.Fatalf("server %d, list at min revision %d beyond %d: %v", id, rev+1000, rev, err)
			}
		}
	}
	// A client node passes the servers' answer on.
	cl := openClient(t, c, 100)
	if _, err := cl.KV().Get(ctx, "k", dister.MinRevision(rev+1000)); !errors.Is(err, dister.ErrInvalid) {
		t.Fatalf("client, min revision %d beyond %d: %v", rev+1000, rev, err)
	}
}
