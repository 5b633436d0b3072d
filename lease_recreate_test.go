package dister_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// A group deleted and created again under its name handed out the old
// group's lease ids again (ids were Raft indexes, which start again at 1):
// a Node still renewing its AutoRenew lease of the old group renewed
// another program's lease of the new group for good (a dead program's ttl
// instance stayed passing), and a revoke of the old lease deleted another
// program's keys (found by an adversarial review, in both roles). A lease
// id now carries the group's shard, which a group created again never
// shares with an earlier one.
func TestLeaseIDsNotReusedByRecreatedGroup(t *testing.T) {
	for _, role := range []string{"server", "client"} {
		t.Run(role, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := testcluster.New(t, 3)
			admin, other := c.Node(1), c.Node(2)
			if err := admin.CreateGroup(ctx, "lg"); err != nil {
				t.Fatal(err)
			}
			holder := c.Node(3)
			if role == "client" {
				holder = openClient(t, c, 100)
			}
			old := map[dister.LeaseID]bool{}
			kept, err := holder.Group("lg").Leases().Grant(ctx, 12*time.Second, dister.AutoRenew())
			if err != nil {
				t.Fatal(err)
			}
			old[kept] = true
			for range 20 {
				id, err := holder.Group("lg").Leases().Grant(ctx, time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				old[id] = true
			}
			if err := admin.DeleteGroup(ctx, "lg"); err != nil {
				t.Fatal(err)
			}
			if err := admin.CreateGroup(ctx, "lg"); err != nil {
				t.Fatal(err)
			}
			kv := other.Group("lg").KV()
			for range 40 {
				id, err := other.Group("lg").Leases().Grant(ctx, time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				if old[id] {
					t.Fatalf("the new group granted lease %d, an id of the deleted group's", id)
				}
				if _, err := kv.Put(ctx, "owned", []byte("v"), dister.WithLease(id)); err != nil {
					t.Fatal(err)
				}
			}
			// The old group's leases are no lease of the new group's: a
			// revoke finds nothing and deletes nothing.
			if _, err := other.Group("lg").Leases().Get(ctx, kept); !errors.Is(err, dister.ErrLeaseNotFound) {
				t.Fatalf("the deleted group's lease %d in the new group: %v; want ErrLeaseNotFound", kept, err)
			}
			if err := holder.Group("lg").Leases().Revoke(ctx, kept); !errors.Is(err, dister.ErrLeaseNotFound) {
				t.Fatalf("revoke of the deleted group's lease %d: %v; want ErrLeaseNotFound", kept, err)
			}
			if e, err := kv.Get(ctx, "owned"); err != nil || string(e.Value) != "v" {
				t.Fatalf("the new group's key after the old lease's revoke: %v, %v", e, err)
			}
		})
	}
}
