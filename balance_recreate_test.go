package dister_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// A Node (a server that does not lead the group, or a client node) picks
// from a service of group "bg" and watches it; the group is deleted and
// created again with another instance. The Balancer's view and the
// services watch must not go on with the old group: the watch ends with
// ErrGroupNotFound, and Pick soon answers from the new group (not the old
// instance, not ErrStaleView for good).
func TestBalancerAndServiceWatchAcrossRecreate(t *testing.T) {
	for _, role := range []string{"server", "client"} {
		t.Run(role, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			c := testcluster.New(t, 3)
			admin := c.Node(1)
			if err := admin.CreateGroup(ctx, "bg"); err != nil {
				t.Fatal(err)
			}
			n := c.Node(3)
			if role == "client" {
				n = openClient(t, c, 100)
			}
			reg := func(id string) {
				t.Helper()
				if err := admin.Group("bg").Services().Register(ctx, dister.Instance{Service: "web", ID: id, Address: "127.0.0.1:7"}); err != nil {
					t.Fatal(err)
				}
			}
			for range 20 {
				if _, err := admin.Group("bg").KV().Put(ctx, "pad", []byte("x")); err != nil {
					t.Fatal(err)
				}
			}
			reg("old")
			b := n.Group("bg").Balancer()
			waitUntil(t, "a pick of the old instance", func() bool {
				in, err := b.Pick(ctx, "web")
				return err == nil && in.ID == "old"
			})
			wctx, wcancel := context.WithCancel(ctx)
			defer wcancel()
			events := n.Group("bg").Services().Watch(wctx, "web")
			first := <-events
			if first.Err != nil || len(first.Instances) != 1 {
				t.Fatalf("first services event: %+v", first)
			}
			if err := admin.DeleteGroup(ctx, "bg"); err != nil {
				t.Fatal(err)
			}
			if err := admin.CreateGroup(ctx, "bg"); err != nil {
				t.Fatal(err)
			}
			reg("new")
			recreated := time.Now()
			// The watch.
			timer := time.NewTimer(10 * time.Second)
			defer timer.Stop()
		watch:
			for {
				select {
				case ev, ok := <-events:
					if !ok {
						break watch
					}
					if ev.Err != nil {
						if !errors.Is(ev.Err, dister.ErrGroupNotFound) {
							t.Errorf("the services watch of the old group ended with %v, not ErrGroupNotFound", ev.Err)
						}
						break watch
					}
					ids := []string{}
					for _, in := range ev.Instances {
						ids = append(ids, in.ID)
					}
					t.Errorf("the services watch of the old group delivered an event after the group was deleted: revision %d, instances %v", ev.Revision, ids)
				case <-timer.C:
					t.Errorf("the services watch of the old group did not end within 10 s of its deletion")
					break watch
				}
			}
			// The balancer.
			var last string
			var lastErr error
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				in, err := b.Pick(ctx, "web")
				last, lastErr = in.ID, err
				if err == nil && in.ID == "new" {
					t.Logf("Pick answered the new group's instance %v after its registration", time.Since(recreated).Round(time.Millisecond))
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Errorf("Pick after the group was created again: still %q, %v after 10 s", last, lastErr)
		})
	}
}
