package client

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dister/dister/internal/cache"
	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
)

// feed is a group's cache and the watch that keeps it current. With a
// filtered cache the watch is a peer feed that carries only the events of
// the keys the cache follows (see cache/follow.go and peer/feed.go).
type feed struct {
	cache   *cache.Cache[fsm.KV]
	stream  *stream
	stopped atomic.Bool
	stop    context.CancelFunc // ends runFeed (a group replaced by another of its name)
	kick    chan struct{}      // buffered(1): follows changed

	sendMu sync.Mutex // orders changes with the opening of streams
	live   *peer.FeedStream
}

// wake tells the sender that the cache follows other keys now.
func (f *feed) wake() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *feed) running() bool { return !f.stopped.Load() }

// feedOf returns g's feed, starting it on the group's first Get; nil
// without a cache.
func (e *Engine) feedOf(g *group) *feed {
	if e.cfg.CacheSize <= 0 {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if g.feed != nil && g.feed.running() {
		return g.feed
	}
	c := cache.New[fsm.KV](e.cfg.CacheSize)
	// The filter holds the cached keys and the follows waiting for acks:
	// room for twice the cache.
	if limit := 2*e.cfg.CacheSize + 1024; limit <= peer.MaxFeedKeys && !e.unfilteredFeeds.Load() {
		c = cache.NewFiltered[fsm.KV](e.cfg.CacheSize, limit, peer.KeyHash)
	}
	ctx, cancel := context.WithCancel(e.life)
	f := &feed{cache: c, kick: make(chan struct{}, 1), stop: cancel}
	f.stream = &stream{e: e, group: g.name, shard: g.shard, feed: f}
	if !e.spawn(func() { e.runFeed(ctx, g, f) }) {
		cancel()
		return nil
	}
	g.feed = f
	return f
}

// runFeed follows the group from its current revision with an empty cache;
// when the watch cannot resume without a gap it starts again, empty. It
// ends with the engine (or stop), or when the group is gone.
func (e *Engine) runFeed(ctx context.Context, g *group, f *feed) {
	defer f.stopped.Store(true)
	defer f.stop()
	if f.cache.Filtered() && !e.spawn(func() { e.sendFollows(ctx, f) }) {
		return
	}
	for n := 0; ctx.Err() == nil; n++ {
		err := e.feedOnce(ctx, g, f)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, peer.ErrUnimplemented) {
			// A server of an earlier version: the group's next feed
			// follows it unfiltered.
			e.unfilteredFeeds.Store(true)
			return
		}
		if errors.Is(err, errs.GroupNotFound) || errors.Is(err, errs.Invalid) {
			return
		}
		f.cache.Untrust()
		e.log.Debug("client cache feed restarts", "group", g.name, "err", err)
		if e.backoff(ctx, n) != nil {
			return
		}
	}
}

func (e *Engine) feedOnce(ctx context.Context, g *group, f *feed) error {
	s := f.stream
	start, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if err := s.fromNow(start); err != nil {
		return err
	}
	// The cache is emptied before the stream opens (a filtered stream
	// starts with what the cache follows: nothing); fills meanwhile are
	// safe, since the stream delivers everything after from.
	from := s.next - 1
	f.cache.Reset(from)
	f.cache.Untrust()
	w, stop, err := s.open(ctx, start)
	if err != nil {
		return err
	}
	f.cache.Trust()
	warmCtx, stopWarm := context.WithCancel(ctx)
	defer stopWarm()
	e.spawn(func() { e.warm(warmCtx, g, f, from) })
	return s.follow(ctx, w, stop, func(fr *peer.WatchFrame) bool {
		if fr.Ack != 0 {
			f.cache.Ack(fr.Ack, fr.Revision)
			f.wake() // fills that failed unfollow their keys
			return true
		}
		if len(fr.Events) == 0 {
			f.cache.Progress(fr.Revision)
			return true
		}
		evs := make([]cache.Event[fsm.KV], len(fr.Events))
		for i, ev := range fr.Events {
			evs[i] = cache.Event[fsm.KV]{Key: ev.KV.Key, Value: ev.KV, Found: ev.Type == fsm.EventPut}
		}
		f.cache.Apply(fr.Revision, evs)
		if f.cache.Filtered() {
			f.wake() // keys the LRU evicted are unfollowed
		}
		return true
	}, f.cache.Untrust, f.cache.Trust)
}

// sendFollows sends the filtered cache's follows to the feed's server as
// they change, until ctx ends. A change sent on a stream that broke is
// not lost: the next stream's request carries every followed key.
func (e *Engine) sendFollows(ctx context.Context, f *feed) {
	for {
		select {
		case <-f.kick:
		case <-ctx.Done():
			return
		}
		for {
			f.sendMu.Lock()
			var c *cache.Change
			if f.live != nil {
				c = f.cache.TakeChange(peer.MaxFeedChange)
			}
			if c != nil {
				if err := f.live.Change(&peer.FeedChange{Seq: c.Seq, Add: c.Add, Remove: c.Remove}); err != nil {
					e.log.Debug("client cache feed change not sent", "err", err)
				}
			}
			f.sendMu.Unlock()
			if c == nil {
				break
			}
		}
	}
}

