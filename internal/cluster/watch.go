package cluster

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// Watches read the event history that the state machine keeps. One hub per
// group on each server follows the local replica (woken by every apply)
// and fans each revision's events out to the watchers of that server. The
// hub hands a revision straight to the consumer's channel when it has room
// (one hand-off, no goroutine in between); otherwise the revision waits in
// the watcher's pending list, which the watcher's goroutine drains in
// order. A watcher with watchQueue revisions pending leaves the live
// stream: once it has delivered them it reads on from history at its own
// pace and joins the hub again when level (etcd's unsynced watchers), so
// it never slows the hub, the writes, or the other watchers, and it ends
// only if history is trimmed past it (ErrCompacted, with the revision to
// resume from). An idle watcher holds no queue memory. When more revisions
// come at once than a watcher may queue (a snapshot was installed), the
// hub lets every watcher read them from history (hub.release).

const (
	// watchQueue is how many revisions (or progress notes) a watcher may
	// have undelivered before it leaves the live stream for history.
	watchQueue = 256
	// eventsPage bounds one read of history.
	eventsPage = 1000
	// progressEvery is the period of progress notes to every watcher.
	progressEvery = 15 * time.Second
	// startTimeout bounds finding the group and starting its hub.
	startTimeout = 10 * time.Second
)

// WatchBatch and WatchRequest: see core.
type (
	WatchBatch   = core.WatchBatch
	WatchRequest = core.WatchRequest
)

type hub struct {
	e     *Engine
	shard uint64
	wake  chan struct{} // buffered(1), kicked on every apply
	quit  chan struct{} // closed by end: the loop stops
	// asked is buffered(1): RequestProgress wants a note once the hub
	// has read everything applied so far.
	asked chan struct{}

	mu       sync.Mutex
	pos      int64                 // every event up to pos was handed to the registered watchers
	watchers map[*watcher]struct{} // on the live stream
	// attached holds every watcher whose goroutine runs on this hub, on
	// the live stream or reading history: the hub's end reaches them all.
	attached map[*watcher]struct{}
	err      error // set when the hub ended
}

// Watch starts a watch, or fails to start it with an error (End is not
// called then). A started watch runs until ctx ends, the Engine closes, or
// an error ends it; End is called in every case.
func (e *Engine) Watch(ctx context.Context, req WatchRequest) error {
	if e.closed.Load() {
		return errs.Closed
	}
	// The start is bounded even though the watch is not.
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	sid, err := e.resolve(sctx, req.Group)
	if err != nil {
		return err
	}
	// A start below the history fails here, before Watch returns, so a
	// caller can answer it before streaming. (Trimming between this check
	// and the first history read still ends the watch with Compacted.)
	if compact := e.host.CompactRevision(sid); req.From > 0 && req.From < compact {
		return &fsm.CompactedError{From: req.From, CompactRevision: compact}
	}
	h, err := e.hub(sctx, sid)
	if err != nil {
		return err
	}
	w := &watcher{req: req, ended: make(chan struct{}), signal: make(chan struct{}, 1)}
	// Attached before Watch returns: a progress note asked for from now on
	// reaches the watcher (it is owed one until it joins the live stream).
	h.attach(w)
	if !e.goWatch(func() {
		err := h.run(ctx, w)
		req.End(err, compactRevision(err))
	}) {
		h.detach(w)
		return errs.Closed
	}
	return nil
}

// goWatch runs f on a goroutine that Close waits for; false (f not run)
// once Close began. watchMu orders every Add before Close's Wait.
func (e *Engine) goWatch(f func()) bool {
	e.watchMu.Lock()
	defer e.watchMu.Unlock()
	if e.closed.Load() {
		return false
	}
	e.watchers.Add(1)
	go func() {
		defer e.watchers.Done()
		f()
	}()
	return true
}

// compactRevision is where a watch that err ended can resume: the compact
// revision an ErrCompacted carries (from a watcher's own read or its
// hub's), else 0.
func compactRevision(err error) int64 {
	var ce *fsm.CompactedError
	if errors.As(err, &ce) {
		return ce.CompactRevision
	}
	return 0
}

