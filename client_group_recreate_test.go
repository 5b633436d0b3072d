package dister_test

import (
	"context"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// A group deleted and created again under its name while a client node
// caches it: the new group's revisions start again at 1, so nothing the
// client kept of the old one (its session floor, its cache) may bound or
// answer reads of the new one. The floor of the old group (revision 31)
// made every session read of the new one wait, to its deadline, for a
// revision the new group had not reached (found by an adversarial review).
// The client learns of the new group at its next discovery round (every
// second) and starts the group afresh.
func TestClientGroupRecreated(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl, kv := recreateClientGroup(ctx, t)
	// A client's Leader waits for a discovery round that started after the
	// call: one that sees the new group.
	if _, err := cl.Group("again").Leader(ctx); err != nil {
		t.Fatal(err)
	}
	read := func(what string, opt dister.ReadOption, want string) {
		t.Helper()
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		defer rcancel()
		var hit bool
		e, err := kv.Get(rctx, "k", opt, dister.CacheInfo(&hit))
		if err != nil || string(e.Value) != want {
			t.Fatalf("%s of the re-created group: %v, %v (hit %v); want %q", what, e, err, hit, want)
		}
	}
	// Linearizable first: a session read may be answered by a server that
	// has not applied the new group's write yet (the client saw nothing of
	// the new group, so its floor is 0), as it was once in a loaded run.
	// The linearizable read raises the floor to the write's revision.
	read("linearizable get", dister.Linearizable(), "new")
	read("session get", dister.SessionRead(), "new")
	// The client's own write to the new group, then its session read.
	if _, err := kv.Put(ctx, "k", []byte("mine")); err != nil {
		t.Fatal(err)
	}
	read("session get after the client's write", dister.SessionRead(), "mine")
}

// A session read sent before the client's discovery round saw the new
// group carried the old group's floor, which the servers have not reached,
// and waited to its deadline (found by the same review). The servers now
// answer such a floor with ErrInvalid; the client then runs a discovery
// round, which starts the group afresh, and reads again.
func TestClientGroupRecreatedReadAtOnce(t *testing.T) {
	for _, mode := range []struct {
		name string
		opt  dister.ReadOption
	}{{"session", dister.SessionRead()}, {"linearizable", dister.Linearizable()}, {"services", nil}} {
		t.Run(mode.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cl, kv := recreateClientGroup(ctx, t)
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			defer rcancel()
			for _, what := range []string{"first", "second"} {
				if mode.opt == nil {
					// The services' session read carries the same floor.
					if insts, err := cl.Group("again").Services().Get(rctx, "web"); err != nil || len(insts) != 0 {
						t.Fatalf("%s services get of the re-created group, at once: %v, %v", what, insts, err)
					}
					continue
				}
				var hit bool
				e, err := kv.Get(rctx, "k", mode.opt, dister.CacheInfo(&hit))
				if err != nil || string(e.Value) != "new" {
					t.Fatalf("%s %s get of the re-created group, at once: %v, %v (hit %v)", what, mode.name, e, err, hit)
				}
			}
		})
	}
}

// recreateClientGroup writes 31 revisions to group "again", has a client
// node cache it, then deletes the group, creates it again and writes
// "new" to k; it returns the client and its KV of the group.
func recreateClientGroup(ctx context.Context, t *testing.T) (*dister.Node, *dister.KV) {
	t.Helper()
	c := testcluster.New(t, 3)
	srv := c.Node(1)
	if err := srv.CreateGroup(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	old := srv.Group("again").KV()
	var last int64
	for range 31 {
		rev, err := old.Put(ctx, "k", []byte("old"))
		if err != nil {
			t.Fatal(err)
		}
		last = rev
	}
	cl := openClient(t, c, 100)
	kv := cl.Group("again").KV()
	waitUntil(t, "a cache hit on the old group", func() bool {
		var hit bool
		e, err := kv.Get(ctx, "k", dister.CacheInfo(&hit))
		if err != nil || string(e.Value) != "old" {
			t.Fatalf("old group: %v, %v", e, err)
		}
		return hit
	})
	if err := srv.DeleteGroup(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	if err := srv.CreateGroup(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	rev, err := srv.Group("again").KV().Put(ctx, "k", []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("old group at revision %d; the new one wrote k at %d", last, rev)
	return cl, kv
}
