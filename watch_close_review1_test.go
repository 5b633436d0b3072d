package dister_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// closeWithin closes n on a goroutine and reports whether Close returned
// within d. When it did not, unstick runs (to let Close finish, so the test
// leaves no goroutine) and the close is awaited.
func closeWithin(t *testing.T, n *dister.Node, d time.Duration, unstick func()) bool {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- n.Close() }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		for _, g := range strings.Split(goroutineDump(), "\n\n") {
			if strings.Contains(g, "(*watcher).drain") {
				t.Logf("stuck watch goroutine:\n%s", g)
			}
		}
		unstick()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("Close still stuck after unsticking")
		}
		return false
	}
}

// TestReview1CloseWithUnreadLetGoWatcher: README: "Close ends every watch
// with ErrClosed, read or not." A watch whose consumer never reads, and
// that the hub let go (watchQueue revisions pending), must not hold up the
// Node's Close.
func TestReview1CloseWithUnreadLetGoWatcher(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	kv := n.KV()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := kv.Watch(wctx, "c/") // never read until Close returns
	for i := range 400 {           // 16 in the channel, 256 pending, then let go
		if _, err := kv.Put(ctx, fmt.Sprintf("c/%04d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if !closeWithin(t, n, 10*time.Second, cancel) {
		t.Fatal("Node.Close did not return in 10s with an unread watch that was let go (returned once the watch's ctx was cancelled)")
	}
	var last dister.WatchEvent
	for ev := range events {
		last = ev
	}
	if !errors.Is(last.Err, dister.ErrClosed) {
		t.Fatalf("the unread watch ended with %v, want ErrClosed", last.Err)
	}
}

// TestReview1ServerCloseWithUnreadClientWatch: a client node (or anyone
// with the peer API) that opens a watch and stops reading makes the
// server's stream block on gRPC flow control; once the hub lets that
// watcher go, the server's Close waits for it forever (the gRPC stream's
// ctx ends only after Close waited for the watch goroutines).
func TestReview1ServerCloseWithUnreadClientWatch(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	srv := c.Node(1)
	cl := openClient(t, c, 0)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := cl.KV().Watch(wctx, "r/") // never read
	if err := cl.KV().RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := <-events; ev.Err != nil || ev.Type != dister.EventProgress {
		t.Fatalf("first event %+v", ev)
	}
	val := make([]byte, 64<<10)
	for i := range 600 { // ~38 MiB: past gRPC's windows, 64 frames, 256 pending
		if _, err := srv.KV().Put(ctx, fmt.Sprintf("r/%04d", i), val); err != nil {
			t.Fatal(err)
		}
	}
	if !closeWithin(t, srv, 10*time.Second, func() { cancel(); _ = cl.Close() }) {
		t.Fatal("the server's Close did not return in 10s while a client node's watch was unread (returned once the client closed)")
	}
}
