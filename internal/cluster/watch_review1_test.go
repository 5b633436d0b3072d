package cluster

import (
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// r1Batch is revision rev, one put of key k.
func r1Batch(rev int64) WatchBatch {
	return WatchBatch{Revision: rev, Events: []fsm.Event{{Type: fsm.EventPut, Revision: rev, KV: fsm.KV{Key: "k"}}}}
}

// TestReview1HubEndReachesLetGoWatcher: a watcher the hub let go while its
// goroutine hands the head to a consumer that does not read must still
// stop when the hub ends (Close, group deleted), as a registered watcher
// does: its Send waits on w.ended, which end closes only for the watchers
// still registered.
func TestReview1HubEndReachesLetGoWatcher(t *testing.T) {
	h := &hub{e: &Engine{}, quit: make(chan struct{}), watchers: map[*watcher]struct{}{}, attached: map[*watcher]struct{}{}}
	var once sync.Once
	sending := make(chan struct{})
	w := &watcher{ended: make(chan struct{}), signal: make(chan struct{}, 1), req: WatchRequest{From: 1, Prefix: "k",
		TryPush: func(WatchBatch) bool { return false }, // the consumer's buffer is full
		Send: func(_ WatchBatch, stop <-chan struct{}) bool { // and it never reads
			once.Do(func() { close(sending) })
			<-stop
			return false
		}}}
	h.watchers[w] = struct{}{}
	h.attached[w] = struct{}{} // as run does
	h.mu.Lock()
	h.dispatch(r1Batch(1))
	h.pos = 1
	h.mu.Unlock()
	drained := make(chan bool, 1)
	go func() { _, ok := w.drain(); drained <- ok }()
	<-sending // drain hands revision 1 over, outside w.mu
	for rev := int64(2); rev <= watchQueue+2; rev++ {
		h.mu.Lock()
		h.dispatch(r1Batch(rev))
		h.pos = rev
		h.mu.Unlock()
	}
	if _, in := h.watchers[w]; in {
		t.Fatal("the watcher was not let go")
	}
	h.end(errs.Closed)
	select {
	case ok := <-drained:
		if ok {
			t.Fatal("drain reported the head delivered")
		}
	case <-time.After(5 * time.Second):
		w.stop() // let the goroutine go
		<-drained
		t.Fatal("the hub ended, but the let-go watcher's hand-off of its head still waits for the consumer (w.ended is never closed for it)")
	}
}

// TestReview1LetGoKeepsNoQueue: "a watcher whose consumer stopped reading
// holds one revision, not a queue": the pending list's backing array (room
// for watchQueue revisions) should not stay behind the one head.
func TestReview1LetGoKeepsNoQueue(t *testing.T) {
	h := &hub{watchers: map[*watcher]struct{}{}}
	w := &watcher{signal: make(chan struct{}, 1), req: WatchRequest{From: 1, Prefix: "k",
		TryPush: func(WatchBatch) bool { return false }}}
	h.watchers[w] = struct{}{}
	for rev := int64(1); rev <= watchQueue+1; rev++ {
		h.mu.Lock()
		h.dispatch(r1Batch(rev))
		h.pos = rev
		h.mu.Unlock()
	}
	if _, in := h.watchers[w]; in {
		t.Fatal("the watcher was not let go")
	}
	if len(w.pending) != 1 || cap(w.pending) > 4 {
		t.Fatalf("after letGo: %d pending, room for %d (%d bytes of queue kept for a consumer that stopped reading)",
			len(w.pending), cap(w.pending), uintptr(cap(w.pending))*unsafe.Sizeof(WatchBatch{}))
	}
}
