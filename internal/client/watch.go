package client

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
)

// A client's watch is a stream from one server. Every server keeps the
// group's event history, so when the stream breaks (the server died, was
// closed, or, if of an earlier version, dropped a watcher that fell behind)
// the watch resumes on another server from the revision after the last one
// it delivered: the consumer sees no gap and no repeat. Only a resume below the history
// (ErrCompacted) or the group's deletion ends it.

// stream is one watch as the client follows it.
type stream struct {
	e      *Engine
	group  string
	shard  uint64 // the group's shard as discovered when the stream began (0: unknown)
	prefix string
	prevKV bool  // events carry the previous entry
	next   int64 // the first revision not yet delivered
	feed   *feed // a cache's feed (nil: a watch)

	mu   sync.Mutex
	addr string // the server streaming now
}

// server is the address of the server streaming now.
func (s *stream) server() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// open starts the stream on a server that answers, from s.next: the
// stream lives under ctx, its start (tries and first frame) under start.
// It fails for good with the server's verdict (ErrCompacted,
// ErrGroupNotFound, ErrInvalid), and with start.
func (s *stream) open(ctx, start context.Context) (*peer.WatchStream, context.CancelFunc, error) {
	e := s.e
	var out *peer.WatchStream
	var stop context.CancelFunc
	err := e.retry(start, func(skip map[string]bool) (string, bool) {
		return e.pick(s.group+"\x00watch\x00"+s.prefix, skip)
	}, func(addr string) error {
		sctx, cancel := context.WithCancel(ctx)
		unbound := context.AfterFunc(start, cancel)
		var w *peer.WatchStream
		var err error
		if s.feed != nil && s.feed.cache.Filtered() {
			w, err = s.openFeed(sctx, addr)
		} else {
			w, err = e.peers.Watch(sctx, addr, &peer.WatchRequest{Group: s.group, Prefix: s.prefix, From: s.next, PrevKV: s.prevKV})
			if err == nil {
				err = firstFrame(w, s.next)
			}
		}
		if !unbound() && err == nil {
			err = start.Err() // start ended just as the first frame came
		}
		if err != nil {
			cancel()
			return err
		}
		out, stop = w, cancel
		s.mu.Lock()
		s.addr = addr
		s.mu.Unlock()
		return nil
	})
	return out, stop, err
}

// firstFrame reads w's first frame, which says the watch started, or why
// not.
func firstFrame(w *peer.WatchStream, from int64) error {
	f, err := w.Recv()
	if err == nil && f.Err != nil {
		err = f.Err
		if f.CompactRevision > 0 {
			err = &fsm.CompactedError{From: from, CompactRevision: f.CompactRevision}
		}
	}
	return err
}

// fromNow sets s.next to the revision after the group's current one.
func (s *stream) fromNow(ctx context.Context) error {
	rev, err := s.e.Revision(ctx, s.group, core.ReadOpts{Consistency: core.Stale})
	if err != nil {
		return err
	}
	s.next = rev + 1
	return nil
}

