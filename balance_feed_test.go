package dister_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestFeedCommitsHeldChangesBeforeProgressNote: a balancer view's feed
// holds a revision back (coalescing) when more is queued behind it. When
// what is queued is only a progress note, the held revision must be
// published before the note marks the view current. Before, the note was
// taken as "nothing to apply" and the held change stayed unpublished until
// the service's next change (on an idle service: indefinitely), while the
// note kept the view from ever going stale: Picks served the old set.
func TestFeedCommitsHeldChangesBeforeProgressNote(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	s := n.Services()
	if err := s.Register(ctx, dister.Instance{Service: "api", ID: "a", Address: "10.0.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	loaded := make(chan struct{})
	inPut := make(chan struct{})
	release := make(chan struct{})
	type note struct{ rev, committed int64 }
	notes := make(chan note, 16)
	var committed atomic.Int64
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	defer func() { cancel(); <-done }()
	go func() {
		defer close(done)
		_ = dister.Feed(fctx, n.Group(""), "api", dister.FeedHooks{
			Load: func(int64) { close(loaded) },
			Put: func(id string) {
				if id == "b" {
					close(inPut)
					<-release
				}
			},
			Commit:   func(rev int64) { committed.Store(rev) },
			Progress: func(rev int64) { notes <- note{rev, committed.Load()} },
		})
	}()
	<-loaded
	// A watch beside the feed's, on the same fan-out: its notes tell when
	// the feed's has been queued.
	side := n.KV().Watch(fctx, "zz/")
	if _, err := n.KV().Put(ctx, "zz/x", nil); err != nil {
		t.Fatal(err)
	}
	if ev := <-side; ev.Type != dister.EventPut {
		t.Fatalf("side watch: %+v", ev)
	}
	if err := s.Register(ctx, dister.Instance{Service: "api", ID: "b", Address: "10.0.0.2:80"}); err != nil {
		t.Fatal(err)
	}
	insts, err := s.Get(ctx, "api", dister.WithRead(dister.Linearizable()))
	if err != nil {
		t.Fatal(err)
	}
	var rev int64
	for _, in := range insts {
		if in.ID == "b" {
			rev = in.ModRevision
		}
	}
	// The feed is applying b's revision; a progress note queues behind it.
	<-inPut
	// Two rounds of notes seen beside: the first round, which queued one
	// for the feed too, is over.
	for range 2 {
		if err := dister.RequestProgress(ctx, n, ""); err != nil {
			t.Fatal(err)
		}
		if ev := <-side; ev.Type != dister.EventProgress {
			t.Fatalf("side watch: %+v", ev)
		}
	}
	close(release)
	for {
		select {
		case nt := <-notes:
			if nt.rev < rev {
				continue // an older note (the hub's own period)
			}
			if nt.committed < rev {
				t.Fatalf("progress note at revision %d delivered while revision %d (b's registration) was applied but not published (last published %d)", nt.rev, rev, nt.committed)
			}
			return
		case <-ctx.Done():
			t.Fatal("no progress note")
		}
	}
}
