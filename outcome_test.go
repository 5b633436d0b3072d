package dister_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestWriteWithoutMajorityHasUnknownOutcome: a write that reached the
// leader but could not commit may still commit later (the entry sits in
// the leader's log), so it must not be reported as ErrNoQuorum, which means
// "not applied": clients retry those under a new id and would apply them
// twice. Before, it was ErrNoQuorum joined with the deadline; a client-role
// node's lone write said the same until a review found it.
func TestWriteWithoutMajorityHasUnknownOutcome(t *testing.T) {
	for _, role := range []string{"server", "client"} {
		t.Run(role, func(t *testing.T) {
			c := testcluster.New(t, 3)
			ctx := ctxT(t)
			followers, leader := c.Followers()
			ln := c.Node(leader)
			kv := ln.KV()
			if role == "client" {
				kv = openClient(t, c, 0).KV()
			}
			if _, err := kv.Put(ctx, "k", []byte("before")); err != nil {
				t.Fatal(err)
			}
			var submitted atomic.Bool
			dister.SetSubmitHook(ln, func(uint64) { submitted.Store(true) })
			for try := 0; ; try++ {
				for _, f := range followers {
					c.Stop(f)
				}
				// Right away, while the leader still believes it leads: its
				// entry is appended but cannot commit.
				submitted.Store(false)
				wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := kv.Put(wctx, "k", []byte("maybe"))
				cancel()
				if !submitted.Load() {
					// The leader had stepped down first: the write was
					// dropped before any log took it, and a server says so
					// (a client's call was cut by its deadline: unknown to it).
					if role == "server" && (!errors.Is(err, dister.ErrNoQuorum) || errors.Is(err, dister.ErrUnknownOutcome)) {
						t.Fatalf("write never submitted: %v, want ErrNoQuorum alone", err)
					}
					if try == 4 {
						t.Fatal("the leader stepped down before every write; no unknown outcome seen")
					}
					for _, f := range followers {
						c.Restart(f)
					}
					c.WaitReady()
					continue
				}
				if !errors.Is(err, dister.ErrUnknownOutcome) || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("write without a majority: %v, want ErrUnknownOutcome joined with the deadline", err)
				}
				if errors.Is(err, dister.ErrNoQuorum) {
					t.Fatalf("an unknown outcome also reads as ErrNoQuorum (not applied): %v", err)
				}
				break
			}
			// And it was indeed not known: once the majority is back, the
			// entry may well commit. Either way the value is one of the two.
			for _, f := range followers {
				c.Restart(f)
			}
			e, err := c.Node(c.Leader()).KV().Get(ctx, "k", dister.Linearizable())
			if err != nil || (string(e.Value) != "before" && string(e.Value) != "maybe") {
				t.Fatalf("k after the majority came back: %+v %v", e, err)
			}
			t.Logf("the write of unknown outcome ended as %q", e.Value)
		})
	}
}

// TestCloseInterruptsWriteWithUnknownOutcome: Close ends a write in flight;
// since the write reached the leader's log, its outcome is unknown, not
// ErrClosed (which means "not applied").
func TestCloseInterruptsWriteWithUnknownOutcome(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	followers, leader := c.Followers()
	ln := c.Node(leader)
	if _, err := ln.KV().Put(ctx, "k", []byte("before")); err != nil {
		t.Fatal(err)
	}
	for _, f := range followers {
		c.Stop(f)
	}
	submitted := make(chan struct{})
	var once sync.Once
	dister.SetSubmitHook(ln, func(uint64) { once.Do(func() { close(submitted) }) })
	var wg sync.WaitGroup
	var err error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err = ln.KV().Put(ctx, "k", []byte("maybe"))
	}()
	<-submitted
	c.Stop(leader)
	wg.Wait()
	if !errors.Is(err, dister.ErrUnknownOutcome) || errors.Is(err, dister.ErrClosed) || errors.Is(err, dister.ErrNoQuorum) {
		t.Fatalf("write interrupted by Close: %v, want ErrUnknownOutcome alone", err)
	}
	// A write that starts after Close surely did not apply.
	if _, err := ln.KV().Put(ctx, "k", []byte("after")); !errors.Is(err, dister.ErrClosed) || errors.Is(err, dister.ErrUnknownOutcome) {
		t.Fatalf("write after Close: %v", err)
	}
}
