package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/dister/dister/internal/testcluster"
)

// A client whose topology answers lag behind a group's re-creation (every
// server asked answers as before it, for lagFor) still grants in the new
// group, with an id of its shard: the servers that take the grant refuse
// ids of the old shard, and the client asks the others, then all again
// after a pause. (It failed when the tries ran back to back, asking the
// same server: "lease id ... was drawn for shard 3, group "again" is
// shard 4 here: conflict after 1.5ms".)
func TestClientGrantOutlastsShortLag(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := oldGroup(ctx, t, c)
	n := newNetCtl()
	e := openCtlClient(t, c, 0, n)
	first, err := e.GrantLease(ctx, "again", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	n.freeze.Store(true) // topology answers as before the re-creation
	recreate(ctx, t, srv)
	const lagFor = 300 * time.Millisecond
	go func() {
		time.Sleep(lagFor)
		n.freeze.Store(false)
	}()
	start := time.Now()
	id, err := e.GrantLease(ctx, "again", 5*time.Second)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("grant in the re-created group while topology answers lag %v: %v after %v", lagFor, err, took)
	}
	if uint64(id)>>32 == uint64(first)>>32 {
		t.Fatalf("lease %d carries the old group's shard %d", id, uint64(first)>>32)
	}
	t.Logf("lease %d (shard %d; old %d) after %v", id, uint64(id)>>32, uint64(first)>>32, took)
}
