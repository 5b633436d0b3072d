package cluster

import (
	"context"
	"sync"

	"github.com/dister/dister/internal/errs"
)

// A watcher's life on this server: it reads history until level with its
// hub, joins the hub's live stream, delivers what the hub queues for it,
// and goes back to history when the hub lets it go (see watch.go).

type watcher struct {
	req WatchRequest
	// ended closes (stop) when the watch must send no more: its hub
	// ended, its ctx ended, or the Engine closed; on or off the live
	// stream, so an unread watch never holds Close up.
	ended    chan struct{}
	stopOnce sync.Once
	signal   chan struct{} // buffered(1): pending has something

	mu sync.Mutex
	// pending holds revisions the consumer had no room for; its head is
	// removed only once delivered, so the hub never overtakes it.
	pending []WatchBatch
	// resume, when set, is where the watcher, which the hub let go,
	// continues from history (see hub.letGo).
	resume int64
	// owed: a progress note was asked for while the watcher was off the
	// live stream, or dropped from its queue by letGo; it is queued when
	// the watcher joins the hub again.
	owed bool
}

func (w *watcher) stop() { w.stopOnce.Do(func() { close(w.ended) }) }

// run is a watcher's life: catch up from history, join the hub at its
// position, then deliver what the hub queues; back to history when the hub
// lets it go.
func (h *hub) run(ctx context.Context, w *watcher) error {
	defer h.detach(w)
	defer context.AfterFunc(ctx, w.stop)()
	defer context.AfterFunc(h.e.life, w.stop)()
	next := w.req.From
	for {
		if err := h.join(ctx, w, next); err != nil {
			return err
		}
		var err error
		if next, err = h.follow(ctx, w); err != nil {
			return err
		}
	}
}

// join catches w up from history, from revision next (0 = the hub's next),
// and registers it with the hub once level.
func (h *hub) join(ctx context.Context, w *watcher, next int64) error {
	for {
		h.mu.Lock()
		if h.err != nil {
			h.mu.Unlock()
			return h.err
		}
		if next == 0 {
			next = h.pos + 1
		}
		if next > h.pos {
			w.req.From = next
			h.watchers[w] = struct{}{}
			w.mu.Lock()
			if w.owed {
				// Every revision before next was delivered.
				w.owed = false
				w.pending = append(w.pending, WatchBatch{Revision: next - 1})
				select {
				case w.signal <- struct{}{}:
				default: // one is there already (from letGo)
				}
			}
			w.mu.Unlock()
			h.mu.Unlock()
			return nil
		}
		h.mu.Unlock()
		// Catch up from history while the hub moves on; join when level.
		res, err := h.events(next)
		if err != nil {
			if h.e.life.Err() != nil {
				return errs.Closed
			}
			return err
		}
		for _, b := range byRevision(res.Events) {
			if f := filter(b, w.req.Prefix); len(f.Events) > 0 && !w.req.Send(f, w.ended) {
				return h.why(ctx)
			}
			next = b.Revision + 1
		}
		if !res.More {
			next = max(next, res.Revision+1)
		}
	}
}

// follow delivers what the hub queues for w until the watch ends (error)
// or the hub lets it go (the revision to continue from).
func (h *hub) follow(ctx context.Context, w *watcher) (int64, error) {
	defer h.leave(w)
	for {
		select {
		case <-w.signal:
			next, ok := w.drain()
			if !ok {
				return 0, h.why(ctx)
			}
			if next > 0 {
				return next, nil
			}
		case <-w.ended:
			return 0, h.why(ctx)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// drain delivers the pending revisions in order; false if the watch ended.
// Once nothing is pending it takes the revision to resume from history at
// (0: the watcher is still on the live stream), in the same look: a hub
// that queued and let go in between would otherwise send the watcher to
// history with a revision still queued, delivered after later ones.
func (w *watcher) drain() (resume int64, ok bool) {
	for {
		w.mu.Lock()
		if len(w.pending) == 0 {
			w.pending = nil // an idle watcher keeps no buffer
			resume, w.resume = w.resume, 0
			w.mu.Unlock()
			return resume, true
		}
		b := w.pending[0]
		w.mu.Unlock()
		if !w.req.Send(b, w.ended) {
			return 0, false
		}
		w.mu.Lock()
		w.pending[0] = WatchBatch{}
		w.pending = w.pending[1:]
		w.mu.Unlock()
	}
}

// leave takes w off the live stream.
func (h *hub) leave(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.watchers, w)
}

// attach makes w one of the hub's (unless it ended: run then says so).
func (h *hub) attach(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil {
		h.attached[w] = struct{}{}
	}
}

// detach forgets w, whose goroutine ends.
func (h *hub) detach(w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.watchers, w)
	delete(h.attached, w)
}

// why tells why a watcher stopped sending.
func (h *hub) why(ctx context.Context) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return h.err
	}
	// Neither its ctx nor its hub: the Engine closed.
	return errs.Closed
}
