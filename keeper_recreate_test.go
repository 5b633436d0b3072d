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

// A keeper's renewal that found its group gone forgot every lease it kept
// under the group's name, including one granted meanwhile in a group
// created again under that name: the new AutoRenew lease was never renewed
// and expired, its keys with it. It forgets only the leases it sent now.
func TestKeeperKeepsLeaseOfRecreatedGroup(t *testing.T) {
	t.Parallel() // mostly waits (for TTLs, for an unresponsive seed)
	for _, role := range []string{"server", "client"} {
		t.Run(role, func(t *testing.T) { testKeeperKeepsLeaseOfRecreatedGroup(t, role) })
	}
}

func testKeeperKeepsLeaseOfRecreatedGroup(t *testing.T, role string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, holder := holderOf(ctx, t, role, "kg")
	const ttl = 2 * time.Second
	if _, err := holder.Group("kg").Leases().Grant(ctx, ttl, dister.AutoRenew()); err != nil {
		t.Fatal(err)
	}
	gone, release := make(chan struct{}), make(chan struct{})
	first := true
	dister.SetKeeperRenewedHook(holder, func(group string, err error) {
		if group == "kg" && errors.Is(err, dister.ErrGroupNotFound) && first {
			first = false
			close(gone)
			<-release
		}
	})
	defer dister.SetKeeperRenewedHook(holder, nil)
	if err := admin.DeleteGroup(ctx, "kg"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gone: // the keeper's renewal of the old lease is held here
	case <-ctx.Done():
		t.Fatal("no renewal found the group gone")
	}
	if err := admin.CreateGroup(ctx, "kg"); err != nil {
		close(release)
		t.Fatal(err)
	}
	kept, err := holder.Group("kg").Leases().Grant(ctx, ttl, dister.AutoRenew())
	if err == nil {
		_, err = holder.Group("kg").KV().Put(ctx, "k", []byte("v"), dister.WithLease(kept))
	}
	close(release)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * ttl)
	if _, err := holder.Group("kg").KV().Get(ctx, "k", dister.Linearizable()); errors.Is(err, dister.ErrNotFound) {
		t.Fatalf("the key of AutoRenew lease %d of the group created again expired: the keeper stopped renewing it", kept)
	} else if err != nil {
		t.Fatal(err)
	}
}

// A client node granted a lease in a group created after its last
// discovery round with an id the entry's Raft index decided (the client
// did not know the group's shard yet), so a group created again under the
// name handed out the old one's ids again: the keeper test above, client
// role, renewed and then forgot the wrong lease 5. A client now learns the
// shard before it grants.
func TestClientLeaseIDOfNewGroupCarriesShard(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testcluster.New(t, 3)
	admin := c.Node(1)
	cl := openClient(t, c, 100)
	if _, err := cl.KV().Put(ctx, "warm", []byte("v")); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		name := fmt.Sprintf("ng%d", i)
		if err := admin.CreateGroup(ctx, name); err != nil {
			t.Fatal(err)
		}
		id, err := cl.Group(name).Leases().Grant(ctx, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if shard := dister.ShardOf(admin, name); shard == 0 || uint64(id)>>32 != shard {
			t.Fatalf("lease %d of new group %s (shard %d) does not carry its shard", id, name, shard)
		}
	}
}

// holderOf starts a 3-server cluster with group created and returns a
// server to administer it and a Node of role ("server" or "client") to
// hold leases in it.
func holderOf(ctx context.Context, t *testing.T, role, group string) (admin, holder *dister.Node) {
	t.Helper()
	c := testcluster.New(t, 3)
	admin, holder = c.Node(1), c.Node(2)
	if role == "client" {
		holder = openClient(t, c, 100)
	}
	if err := admin.CreateGroup(ctx, group); err != nil {
		t.Fatal(err)
	}
	return admin, holder
}