// openFeed opens f's stream at addr from s.next with every key f follows,
// and settles the follows that waited for an ack (the stream delivers
// their events from its start).
func (s *stream) openFeed(ctx context.Context, addr string) (*peer.WatchStream, error) {
	f := s.feed
	f.sendMu.Lock()
	defer f.sendMu.Unlock()
	hashes, waiting := f.cache.FollowedHashes()
	fs, err := s.e.peers.Feed(ctx, addr, &peer.FeedRequest{
		Watch: peer.WatchRequest{Group: s.group, Prefix: s.prefix, From: s.next, PrevKV: s.prevKV}, Keys: hashes})
	if err != nil {
		return nil, err
	}
	if err := firstFrame(fs.WatchStream, s.next); err != nil {
		return nil, err
	}
	f.cache.Opened(waiting, s.next-1)
	f.live = fs
	f.wake() // Opened may have unfollowed keys
	return fs.WatchStream, nil
}

// Bounds of warm: entries per list page, and the values it lists in all.
const (
	warmPage  = 500
	warmBytes = 32 << 20
)

// warm fills f's emptied cache from a list of the group, the way a
// reflector lists before it watches: pages read at revision from or later
// enter under Fill's rule (a page older than the watch position is
// refused key by key, never trusted) and into free room only (Cache.Warm
// never evicts what reads put there meanwhile), until the cache is full,
// the group is listed or warmBytes of values came. Without it a client's
// first read of every key would go to a server. Errors end it: reads fill
// the cache as before.
func (e *Engine) warm(ctx context.Context, g *group, f *feed, from int64) {
	after, listed := "", 0
	for ctx.Err() == nil && listed < warmBytes {
		room := e.cfg.CacheSize - f.cache.Len()
		if room <= 0 {
			return
		}
		req := &peer.ReadRequest{Group: g.name, Consistency: peer.Consistency(core.Stale), MinRevision: from,
			Query: peer.QueryList, After: after, Limit: min(warmPage, room)}
		var resp *peer.ReadResponse
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		err := e.retry(cctx, func(skip map[string]bool) (string, bool) { return e.pick(g.name+"\x00", skip) },
			func(addr string) error {
				r, err := e.peers.Read(cctx, addr, req)
				resp = r
				return err
			})
		cancel()
		if err != nil {
			e.log.Debug("client cache warm-up stops", "group", g.name, "err", err)
			return
		}
		for _, kv := range resp.KVs {
			if !f.cache.Warm(kv.Key, kv, resp.Revision) {
				f.wake()
				return // full: reads fill the rest
			}
			listed += len(kv.Value)
		}
		f.wake()
		if !resp.More || len(resp.KVs) == 0 {
			return
		}
		after = resp.KVs[len(resp.KVs)-1].Key
	}
}

// cachedGet answers a Get from the cache when its consistency allows:
//   - Session: the cache is trusted and has reached the session floor and
//     MinRevision (the app's own writes and reads).
//   - Linearizable: the group's committed revision, read from its leader
//     with a ReadIndex (one call shared by the reads that wait for it), has
//     reached the cache through the watch (a progress note is asked for:
//     the newest revision often changes no key); a watch lagging past the
//     bound sends the read to a server.
//   - Stale: the key is cached (MinRevision still applies).
//
// A miss reads from a server, and the answer fills the cache.
func (e *Engine) cachedGet(ctx context.Context, g *group, f *feed, key string, o core.ReadOpts) (*fsm.GetResult, error) {
	need := o.MinRevision
	switch o.Consistency {
	case core.Session:
		need = max(need, g.floor.Load())
	case core.Linearizable:
		rev, err := e.committedRevision(ctx, g)
		if err != nil {
			return nil, err
		}
		need = max(need, rev)
		if pos, trusted := f.cache.Pos(); trusted && pos < need && !e.waitFeed(ctx, g, f, need) {
			// Lagging: read through at the committed revision.
			return e.getThrough(ctx, g, key, core.ReadOpts{Consistency: core.Stale, MinRevision: need, CacheHit: o.CacheHit}, f)
		}
	}
	kv, found, at, ok, trusted := f.cache.Lookup(key)
	if ok && at >= need && (trusted || o.Consistency == core.Stale) {
		if o.CacheHit != nil {
			*o.CacheHit = true
		}
		g.raiseFloor(at)
		r := &fsm.GetResult{Found: found, Revision: at}
		if found {
			r.KV = kv
		}
		return r, nil
	}
	through := o
	if o.Consistency == core.Linearizable {
		// The ReadIndex is done: any server that applied need will do.
		through = core.ReadOpts{Consistency: core.Stale, MinRevision: need}
	}
	return e.getThrough(ctx, g, key, through, f)
}

