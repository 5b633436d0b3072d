package dister_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestServiceWatchUnreadDoesNotHoldClose: a Services.Watch whose
// consumer stopped reading (channel full) and whose ctx is never
// cancelled must not hold Node.Close up. KV.Watch takes care of this
// ("Close ends every watch with ErrClosed, read or not"); a service watch
// should too.
func TestServiceWatchUnreadDoesNotHoldClose(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	s := n.Services()
	inst := func(i int) dister.Instance {
		return dister.Instance{Service: "api", ID: "a1", Address: "127.0.0.1:1", Priority: i % 10}
	}
	if err := s.Register(ctx, inst(0)); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel() // only after the test: Close alone must end the watch
	events := s.Watch(wctx, "api")
	for i := 1; i <= 40; i++ { // more changes than the channel holds (16)
		if err := s.Register(ctx, inst(i)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(events) < cap(events) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("channel holds %d of %d", len(events), cap(events))
	closed := make(chan error, 1)
	go func() { closed <- n.Close() }()
	select {
	case err := <-closed:
		t.Logf("closed: %v", err)
	case <-time.After(15 * time.Second):
		wcancel()
		<-closed
		t.Fatal("Node.Close hung for 15s on a Services.Watch whose consumer does not read (ctx not cancelled)")
	}
	// The watch ends with ErrClosed once read.
	var last dister.ServiceEvent
	for ev := range events {
		last = ev
	}
	if !errors.Is(last.Err, dister.ErrClosed) {
		t.Fatalf("service watch ended with %v, want ErrClosed", last.Err)
	}
}

var _ = fmt.Sprint

// TestServiceWatchEndsWithErrClosed: a service watch that is read
// ends, at Close, with ErrClosed (as KV watches do), not with a bare
// context error the caller never caused.
func TestServiceWatchEndsWithErrClosed(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	s := n.Services()
	if err := s.Register(ctx, dister.Instance{Service: "api", ID: "a1", Address: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	events := s.Watch(wctx, "api")
	if ev := <-events; ev.Err != nil || len(ev.Instances) != 1 {
		t.Fatalf("first event %+v", ev)
	}
	kvEvents := n.KV().Watch(wctx, "")
	done := make(chan dister.ServiceEvent, 1)
	go func() {
		var last dister.ServiceEvent
		for ev := range events {
			last = ev
		}
		done <- last
	}()
	if err := n.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	var last dister.ServiceEvent
	select {
	case last = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("service watch not ended 10s after Close")
	}
	kvLast := lastEvent(t, kvEvents, 10*time.Second)
	t.Logf("kv watch ended with: %v", kvLast.Err)
	t.Logf("service watch ended with: %v", last.Err)
	if !errors.Is(kvLast.Err, dister.ErrClosed) {
		t.Errorf("kv watch ended with %v, want ErrClosed", kvLast.Err)
	}
	if !errors.Is(last.Err, dister.ErrClosed) {
		t.Errorf("service watch ended with %v, want ErrClosed", last.Err)
	}
}
