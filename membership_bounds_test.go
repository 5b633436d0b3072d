package dister_test

import (
	"context"
	"errors"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestMembershipAddServerNextIDAtTop: after a server was added with an
// explicit id near the top of the id space, AddServer with id 0 (what
// every Join with NodeID 0 does) must return a free id or a clear error,
// not spin on failing catalog transactions until its ctx ends.
func TestMembershipAddServerNextIDAtTop(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n1 := c.Node(1)
	p := func() dister.Peer {
		return dister.Peer{RaftAddr: testcluster.FreeAddr(t), PeerAddr: testcluster.FreeAddr(t)}
	}
	id, err := n1.AddServer(ctx, math.MaxUint64-1, p())
	if err != nil {
		t.Logf("AddServer(MaxUint64-1) refused: %v", err)
		return
	}
	id2, err := n1.AddServer(ctx, 0, p())
	t.Logf("AddServer(%d) then AddServer(0): %d %v", id, id2, err)
	var submitted atomic.Int64
	dister.SetSubmitHook(n1, func(uint64) { submitted.Add(1) })
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	start := time.Now()
	id3, err := n1.AddServer(actx, 0, p())
	dister.SetSubmitHook(n1, nil)
	t.Logf("second AddServer(0): %d %v after %v, %d proposals", id3, err, time.Since(start).Round(time.Millisecond), submitted.Load())
	if err != nil && (submitted.Load() > 20 || errors.Is(err, dister.ErrNoQuorum) || actx.Err() != nil) {
		t.Fatalf("AddServer(0) spun on the catalog until its ctx ran out (%d proposals in %v), then said: %v",
			submitted.Load(), time.Since(start).Round(time.Millisecond), err)
	}
	if err == nil && (id3 == 0 || id3 == id || id3 == id2 || id3 == 1) {
		t.Fatalf("AddServer(0) returned id %d, which is taken", id3)
	}
}