// RequestProgress makes every watcher of group on this server receive a
// progress note at the revision the local replica has applied, at least:
// the hub first hands on what it had not read yet, so a note asked for
// after a write (or a linearizable read) reports at least its revision.
func (e *Engine) RequestProgress(ctx context.Context, group string) error {
	sid, err := e.resolve(ctx, group)
	if err != nil {
		return err
	}
	if v, ok := e.hubs.Load(sid); ok {
		select {
		case v.(*hub).asked <- struct{}{}:
		default: // one is pending, and will be sent after this call
		}
	}
	return nil
}

// hub returns the shard's hub, starting it on first use.
func (e *Engine) hub(ctx context.Context, sid uint64) (*hub, error) {
	if v, ok := e.hubs.Load(sid); ok {
		return v.(*hub), nil
	}
	e.hubMu.Lock()
	defer e.hubMu.Unlock()
	if v, ok := e.hubs.Load(sid); ok {
		return v.(*hub), nil
	}
	if e.closed.Load() {
		return nil, errs.Closed
	}
	rev, err := e.readShard(ctx, sid, fsm.RevisionQuery{}, ReadOpts{Consistency: Stale})
	if err != nil {
		return nil, err
	}
	h := &hub{e: e, shard: sid, wake: make(chan struct{}, 1), quit: make(chan struct{}), asked: make(chan struct{}, 1),
		pos: rev.(int64), watchers: map[*watcher]struct{}{}, attached: map[*watcher]struct{}{}}
	e.hubs.Store(sid, h)
	if !e.goWatch(h.loop) { // Close began meanwhile
		h.end(errs.Closed)
		return nil, errs.Closed
	}
	return h, nil
}

// kickHub wakes the hub of shardID, if any; called on every apply.
func (e *Engine) kickHub(shardID uint64) {
	if v, ok := e.hubs.Load(shardID); ok {
		select {
		case v.(*hub).wake <- struct{}{}:
		default:
		}
	}
}

func (h *hub) loop() {
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	for {
		select {
		case <-h.quit: // ended from outside (endHub)
			return
		case <-h.e.life.Done():
			h.end(errs.Closed)
			return
		case <-tick.C:
			h.progress()
		case <-h.asked:
			if err := h.advance(); err != nil {
				h.end(err)
				return
			}
			h.progress()
		case <-h.wake:
			if err := h.advance(); err != nil {
				h.end(err)
				return
			}
		}
	}
}

// SetHubHook installs (or, with nil, removes) a hook that every hub runs
// before it reads what the local replica applied; for tests, which block in
// it to make a hub fall behind.
func (e *Engine) SetHubHook(f func(shardID uint64)) {
	if f == nil {
		e.hubHook.Store(nil)
		return
	}
	e.hubHook.Store(&f)
}

// advance hands every event the local replica applied since pos to the
// watchers, one revision at a time.
func (h *hub) advance() error {
	if f := h.e.hubHook.Load(); f != nil {
		(*f)(h.shard)
	}
	for {
		res, err := h.events(h.pos + 1)
		if err != nil {
			return err
		}
		bs := byRevision(res.Events)
		h.mu.Lock()
		// A burst is told by how far the replica is ahead, not by the
		// revisions read so far: history is paged by events, so a page of
		// txns of many keys holds far fewer than watchQueue revisions, and
		// counting them let the first pages fill the watchers' queues
		// before the burst was seen (they were cancelled while keeping up).
		if res.Revision-h.pos > watchQueue {
			h.release()
		}
		for _, b := range bs {
			h.dispatch(b)
			h.pos = b.Revision
		}
		if !res.More {
			h.pos = max(h.pos, res.Revision)
		}
		h.mu.Unlock()
		if !res.More {
			return nil
		}
	}
}

func (h *hub) events(from int64) (*fsm.EventsResult, error) {
	ctx, cancel := context.WithTimeout(h.e.life, 10*time.Second)
	defer cancel()
	v, err := h.e.host.StaleRead(ctx, h.shard, fsm.EventsQuery{From: from, Limit: eventsPage})
	if err != nil {
		return nil, err
	}
	return v.(*fsm.EventsResult), nil
}

// dispatch gives one revision to every matching watcher; h.mu is held.
func (h *hub) dispatch(b WatchBatch) {
	for w := range h.watchers {
		if b.Revision < w.req.From {
			continue
		}
		if f := filter(b, w.req.Prefix); len(f.Events) > 0 {
			// Every revision before b was offered to w already.
			h.offer(w, f, b.Revision)
		}
	}
}

