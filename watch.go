package dister

import (
	"context"
	"errors"
	"fmt"

	"github.com/dister/dister/internal/cluster"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// EventType tells what a WatchEvent reports.
type EventType int

// Watch event types.
const (
	EventPut      EventType = iota + 1 // a key was written
	EventDelete                        // a key was removed
	EventProgress                      // no key: every event up to Revision was delivered
)

func (t EventType) String() string {
	switch t {
	case EventPut:
		return "put"
	case EventDelete:
		return "delete"
	case EventProgress:
		return "progress"
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// WatchEvent is one change, a progress note, or the final event of a watch.
type WatchEvent struct {
	Type EventType
	// Entry: for a put, the new entry; for a delete, Key, and ModRevision =
	// Revision.
	Entry Entry
	// PrevEntry is the entry before the change (nil if the key did not
	// exist); set only with WithPrevEntry.
	PrevEntry *Entry
	// Revision of the change (for progress: the revision delivered up to).
	Revision int64
	// LastInRevision marks the last event of its revision: the events of
	// one revision (a transaction, a prefix delete) arrive together, and a
	// watch resumed with FromRevision(Revision+1) after this one misses
	// nothing and repeats nothing.
	LastInRevision bool
	// Err is set on the final event only, after which the channel closes:
	// ErrCompacted (with CompactRevision), ErrClosed, ErrGroupNotFound,
	// or the ctx error.
	Err error
	// CompactRevision is the lowest revision a watch can start from; set
	// with ErrCompacted.
	CompactRevision int64
}

// WatchOption tunes a watch.
type WatchOption func(*watchOptions)

type watchOptions struct {
	from int64
	prev bool
}

// FromRevision starts the watch at revision r (0 = with the next change).
// Starting below the retained history ends the watch at once with
// ErrCompacted and CompactRevision.
func FromRevision(r int64) WatchOption { return func(o *watchOptions) { o.from = r } }

// WithPrevEntry adds each key's previous entry to its events.
func WithPrevEntry() WatchOption { return func(o *watchOptions) { o.prev = true } }

// watchBuffer is the capacity of the channel Watch returns; revisions that
// do not fit wait in the watcher's pending list.
const watchBuffer = 16

// endWatch sends a watch's final event on out and closes it: at once when
// there is room, else from a goroutine that waits for the consumer to read
// or give up (ctx), without holding up Close meanwhile.
func endWatch[E any](ctx context.Context, out chan E, final E) {
	select {
	case out <- final:
		close(out)
	default:
		go func() {
			select {
			case out <- final:
			case <-ctx.Done():
			}
			close(out)
		}()
	}
}

// Watch streams the changes of keys under prefix ("" = all), in revision
// order, each once, until ctx ends. It works on any server of the group
// and across leader changes. A watcher that falls 256 revisions behind
// the live stream reads on from the group's event history at its own pace
// rather than slowing anyone else (it ends with ErrCompacted only if the
// history is trimmed past it); the channel always ends with one event
// whose Err is set, then closes. Drain the channel or
// cancel ctx: an undrained watch keeps its goroutine.
func (kv *KV) Watch(ctx context.Context, prefix string, opts ...WatchOption) <-chan WatchEvent {
	var o watchOptions
	for _, f := range opts {
		f(&o)
	}
	out := make(chan WatchEvent, watchBuffer)
	end := func(err error, compact int64) {
		endWatch(ctx, out, WatchEvent{Err: fmt.Errorf("watch %s: %w", quoteKey(prefix), err), CompactRevision: compact})
	}
	if o.from < 0 {
		end(fmt.Errorf("FromRevision %d: %w", o.from, errs.Invalid), 0)
		return out
	}
	if fsm.IsReserved(prefix) {
		end(fmt.Errorf("prefix contains NUL: %w", errs.Invalid), 0)
		return out
	}
	// each calls f with the events of one batch, in order, until f fails.
	each := func(b cluster.WatchBatch, f func(WatchEvent) bool) bool {
		if len(b.Events) == 0 {
			return f(WatchEvent{Type: EventProgress, Revision: b.Revision, LastInRevision: true})
		}
		for i, ev := range b.Events {
			we := WatchEvent{Type: EventPut, Revision: ev.Revision, Entry: toEntry(ev.KV), LastInRevision: i == len(b.Events)-1}
			if ev.Type == fsm.EventDelete {
				we.Type = EventDelete
				we.Entry = Entry{Key: ev.KV.Key, ModRevision: ev.Revision}
			}
			if o.prev && ev.Prev != nil {
				p := toEntry(*ev.Prev)
				we.PrevEntry = &p
			}
			if !f(we) {
				return false
			}
		}
		return true
	}
	send := func(b cluster.WatchBatch, stop <-chan struct{}) bool {
		return each(b, func(we WatchEvent) bool { return deliver(ctx, out, stop, we) })
	}
	// tryPush runs on the hub's goroutine while the watcher's own is idle,
	// so it is the only sender: the room it sees cannot shrink, and the
	// sends below cannot block.
	tryPush := func(b cluster.WatchBatch) bool {
		if cap(out)-len(out) < max(len(b.Events), 1) {
			return false
		}
		return each(b, func(we WatchEvent) bool { out <- we; return true })
	}
	err := kv.n.e.Watch(ctx, cluster.WatchRequest{Group: kv.group, Prefix: prefix, From: o.from,
		Send: send, TryPush: tryPush, End: end})
	if err != nil {
		var ce *fsm.CompactedError
		if errors.As(err, &ce) {
			end(err, ce.CompactRevision)
		} else {
			end(err, 0)
		}
	}
	return out
}

func deliver(ctx context.Context, out chan<- WatchEvent, stop <-chan struct{}, ev WatchEvent) bool {
	select {
	case out <- ev:
		return true
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// RequestProgress makes every watch of this group on this Node receive a
// progress event soon, at a revision no older than what the serving
// server's replica had applied when asked (on a server, so at least that
// of a write or a linearizable read through it that returned before).
func (kv *KV) RequestProgress(ctx context.Context) error {
	ctx, cancel := kv.n.bound(ctx)
	defer cancel()
	if err := kv.n.e.RequestProgress(ctx, kv.group); err != nil {
		return fmt.Errorf("request progress: %w", err)
	}
	return nil
}
