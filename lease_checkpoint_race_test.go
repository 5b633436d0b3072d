package dister_test

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// inLessorCheckpoint tells whether the calling goroutine runs the
// lessor's periodic checkpoint (not a renewal's clear).
func inLessorCheckpoint() bool {
	buf := make([]byte, 64<<10)
	s := string(buf[:runtime.Stack(buf, false)])
	return strings.Contains(s, "cluster.(*Engine).checkpoint(") && !strings.Contains(s, "clearCheckpoints")
}

// A keepalive acknowledged while the leader's periodic checkpoint, computed
// before it, was on its way through Raft: the lessor counted the lease as
// holding a checkpoint only once that committed, so the renewal cleared
// nothing and the state machine kept a remainder older than the renewal. A
// leader elected next started the lease at it and expired the lease up to
// one checkpoint period early (7.9 s after a keepalive of a 10 s lease in
// the review that found it). Now the stored remainder is never older than
// an acknowledged keepalive.
func TestKeepAliveDuringCheckpointClearsIt(t *testing.T) {
	const (
		ttl    = 10 * time.Second
		period = time.Second
	)
	c := testcluster.New(t, 3, func(o *dister.Options) { o.LeaseCheckpoint = period })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln := c.Node(c.Leader())
	id, err := ln.Leases().Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	type renewal struct {
		start time.Time
		err   error
	}
	var armed atomic.Bool
	renewed := make(chan renewal, 1)
	dister.SetSubmitHook(ln, func(uint64) {
		if !inLessorCheckpoint() || !armed.CompareAndSwap(true, false) {
			return
		}
		// The checkpoint is computed and handed to Raft: renew now, and
		// give the renewal time to overtake it (the fix makes it wait for
		// the checkpoint instead).
		done := make(chan struct{})
		go func() {
			defer close(done)
			start := time.Now()
			kctx, kc := context.WithTimeout(context.Background(), 5*time.Second)
			defer kc()
			err := ln.Leases().KeepAlive(kctx, id)
			renewed <- renewal{start, err}
		}()
		select {
		case <-done:
		case <-time.After(300 * time.Millisecond):
		}
	})
	defer dister.SetSubmitHook(ln, nil)
	for round := range 4 {
		armed.Store(true)
		var r renewal
		select {
		case r = <-renewed:
		case <-ctx.Done():
			t.Fatal("no periodic checkpoint")
		}
		if r.err != nil {
			t.Fatalf("round %d: keepalive during the checkpoint: %v", round, r.err)
		}
		time.Sleep(200 * time.Millisecond) // the checkpoint commits, if it has not
		stored, err := dister.StoredLeases(ctx, ln, "default")
		if err != nil {
			t.Fatal(err)
		}
		remaining := time.Duration(stored[int64(id)][1]) * time.Millisecond
		// A remainder recorded after the renewal has at least this much.
		floor := ttl - time.Since(r.start)
		t.Logf("round %d: stored remainder %v, one recorded after the renewal would have at least %v", round, remaining, floor)
		if remaining != 0 && remaining < floor {
			t.Fatalf("round %d: the state machine holds a remainder of %v, older than the keepalive acknowledged %v ago (TTL %v): a new leader would expire the lease early",
				round, remaining, time.Since(r.start), ttl)
		}
	}
}