// offer gives b to w without blocking: straight to the consumer when
// nothing is pending and it has room, else to the pending list. A watcher
// whose pending list is full is let go instead, to read on from history
// from resume, where b lies (b is not queued). h.mu is held.
func (h *hub) offer(w *watcher, b WatchBatch, resume int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.pending) == 0 && w.req.TryPush(b) {
		return
	}
	if len(w.pending) >= watchQueue {
		if len(b.Events) == 0 {
			w.owed = true // a progress note, asked for perhaps
		}
		h.letGo(w, resume)
		return
	}
	w.pending = append(w.pending, b)
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// letGo takes w off the live stream: its goroutine delivers what is
// pending, then reads history from resume (hub.run). What is pending past
// the head is dropped and read again from history, so a watcher whose
// consumer stopped reading holds one revision, not a queue: the head stays
// (drain may be handing it over outside w.mu), and every revision between
// it and the first dropped one had nothing for w. h.mu and w.mu are held.
func (h *hub) letGo(w *watcher, resume int64) {
	delete(h.watchers, w)
	if len(w.pending) > 0 {
		// A progress note at r covers r too: r+1 either way.
		resume = w.pending[0].Revision + 1
		for _, b := range w.pending[1:] {
			if len(b.Events) == 0 {
				w.owed = true
			}
		}
		w.pending = []WatchBatch{w.pending[0]} // not the queue's array
	}
	w.resume = resume
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// release lets every watcher go when more revisions came at once than a
// watcher may queue (a snapshot was installed, or the hub was held up):
// each reads them from history at its own pace, as at its start. h.mu is
// held.
func (h *hub) release() {
	for w := range h.watchers {
		w.mu.Lock()
		// Every revision up to pos was offered to w; From may lie ahead.
		h.letGo(w, max(h.pos+1, w.req.From))
		w.mu.Unlock()
	}
}

func (h *hub) progress() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.attached {
		if _, live := h.watchers[w]; !live {
			// Reading history: its note comes when it is level (join).
			w.mu.Lock()
			w.owed = true
			w.mu.Unlock()
			continue
		}
		// A watcher that starts in the future has seen nothing before its
		// start: never report less.
		h.offer(w, WatchBatch{Revision: max(h.pos, w.req.From-1)}, max(h.pos+1, w.req.From))
	}
}

// endHub ends the watches of a shard that stopped here for good (its group
// was deleted): they get err, and a later watch starts a new hub.
func (e *Engine) endHub(sid uint64, err error) {
	if v, ok := e.hubs.Load(sid); ok {
		v.(*hub).end(err)
	}
}

// end stops every watcher with err, and the hub's loop; the first end
// counts. A hub that fell behind the history ends with the
// *fsm.CompactedError of its read, which tells its watchers where to resume.
func (h *hub) end(err error) {
	// Only this hub: a new one may already serve the shard.
	h.e.hubs.CompareAndDelete(h.shard, h)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil {
		return
	}
	h.err = err
	close(h.quit)
	clear(h.watchers)
	for w := range h.attached {
		delete(h.attached, w)
		w.stop()
	}
}

// byRevision splits events (in order) into one batch per revision.
func byRevision(evs []fsm.Event) []WatchBatch {
	var out []WatchBatch
	for i := 0; i < len(evs); {
		j := i
		for j < len(evs) && evs[j].Revision == evs[i].Revision {
			j++
		}
		out = append(out, WatchBatch{Revision: evs[i].Revision, Events: evs[i:j]})
		i = j
	}
	return out
}

// filter keeps the events of b under prefix; b itself is shared between
// watchers and never modified.
//
// The empty prefix means every client key: it never matches the reserved
// namespace, which a watch sees only by naming a reserved prefix.
func filter(b WatchBatch, prefix string) WatchBatch {
	match := func(key string) bool {
		if prefix == "" {
			return !fsm.IsReserved(key)
		}
		return strings.HasPrefix(key, prefix)
	}
	all := true
	for _, ev := range b.Events {
		if !match(ev.KV.Key) {
			all = false
			break
		}
	}
	if all {
		return b
	}
	out := WatchBatch{Revision: b.Revision}
	for _, ev := range b.Events {
		if match(ev.KV.Key) {
			out.Events = append(out.Events, ev)
		}
	}
	return out
}
