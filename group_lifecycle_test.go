package dister_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// Close while CreateGroup waits for this server to start the new group's
// shard: the call should end with ErrClosed (Close: "calls in flight end
// with ErrClosed"), promptly, not wait out its ctx.
func TestGroupCloseDuringCreate(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n1 := c.Node(1)
	var armed atomic.Bool
	armed.Store(true)
	entered := make(chan struct{})
	release := make(chan struct{})
	dister.SetStartHook(n1, func(uint64) {
		if armed.CompareAndSwap(true, false) {
			close(entered)
			<-release
		}
	})
	createErr := make(chan error, 1)
	var createdAt atomic.Int64
	go func() {
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		defer ccancel()
		err := n1.CreateGroup(cctx, "closing")
		createdAt.Store(time.Now().UnixNano())
		createErr <- err
	}()
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("server 1 never started the group")
	}
	closed := make(chan error, 1)
	go func() { closed <- n1.Close() }()
	time.Sleep(300 * time.Millisecond)
	close(release)
	if err := <-closed; err != nil {
		t.Logf("close: %v", err)
	}
	closedAt := time.Now()
	var err error
	select {
	case err = <-createErr:
	case <-time.After(40 * time.Second):
		t.Fatal("CreateGroup never returned")
	}
	after := time.Duration(createdAt.Load() - closedAt.UnixNano())
	t.Logf("CreateGroup returned %v after Close returned: %v", after, err)
	if err != nil && !errors.Is(err, dister.ErrClosed) {
		t.Errorf("CreateGroup in flight at Close: %v, want ErrClosed (returned %v after Close)", err, after)
	}
	if after > 3*time.Second {
		t.Errorf("CreateGroup in flight at Close returned only %v after Close", after)
	}
}

// A Put to a group this server has not started yet waits for the start
// (resolve); Close meanwhile should end it with ErrClosed, promptly.
func TestGroupCloseDuringResolve(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n1, n2 := c.Node(1), c.Node(2)
	var armed atomic.Bool
	armed.Store(true)
	entered := make(chan struct{})
	release := make(chan struct{})
	dister.SetStartHook(n1, func(uint64) {
		if armed.CompareAndSwap(true, false) {
			close(entered)
			<-release
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
	var doneAt atomic.Int64
	go func() {
		pctx, pcancel := context.WithTimeout(ctx, 30*time.Second)
		defer pcancel()
		_, err := n1.Group("later").KV().Put(pctx, "k", []byte("v"))
		doneAt.Store(time.Now().UnixNano())
		putErr <- err
	}()
	time.Sleep(300 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- n1.Close() }()
	time.Sleep(300 * time.Millisecond)
	close(release)
	<-closed
	closedAt := time.Now()
	var err error
	select {
	case err = <-putErr:
	case <-time.After(40 * time.Second):
		t.Fatal("Put never returned")
	}
	after := time.Duration(doneAt.Load() - closedAt.UnixNano())
	t.Logf("Put returned %v after Close returned: %v", after, err)
	if err != nil && !errors.Is(err, dister.ErrClosed) {
		t.Errorf("Put in flight at Close: %v, want ErrClosed or success (returned %v after Close)", err, after)
	}
	if after > 3*time.Second {
		t.Errorf("Put in flight at Close returned only %v after Close", after)
	}
}

// The same race without hooks: delete through server 1 while server 2
// re-creates the name as soon as the deletion is visible to it.
func TestDeleteGroupRacingRecreate(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n1, n2 := c.Node(1), c.Node(2)
	failed := 0
	for round := range 5 {
		if err := n1.CreateGroup(ctx, "nat"); err != nil {
			t.Fatal(err)
		}
		recreated := make(chan error, 1)
		go func() {
			for ctx.Err() == nil {
				if _, err := n2.Group("nat").KV().Get(ctx, "x", dister.Stale()); errors.Is(err, dister.ErrGroupNotFound) {
					break
				}
				gs, err := n2.Groups(ctx)
				if err == nil && !strings.Contains(","+strings.Join(gs, ",")+",", ",nat,") {
					break
				}
				time.Sleep(time.Millisecond)
			}
			recreated <- n2.CreateGroup(ctx, "nat")
		}()
		dctx, dcancel := context.WithTimeout(ctx, 12*time.Second)
		start := time.Now()
		err := n1.DeleteGroup(dctx, "nat")
		dcancel()
		rerr := <-recreated
		t.Logf("round %d: delete %v in %v; re-create %v", round, err, time.Since(start), rerr)
		if err != nil {
			failed++
		}
		if rerr == nil {
			if err := n1.DeleteGroup(ctx, "nat"); err != nil {
				t.Fatalf("cleanup: %v", err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("DeleteGroup failed in %d of 5 rounds although the group was deleted", failed)
	}
}
