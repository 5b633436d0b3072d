package dister_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// A write that was waiting for its group's replica to start here when
// Close began is never handed to Raft afterwards: it ends with ErrClosed
// (surely not applied), not with an unknown outcome. Close refused new
// proposals only once it reached the Raft host, after the loops it waits
// for; such a write, past the engine's own check before Close began, was
// submitted in between, and its outcome was unknown when the host then
// closed (TestGroupCloseDuringResolve failed so in CI).
func TestCloseSubmitsNothingAfterItBegan(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n1, n2 := c.Node(1), c.Node(2)
	var (
		armed   atomic.Bool
		shard   atomic.Uint64
		closing atomic.Bool
		late    atomic.Int32
	)
	armed.Store(true)
	entered := make(chan struct{})
	release := make(chan struct{})
	dister.SetStartHook(n1, func(id uint64) {
		if armed.CompareAndSwap(true, false) {
			shard.Store(id)
			close(entered)
			<-release
		}
	})
	dister.SetSubmitHook(n1, func(id uint64) {
		if closing.Load() && id == shard.Load() {
			late.Add(1)
		}
	})
	if err := n2.CreateGroup(ctx, "later"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("server 1 never started the group")
	}
	putErr := make(chan error, 1)
	go func() {
		pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
		defer pcancel()
		_, err := n1.Group("later").KV().Put(pctx, "k", []byte("v"))
		putErr <- err
	}()
	time.Sleep(300 * time.Millisecond) // the Put waits for the replica
	// Close lets the replica start, and takes its time before it closes
	// the host, as a loaded machine's Close does: the Put has all the
	// time it needs to reach the engine.
	dister.SetEngineCloseHook(n1, func() {
		close(release)
		time.Sleep(time.Second)
	})
	closing.Store(true)
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}
	err := <-putErr
	if !errors.Is(err, dister.ErrClosed) || errors.Is(err, dister.ErrUnknownOutcome) {
		t.Errorf("Put waiting for its replica when Close began: %v, want ErrClosed", err)
	}
	if n := late.Load(); n != 0 {
		t.Errorf("%d proposals of the group handed to Raft after Close began", n)
	}
}