// waitFeed waits until f's cache reaches rev, asking its server for
// progress notes, for at most the lag bound.
func (e *Engine) waitFeed(ctx context.Context, g *group, f *feed, rev int64) bool {
	wctx, cancel := context.WithTimeout(ctx, e.cfg.LagBound)
	defer cancel()
	for {
		moved := f.cache.Moved()
		if pos, trusted := f.cache.Pos(); pos >= rev {
			return trusted
		}
		if addr := f.stream.server(); addr != "" {
			g.progress.ask(e, addr, g.name)
		}
		select {
		case <-moved:
		case <-wctx.Done():
			pos, trusted := f.cache.Pos()
			return pos >= rev && trusted
		case <-time.After(2 * time.Millisecond):
			// The progress note may have been for an older revision.
		}
	}
}

// progressAsk sends one progress request at a time per group: concurrent
// reads waiting for the same feed share it.
type progressAsk struct{ busy atomic.Bool }

func (p *progressAsk) ask(e *Engine, addr, group string) {
	if !p.busy.CompareAndSwap(false, true) {
		return
	}
	if !e.spawn(func() {
		defer p.busy.Store(false)
		ctx, cancel := context.WithTimeout(e.life, callTimeout)
		defer cancel()
		_ = e.peers.Call(ctx, addr, peer.OpProgress, peer.GroupRequest{Group: group}, nil)
	}) {
		p.busy.Store(false)
	}
}

// revBatch shares ReadIndex calls among concurrent linearizable reads. A
// read may only use a call that started after the read did (an earlier
// one may predate a write acknowledged before the read), so reads join the
// next call, which starts as soon as the one in flight returns.
type revBatch struct {
	mu       sync.Mutex
	inFlight bool
	next     *revCall
}

type revCall struct {
	done chan struct{}
	rev  int64
	err  error
}

// committedRevision is the group's committed revision from its leader,
// from a ReadIndex that started after this call did.
func (e *Engine) committedRevision(ctx context.Context, g *group) (int64, error) {
	b := &g.revs
	b.mu.Lock()
	c := b.next
	if c == nil {
		c = &revCall{done: make(chan struct{})}
		b.next = c
		if !b.inFlight {
			e.launchRev(g)
		}
	}
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.rev, c.err
	case <-ctx.Done():
		return 0, ctxError(ctx.Err(), nil)
	}
}

// launchRev starts the next call; b.mu held. The call takes the reads
// that joined it up to the moment it is sent, not only those waiting when
// it was launched: readers come in bursts (a call's readers all return at
// once and read again), and the goroutine's start lets the burst join.
func (e *Engine) launchRev(g *group) {
	b := &g.revs
	b.inFlight = true
	run := func() {
		runtime.Gosched()
		b.mu.Lock()
		c := b.next
		b.next = nil
		b.mu.Unlock()
		ctx, cancel := context.WithTimeout(e.life, callTimeout)
		// A linearizable revision read on the leader: its ReadIndex round,
		// in the binary read call.
		req := &peer.ReadRequest{Group: g.name, Consistency: peer.Consistency(core.Linearizable), Query: peer.QueryRevision}
		var rev int64
		err := e.retry(ctx, func(skip map[string]bool) (string, bool) { return e.leaderAddr(g.name, skip) },
			func(addr string) error {
				resp, err := e.peers.Read(ctx, addr, req)
				if err == nil {
					rev = resp.Revision
				}
				return err
			})
		cancel()
		c.rev, c.err = rev, err
		if err == nil {
			g.raiseFloor(rev)
		}
		close(c.done)
		b.mu.Lock()
		b.inFlight = false
		if b.next != nil {
			e.launchRev(g)
		}
		b.mu.Unlock()
	}
	if !e.spawn(run) {
		c := b.next
		b.next = nil
		c.err = errs.Closed
		close(c.done)
		b.inFlight = false
	}
}

// feedFor is group's feed (nil before its first Get).
func (e *Engine) feedFor(group string) *feed {
	g := e.group(group)
	e.mu.Lock()
	defer e.mu.Unlock()
	return g.feed
}

// FeedServer is the address of the server streaming group's cache feed
// ("" = none); for tests.
func (e *Engine) FeedServer(group string) string {
	if f := e.feedFor(group); f != nil {
		return f.stream.server()
	}
	return ""
}

// UseUnfilteredFeeds makes the caches' next feeds unfiltered; for tests
// and benchmarks (as if a server of an earlier version had answered).
func (e *Engine) UseUnfilteredFeeds() { e.unfilteredFeeds.Store(true) }

// FeedFiltered tells whether group's feed is filtered; for tests.
func (e *Engine) FeedFiltered(group string) bool {
	f := e.feedFor(group)
	return f != nil && f.cache.Filtered()
}

// CacheLen is the number of keys group's cache holds (0 = no feed); for
// tests.
func (e *Engine) CacheLen(group string) int {
	if f := e.feedFor(group); f != nil {
		return f.cache.Len()
	}
	return 0
}
