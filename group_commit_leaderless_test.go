package dister_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestGroupCommitLeaderlessWritesAreNoQuorum: on a server that knows it
// has no leader, no write reaches a log; each write that fails there must
// say so (ctx error + ErrNoQuorum, "not applied", as a lone write does),
// not ErrUnknownOutcome. Writers arrive one after another, each with the
// same timeout, as a steady client load does.
func TestGroupCommitLeaderlessWritesAreNoQuorum(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	followers, leader := c.Followers()
	n := c.Node(leader)
	kv := n.KV()
	// Group commit is on: a burst of writes takes fewer proposals. The
	// writers are released together; a burst can still happen to reach the
	// engine one at a time on a loaded machine, so up to 5 bursts are tried.
	var submitted atomic.Int64
	dister.SetSubmitHook(n, func(uint64) { submitted.Add(1) })
	var wg sync.WaitGroup
	batched := false
	for round := 0; round < 5 && !batched; round++ {
		submitted.Store(0)
		start := make(chan struct{})
		for i := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if _, err := kv.Put(ctx, fmt.Sprintf("burst/%d/%d", round, i), nil); err != nil {
					t.Error(err)
				}
			}()
		}
		close(start)
		wg.Wait()
		batched = submitted.Load() < 32
	}
	if !batched {
		t.Fatalf("5 bursts of 32 writes each took 32 proposals: group commit is off")
	}
	for _, f := range followers {
		c.Stop(f)
	}
	// Wait until the survivor knows it has no leader: a lone write is
	// then never submitted and fails with ErrNoQuorum.
	waitFor(t, func() bool {
		submitted.Store(0)
		wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := kv.Put(wctx, "probe", nil)
		return submitted.Load() == 0 && errors.Is(err, dister.ErrNoQuorum)
	})
	submitted.Store(0)
	const writers = 8
	errsOut := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wctx, cancel := context.WithTimeout(ctx, 600*time.Millisecond)
			defer cancel()
			_, errsOut[i] = kv.Put(wctx, fmt.Sprintf("w/%d", i), nil)
		}()
		time.Sleep(60 * time.Millisecond)
	}
	wg.Wait()
	if s := submitted.Load(); s != 0 {
		t.Fatalf("%d proposals submitted without a leader", s)
	}
	bad := 0
	for i, err := range errsOut {
		if !errors.Is(err, dister.ErrNoQuorum) || errors.Is(err, dister.ErrUnknownOutcome) {
			bad++
			t.Errorf("write %d, never submitted: %v; want the deadline + ErrNoQuorum", i, err)
		}
	}
	if bad > 0 {
		t.Logf("%d of %d never-submitted writes reported ErrUnknownOutcome", bad, writers)
	}
}
