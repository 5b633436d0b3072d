package cluster

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"
)

// r2Hub is a hub with no loop, for driving dispatch, progress and release
// by hand (as the review1 tests do).
func r2Hub() *hub {
	return &hub{e: &Engine{}, quit: make(chan struct{}), watchers: map[*watcher]struct{}{}, attached: map[*watcher]struct{}{}}
}

// TestReview2ProgressToFullQueueIsOwed: RequestProgress promises every
// watcher a note. A live watcher with exactly watchQueue revisions pending
// when the note is offered is let go by that offer (offer -> letGo), and
// the note, which is neither queued nor the head, is simply dropped: letGo
// marks owed only for notes it finds in pending[1:], never for the batch
// being offered. The watcher then catches up from history and joins the
// hub with owed false: no note until the 15 s tick.
func TestReview2ProgressToFullQueueIsOwed(t *testing.T) {
	h := r2Hub()
	w := &watcher{ended: make(chan struct{}), signal: make(chan struct{}, 1), req: WatchRequest{From: 1, Prefix: "k",
		TryPush: func(WatchBatch) bool { return false }}} // the consumer's buffer is full
	h.watchers[w] = struct{}{}
	h.attached[w] = struct{}{}
	for rev := int64(1); rev <= watchQueue; rev++ {
		h.mu.Lock()
		h.dispatch(r1Batch(rev))
		h.pos = rev
		h.mu.Unlock()
	}
	if _, live := h.watchers[w]; !live || len(w.pending) != watchQueue {
		t.Fatalf("setup: live %v with %d pending, want live with %d", live, len(w.pending), watchQueue)
	}
	h.progress() // as RequestProgress's hub does, after its advance
	if _, live := h.watchers[w]; live {
		t.Fatal("setup: the note's offer did not let the watcher go")
	}
	hasNote := false
	for _, b := range w.pending {
		hasNote = hasNote || len(b.Events) == 0
	}
	if !hasNote && !w.owed {
		t.Fatalf("the progress note asked for was dropped: the watcher was let go by the note's own offer "+
			"(pending %d, head %d, resume %d), and neither queued it nor marked it owed, so its join sends none",
			len(w.pending), w.pending[0].Revision, w.resume)
	}
}

// TestReview2FollowReturnsWithNothingPending: follow hands the watcher to
// join (history from w.resume) only once everything pending was
// delivered: a revision still pending then is delivered after the history
// that join reads past it, out of order (and a client node's stream drops
// it: "cannot happen: the server starts at s.next"). drain's last check
// of pending and follow's read of resume are two separate w.mu sections;
// a hub that queues a revision and lets the watcher go (a page whose
// offer found the consumer's buffer full, then a burst's release, or
// watchQueue offers) in between leaves the head pending while follow
// returns resume = head+1.
func TestReview2FollowReturnsWithNothingPending(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs two Ps to race")
	}
	for _, mode := range []string{"progress", "release"} {
		t.Run(mode, func(t *testing.T) {
			deadline := time.Now().Add(4 * time.Second)
			tries := 0
			for time.Now().Before(deadline) {
				tries++
				if msg := r2FollowOnce(t, mode); msg != "" {
					t.Fatalf("in %d tries, follow returned to history with a revision still pending: %s", tries, msg)
				}
			}
			t.Logf("%d tries, no hit", tries)
		})
	}
}

// r2FollowOnce: the consumer's buffer (1) holds revision 1 and revision 2
// is pending; the consumer reads one, so drain hands revision 2 over and
// finds pending empty; the hub, which waits for exactly that, then either
// (progress) dispatches a page of watchQueue revisions, all queued (the
// buffer is full again), and sends a requested progress note, whose offer
// finds the queue full and lets the watcher go: loop's asked case,
// advance then progress; or (release) queues revision 3 and releases
// every watcher (advance: one page, then a burst seen on the next).
// Returns what went wrong, if anything.
func r2FollowOnce(t *testing.T, mode string) string {
	h := r2Hub()
	out := make(chan WatchBatch, 1)
	w := &watcher{ended: make(chan struct{}), signal: make(chan struct{}, 1)}
	w.req = WatchRequest{From: 1, Prefix: "k",
		TryPush: func(b WatchBatch) bool {
			select {
			case out <- b:
				return true
			default:
				return false
			}
		},
		Send: func(b WatchBatch, stop <-chan struct{}) bool {
			select {
			case out <- b:
				return true
			case <-stop:
				return false
			}
		}}
	h.watchers[w] = struct{}{}
	h.attached[w] = struct{}{}
	h.mu.Lock()
	h.dispatch(r1Batch(1)) // into out
	h.dispatch(r1Batch(2)) // pending, signal
	h.pos = 2
	h.mu.Unlock()
	type result struct {
		next    int64
		err     error
		pending []int64
	}
	done := make(chan result, 1)
	go func() {
		next, err := h.follow(context.Background(), w)
		w.mu.Lock()
		var p []int64
		for _, b := range w.pending {
			p = append(p, b.Revision)
		}
		w.mu.Unlock()
		done <- result{next, err, p}
	}()
	<-out // the consumer reads revision 1: drain hands revision 2 over
	for {
		w.mu.Lock()
		empty := len(w.pending) == 0
		w.mu.Unlock()
		if empty {
			break
		}
	}
	if mode == "release" {
		h.mu.Lock()
		h.dispatch(r1Batch(3)) // the buffer holds 2: queued
		h.pos = 3
		h.mu.Unlock()
		h.mu.Lock()
		h.release() // a burst: every watcher reads on from history
		h.mu.Unlock()
	} else {
		h.mu.Lock() // an advance's page
		for rev := int64(3); rev < 3+watchQueue; rev++ {
			h.dispatch(r1Batch(rev))
			h.pos = rev
		}
		h.mu.Unlock()
		h.progress() // RequestProgress: the note finds the queue full
	}
	stopRead := make(chan struct{})
	defer close(stopRead)
	go func() { // the consumer reads on
		for {
			select {
			case <-out:
			case <-stopRead:
				return
			}
		}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		w.stop()
		<-done
		return "follow did not return"
	}
	if r.err != nil {
		return r.err.Error()
	}
	if len(r.pending) > 0 && r.next > 0 {
		return fmt.Sprintf("follow returned resume %d with revisions %v still pending (delivered after the history join reads from %d)",
			r.next, r.pending, r.next)
	}
	return ""
}