// follow delivers the frames of w, then of its resumptions, to deliver
// (false = stop) until ctx ends or the watch fails for good; lost and
// resumed are told when the stream breaks and when it runs again.
func (s *stream) follow(ctx context.Context, w *peer.WatchStream, stop context.CancelFunc,
	deliver func(f *peer.WatchFrame) bool, lost, resumed func()) error {
	defer func() { stop() }()
	for {
		f, err := w.Recv()
		if err == nil && f.Err == nil {
			if f.Revision < s.next && len(f.Events) > 0 {
				continue // cannot happen: the server starts at s.next
			}
			// Events, and progress notes up to where the watch is (a
			// note at s.next-1 says nothing new happened: still news to
			// a consumer that asked for progress).
			if f.Ack != 0 || len(f.Events) > 0 || f.Revision >= s.next-1 {
				if !deliver(f) {
					return nil
				}
				s.next = max(s.next, f.Revision+1)
			}
			continue
		}
		if err == nil {
			err = f.Err
			if f.CompactRevision > 0 {
				err = &fsm.CompactedError{From: s.next, CompactRevision: f.CompactRevision}
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if s.e.closed.Load() {
			return errs.Closed
		}
		// A server that went away, or dropped this watcher for falling
		// behind: resume elsewhere from s.next.
		if !(retryable(err) || errors.Is(err, errs.WatchOverflow)) {
			return err
		}
		if errors.Is(err, peer.ErrUnreachable) {
			s.e.markDown(s.server())
		}
		stop()
		if lost != nil {
			lost()
		}
		for n := 0; ; n++ {
			w, stop, err = s.open(ctx, ctx)
			if err == nil {
				// A server takes a watch that starts beyond its group's
				// revision, so a resume by name would go on, silently, in
				// a group created again under the name meanwhile.
				if err = s.sameGroup(ctx); err == nil {
					break
				}
				stop()
			}
			if ctx.Err() != nil || s.e.closed.Load() || !retryable(err) {
				stop = func() {}
				if s.e.closed.Load() {
					return errs.Closed
				}
				return err
			}
			if err := s.e.backoff(ctx, n); err != nil {
				stop = func() {}
				return err
			}
		}
		if resumed != nil {
			resumed()
		}
	}
}

// sameGroup checks, once a stream resumed, that its group is the one it
// followed: the server now streaming reports the group's shard it began
// with (when known), and the group's committed revision, read from its
// leader, has reached the last revision delivered (revisions of a group
// created again start at 1).
func (s *stream) sameGroup(ctx context.Context) error {
	gone := func(why string) error {
		return fmt.Errorf("group %q was deleted while its watch resumed (%s): %w", s.group, why, errs.GroupNotFound)
	}
	if s.shard != 0 {
		var t peer.Topology
		if err := s.e.peers.Call(ctx, s.server(), peer.OpTopology, nil, &t); err != nil {
			return err
		}
		if shard, _ := t.ShardOf(s.group); shard != 0 && shard != s.shard {
			return gone("the name names another group now")
		}
	}
	last := s.next - 1
	if last <= 0 {
		return nil
	}
	resp, err := s.e.read(ctx, s.e.group(s.group), "", readRequest(core.ReadOpts{Consistency: core.Linearizable}, peer.QueryRevision))
	if err != nil {
		return err
	}
	if resp.Revision < last {
		return gone(fmt.Sprintf("the group of that name is at revision %d, under %d", resp.Revision, last))
	}
	return nil
}

// Watch starts a watch of req.Group on a server; once started it follows
// the group's changes through server failures until ctx ends, the engine
// closes, or the watch fails for good, and calls req.End once.
func (e *Engine) Watch(ctx context.Context, req core.WatchRequest) error {
	if e.closed.Load() {
		return errs.Closed
	}
	// The caller's events have their previous entries, as the server
	// engine's do (the root package drops them unless asked for).
	s := &stream{e: e, group: groupName(req.Group), prefix: req.Prefix, next: req.From, prevKV: true}
	e.mu.Lock()
	s.shard = e.groupLocked(s.group).shard
	e.mu.Unlock()
	// The watch ends with ctx or with the engine, whichever first.
	ctx, end := context.WithCancel(ctx)
	unlink := context.AfterFunc(e.life, end)
	started := false
	defer func() {
		if !started {
			unlink()
			end()
		}
	}()
	sctx, cancel := context.WithTimeout(ctx, callTimeout*2)
	defer cancel()
	if s.next == 0 {
		if err := s.fromNow(sctx); err != nil {
			return err
		}
	}
	w, stop, err := s.open(ctx, sctx)
	if err != nil {
		return err
	}
	e.trackWatch(s, true)
	started = e.spawn(func() {
		defer func() {
			unlink()
			end()
		}()
		defer e.trackWatch(s, false)
		err := s.follow(ctx, w, stop, func(f *peer.WatchFrame) bool {
			return req.Send(core.WatchBatch{Revision: f.Revision, Events: f.Events}, e.life.Done())
		}, nil, nil)
		switch {
		case e.life.Err() != nil:
			err = errs.Closed
		case err == nil || errors.Is(err, context.Canceled):
			// The consumer stopped, or the caller's ctx ended.
			if err = ctx.Err(); err == nil {
				err = errs.Closed
			}
		}
		var ce *fsm.CompactedError
		compact := int64(0)
		if errors.As(err, &ce) {
			compact = ce.CompactRevision
		}
		req.End(err, compact)
	})
	if !started {
		e.trackWatch(s, false)
		stop()
		return errs.Closed
	}
	return nil
}

// trackWatch keeps the set of the group's streams, for RequestProgress.
func (e *Engine) trackWatch(s *stream, on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	g := e.groupLocked(s.group)
	if g.streams == nil {
		g.streams = map[*stream]struct{}{}
	}
	if on {
		g.streams[s] = struct{}{}
	} else {
		delete(g.streams, s)
	}
}

// RequestProgress asks every server streaming a watch of group to this
// client for a progress note now.
func (e *Engine) RequestProgress(ctx context.Context, group string) error {
	g := e.group(group)
	e.mu.Lock()
	addrs := map[string]bool{}
	for s := range g.streams {
		if a := s.server(); a != "" {
			addrs[a] = true
		}
	}
	f := g.feed
	e.mu.Unlock()
	if f != nil {
		if a := f.stream.server(); a != "" {
			addrs[a] = true
		}
	}
	for a := range addrs {
		if err := e.peers.Call(ctx, a, peer.OpProgress, peer.GroupRequest{Group: g.name}, nil); err != nil && !retryable(err) {
			return err
		}
	}
	return nil
}
