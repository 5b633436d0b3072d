package dister_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// holdReplicaStart creates group "late" through server 1 while server 3's
// start of its replica is held once the state machine exists (the engine
// does not know the replica yet). It returns server 3, release (lets the
// start go on; also run at cleanup) and CreateGroup's outcome.
func holdReplicaStart(ctx context.Context, t *testing.T, c *testcluster.Cluster) (*dister.Node, func(), <-chan error) {
	t.Helper()
	n := c.Node(3)
	entered := make(chan uint64, 1)
	held := make(chan struct{})
	var once, releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(held) }) }
	dister.SetStartHook(n, func(shardID uint64) {
		once.Do(func() {
			entered <- shardID
			select {
			case <-held:
			case <-time.After(15 * time.Second):
			}
		})
	})
	t.Cleanup(func() {
		release()
		dister.SetStartHook(n, nil)
	})
	created := make(chan error, 1)
	go func() { created <- c.Node(1).CreateGroup(ctx, "late") }()
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("server 3 did not start the new group's replica")
	}
	return n, release, created
}

// A request for a group whose replica is starting on the server that gets
// it (its state machine exists, the engine does not know the replica yet)
// waits for the start within ctx instead of answering ErrGroupNotFound: the
// group exists. Seen once in TestAddServerAndJoin before the fix.
func TestRequestWhileReplicaStarts(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	n, release, created := holdReplicaStart(ctx, t, c)
	kv := n.Group("late").KV()
	calls := map[string]func(ctx context.Context) error{
		"stale get": func(ctx context.Context) error {
			_, err := kv.Get(ctx, "k", dister.Stale())
			return err
		},
		"session get": func(ctx context.Context) error {
			_, err := kv.Get(ctx, "k")
			return err
		},
		"linearizable get": func(ctx context.Context) error {
			_, err := kv.Get(ctx, "k", dister.Linearizable())
			return err
		},
		"put": func(ctx context.Context) error {
			_, err := kv.Put(ctx, "k", []byte("v"))
			return err
		},
	}
	errs := make(chan error, len(calls))
	for name, call := range calls {
		go func() {
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			err := call(cctx)
			if errors.Is(err, dister.ErrNotFound) {
				err = nil
			}
			if err != nil {
				err = errors.New(name + ": " + err.Error())
			}
			errs <- err
		}()
	}
	time.Sleep(300 * time.Millisecond) // the calls meet the replica starting
	release()
	for range calls {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if err := <-created; err != nil {
		t.Fatal(err)
	}
}

// RemoveServer called on a server that is starting its replica of a new
// group reads that group's Raft configuration through the replica: the
// read waits for the start instead of failing with ErrGroupNotFound
// (found by review of the fix above).
func TestRemoveServerWhileReplicaStarts(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	n, release, created := holdReplicaStart(ctx, t, c)
	got := make(chan error, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		got <- n.RemoveServer(rctx, 2)
	}()
	time.Sleep(300 * time.Millisecond)
	release()
	err := <-got
	t.Logf("RemoveServer(2) on server 3: %v", err)
	if errors.Is(err, dister.ErrGroupNotFound) {
		t.Fatalf("RemoveServer during the start of an existing group's replica: %v", err)
	}
	if err := <-created; err != nil {
		t.Fatal(err)
	}
}
