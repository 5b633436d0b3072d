package cluster

import (
	"testing"

	"github.com/dister/dister/internal/fsm"
)

// TestSlowWatcherHoldsOneRevision: a watcher whose consumer stopped reading
// leaves the hub once watchQueue revisions are pending, keeps only the
// head (which its goroutine may be handing over), and resumes from history
// right after it: the dropped revisions are read again, none twice.
func TestSlowWatcherHoldsOneRevision(t *testing.T) {
	h := &hub{watchers: map[*watcher]struct{}{}}
	w := &watcher{signal: make(chan struct{}, 1), req: WatchRequest{From: 1, Prefix: "k",
		TryPush: func(WatchBatch) bool { return false }}} // no room, ever
	h.watchers[w] = struct{}{}
	for rev := int64(1); rev <= 2*watchQueue; rev++ {
		ev := fsm.Event{Type: fsm.EventPut, Revision: rev, KV: fsm.KV{Key: "k"}}
		if rev%3 == 0 {
			ev.KV.Key = "other/" // not w's: no batch for it
		}
		h.mu.Lock()
		h.dispatch(WatchBatch{Revision: rev, Events: []fsm.Event{ev}})
		h.pos = rev
		h.mu.Unlock()
		if _, in := h.watchers[w]; !in {
			break
		}
	}
	if _, in := h.watchers[w]; in {
		t.Fatalf("watcher with %d revisions pending still on the live stream", len(w.pending))
	}
	if len(w.pending) != 1 || w.pending[0].Revision != 1 {
		t.Fatalf("pending after leaving: %d revisions (head %+v), want the head (revision 1) alone", len(w.pending), w.pending)
	}
	if w.resume != 2 {
		t.Fatalf("resume at %d, want 2 (after the head)", w.resume)
	}
	select {
	case <-w.signal:
	default:
		t.Fatal("the watcher's goroutine was not told")
	}
}
