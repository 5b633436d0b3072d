// Package client is the engine of a client-role node: it runs no Raft
// replica and stores nothing. It learns the servers, groups and leaders
// from the servers' node RPC (internal/peer), sends writes to the group's
// leader with its own exactly-once ids, spreads reads over the servers by
// consistent hashing (internal/router), and answers Gets from a cache
// (internal/cache) that one watch per group keeps current.
package client

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/peer"
	"github.com/dister/dister/internal/router"
	"github.com/dister/dister/internal/tlsutil"
)

// DefaultGroup is the group every cluster has.
const DefaultGroup = "default"

const (
	// refreshEvery is how often the client asks every server for its view
	// of the cluster (membership, leaders, who answers).
	refreshEvery = time.Second
	// callTimeout bounds the engine's own calls (discovery, feeds).
	callTimeout = 5 * time.Second
)

// Config configures a client engine.
type Config struct {
	// Servers are PeerAddrs of servers to discover the cluster from.
	Servers []string
	// CacheSize is the number of keys cached per group; 0 = no cache.
	CacheSize int
	// LagBound is how long a linearizable read waits for the cache's watch
	// to reach the leader's revision before it reads through. Zero = 50ms.
	LagBound time.Duration
	Logger   *slog.Logger
	// Dial is added to every connection's options (credentials, tokens).
	Dial []grpc.DialOption
	// TLS, if set, dials the servers with mutual TLS.
	TLS *tlsutil.Source
}

// Engine is a client node's engine; it implements core.Engine.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	peers   *peer.Client
	session uint64
	ids     core.ProposerIDs

	life   context.Context
	stop   context.CancelFunc
	closed atomic.Bool
	// unfilteredFeeds: a server lacked the filtered feed (an earlier
	// version), so caches follow their groups unfiltered.
	unfilteredFeeds atomic.Bool
	// goMu orders every wg.Add before Close's Wait.
	goMu sync.Mutex
	wg   sync.WaitGroup

	// sends holds the write queues per leader and group (sendKey ->
	// *sendQueue, batch.go); sendMu guards the servers found without
	// ProposeMany.
	sends       sync.Map
	sendMu      sync.Mutex
	withoutMany map[string]bool
	// Calls made for writes: Propose calls, ProposeMany calls and the
	// commands those carried (tests and figures).
	proposeCalls, manyCalls, manyCommands atomic.Int64

	mu      sync.Mutex
	seeds   []string
	servers map[uint64]peer.ServerInfo // from the servers' topology
	down    map[string]bool            // addresses that failed their last call
	groups  map[string]*group
	known   bool // one discovery round succeeded
	round   uint64
	rounds  chan struct{} // closed and replaced after each discovery round
	ring    atomic.Pointer[router.Ring]
	wake    chan struct{}
}

var _ core.Engine = (*Engine)(nil)

// Open starts a client engine. It does not wait for the servers: calls do,
// within their ctx, and WaitReady waits explicitly.
func Open(cfg Config) (*Engine, error) {
	if len(cfg.Servers) == 0 {
		return nil, fmt.Errorf("a client node needs Servers: %w", errs.Invalid)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LagBound == 0 {
		cfg.LagBound = 50 * time.Millisecond
	}
	var b [8]byte
	if _, err := crand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("session id: %w", err)
	}
	dial := cfg.Dial
	if cfg.TLS != nil {
		dial = append([]grpc.DialOption{grpc.WithTransportCredentials(cfg.TLS.ClientCredentials())}, dial...)
	}
	e := &Engine{cfg: cfg, log: cfg.Logger, peers: peer.NewClient(dial...),
		session: binary.LittleEndian.Uint64(b[:]) | 1,
		seeds:   slices.Clone(cfg.Servers), servers: map[uint64]peer.ServerInfo{},
		down: map[string]bool{}, groups: map[string]*group{}, rounds: make(chan struct{}),
		wake: make(chan struct{}, 1), withoutMany: map[string]bool{}}
	e.life, e.stop = context.WithCancel(context.Background())
	e.ring.Store(router.New(e.seeds))
	e.spawn(e.discoverLoop)
	return e, nil
}

// spawn runs f on a goroutine that Close waits for; false once closed.
func (e *Engine) spawn(f func()) bool {
	e.goMu.Lock()
	defer e.goMu.Unlock()
	if e.closed.Load() {
		return false
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
	return true
}

// NodeID is 0: a client node has no id in the cluster.
func (e *Engine) NodeID() uint64 { return 0 }

// Close stops every goroutine of the engine and closes its connections.
func (e *Engine) Close() error {
	e.goMu.Lock()
	already := e.closed.Swap(true)
	e.goMu.Unlock()
	if already {
		return nil
	}
	e.stop()
	e.wg.Wait()
	e.peers.Close()
	return nil
}

// --- discovery ---

func (e *Engine) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Engine) discoverLoop() {
	t := time.NewTicker(refreshEvery)
	defer t.Stop()
	for {
		e.discover()
		select {
		case <-e.life.Done():
			return
		case <-t.C:
		case <-e.wake:
		}
	}
}

// addrs is every address the client knows: the servers' and the seeds'.
func (e *Engine) addrsLocked() []string {
	var out []string
	for _, s := range e.servers {
		out = append(out, s.PeerAddr)
	}
	out = append(out, e.seeds...)
	slices.Sort(out)
	return slices.Compact(out)
}

// discover asks every known address for its topology at once: who answers
// is up, the servers' lists make the membership, and each group's leader is
// the one the most servers name (the leader's own word first).
func (e *Engine) discover() {
	e.mu.Lock()
	addrs := e.addrsLocked()
	e.mu.Unlock()
	type answer struct {
		addr string
		t    peer.Topology
		err  error
	}
	ctx, cancel := context.WithTimeout(e.life, callTimeout)
	defer cancel()
	answers := make(chan answer, len(addrs))
	for _, a := range addrs {
		go func() {
			var t peer.Topology
			err := e.peers.Call(ctx, a, peer.OpTopology, nil, &t)
			answers <- answer{a, t, err}
		}()
	}
	var got []answer
	down := map[string]bool{}
	for range addrs {
		a := <-answers
		if a.err != nil {
			down[a.addr] = true
			continue
		}
		got = append(got, a)
	}
	if e.life.Err() != nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.down = down
	if len(got) > 0 {
		servers := map[uint64]peer.ServerInfo{}
		votes := map[string]map[uint64]int{}
		self := map[string]uint64{}
		names := map[string]bool{}
		shards := map[string]uint64{}
		for _, a := range got {
			for _, s := range a.t.Servers {
				servers[s.ID] = s
			}
			for _, g := range a.t.Groups {
				names[g.Name] = true
				// The newest incarnation of the name (shard ids only grow).
				shards[g.Name] = max(shards[g.Name], g.Shard)
				if g.Leader == 0 {
					continue
				}
				if votes[g.Name] == nil {
					votes[g.Name] = map[uint64]int{}
				}
				votes[g.Name][g.Leader]++
				if g.Leader == a.t.NodeID {
					self[g.Name] = g.Leader
				}
			}
		}
		e.servers = servers
		for name := range names {
			g := e.groupLocked(name)
			if sid := shards[name]; sid != 0 {
				if g.shard != 0 && g.shard != sid {
					g = e.replaceGroupLocked(g)
				}
				g.shard = sid
			}
			leader := self[name]
			if leader == 0 {
				best := 0
				for id, n := range votes[name] {
					if n > best {
						leader, best = id, n
					}
				}
			}
			g.leader.Store(leader)
		}
		// Groups no server hosts any more are forgotten (not their
		// caches' feeds: they end by themselves with ErrGroupNotFound).
		for name, g := range e.groups {
			if !names[name] && !g.feeding() {
				delete(e.groups, name)
			}
		}
		e.known = true
		e.pruneSends(e.addrsLocked(), names)
		var ring []string
		for _, s := range servers {
			ring = append(ring, s.PeerAddr)
		}
		if len(ring) > 0 && !slices.Equal(ring, e.ring.Load().Servers()) {
			e.ring.Store(router.New(ring))
		}
	}
	e.round++
	close(e.rounds)
	e.rounds = make(chan struct{})
}

// rediscover starts a discovery round and waits until one that started
// after this call has finished (or ctx ends).
func (e *Engine) rediscover(ctx context.Context) error {
	e.mu.Lock()
	ch, start := e.rounds, e.round
	e.mu.Unlock()
	e.kick()
	for {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-e.life.Done():
			return errs.Closed
		}
		e.mu.Lock()
		done := e.round >= start+2 // the round in flight at start may predate the call
		ch = e.rounds
		e.mu.Unlock()
		if done {
			return nil
		}
		e.kick()
	}
}

// markDown records that addr failed a call; the next discovery round
// decides whether it is back.
func (e *Engine) markDown(addr string) {
	e.mu.Lock()
	e.down[addr] = true
	e.mu.Unlock()
	e.kick()
}

func (e *Engine) usable(addr string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !e.down[addr]
}

// pick is the server a read of key goes to: the ring's choice among the
// servers that answer (any known one when none seems to).
func (e *Engine) pick(key string, skip map[string]bool) (string, bool) {
	r := e.ring.Load()
	e.mu.Lock()
	defer e.mu.Unlock()
	if a, ok := r.Pick(key, func(a string) bool { return !e.down[a] && !skip[a] }); ok {
		return a, true
	}
	return r.Pick(key, func(a string) bool { return !skip[a] })
}

// leaderAddr is where a write of group goes: its leader's address when the
// client knows it and it answers, else any server that answers.
func (e *Engine) leaderAddr(group string, skip map[string]bool) (string, bool) {
	e.mu.Lock()
	var addr string
	if g := e.groups[group]; g != nil {
		if s, ok := e.servers[g.leader.Load()]; ok && !e.down[s.PeerAddr] && !skip[s.PeerAddr] {
			addr = s.PeerAddr
		}
	}
	e.mu.Unlock()
	if addr != "" {
		return addr, true
	}
	return e.pick(fmt.Sprintf("%s\x00%d", group, rand.Uint32()), skip)
}

// retryable tells whether a call that failed with err is worth another try
// elsewhere: the server is gone or going, or has no leader just now. A
// server's Closed is its own shutdown, not this engine's.
func retryable(err error) bool {
	return errors.Is(err, peer.ErrUnreachable) || errors.Is(err, errs.NoQuorum) ||
		errors.Is(err, errs.Closed) || errors.Is(err, errs.UnknownOutcome)
}

// backoff sleeps before try n+1 (growing to 200ms), or ends with ctx.
func (e *Engine) backoff(ctx context.Context, n int) error {
	d := min(5*time.Millisecond<<min(n, 6), 200*time.Millisecond)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-e.life.Done():
		return errs.Closed
	}
}

// ctxError is what a call whose ctx ended after tries failed returns.
func ctxError(ctxErr, last error) error {
	if errors.Is(ctxErr, errs.Closed) {
		return errs.Closed
	}
	if last == nil {
		return fmt.Errorf("%w: %w", ctxErr, errs.NoQuorum)
	}
	return fmt.Errorf("%w (last try: %v): %w", ctxErr, last, errs.NoQuorum)
}

// call runs op (any server will do) on the servers in turn until one
// answers, within ctx.
func (e *Engine) call(ctx context.Context, key, op string, in, out any) error {
	return e.retry(ctx, func(skip map[string]bool) (string, bool) { return e.pick(key, skip) },
		func(addr string) error { return e.peers.Call(ctx, addr, op, in, out) })
}

// retry runs f on the servers where chooses, moving on after a retryable
// failure, until it succeeds, fails for good, or ctx ends. Only for calls
// that are safe to repeat.
func (e *Engine) retry(ctx context.Context, where func(skip map[string]bool) (string, bool), f func(addr string) error) error {
	var last error
	skip := map[string]bool{}
	for n := 0; ; n++ {
		if e.closed.Load() {
			return errs.Closed
		}
		addr, ok := where(skip)
		if !ok {
			clear(skip)
			if err := e.rediscover(ctx); err != nil {
				return e.closedOr(ctxError(err, last))
			}
			continue
		}
		err := f(addr)
		if err != nil && (retryable(err) || errors.Is(err, context.Canceled)) && e.closed.Load() {
			// Close ended the call (it closes the connections, and
			// cancels the ctx of calls shared by several callers): what
			// the caller hears is ErrClosed, not a cancellation it did
			// not ask for.
			return errs.Closed
		}
		if err == nil || !retryable(err) || ctx.Err() != nil {
			if err != nil && ctx.Err() != nil && retryable(err) {
				return ctxError(ctx.Err(), err)
			}
			return err
		}
		last = err
		if errors.Is(err, peer.ErrUnreachable) {
			e.markDown(addr)
		}
		skip[addr] = true
		if err := e.backoff(ctx, n); err != nil {
			return e.closedOr(ctxError(err, last))
		}
	}
}

// closedOr is ErrClosed once the engine is closed, else err.
func (e *Engine) closedOr(err error) error {
	if e.closed.Load() {
		return errs.Closed
	}
	return err
}

// WaitReady returns once the client knows the cluster and every group has
// a leader; ErrClosed once the client is closed (what it knew is no
// longer followed).
func (e *Engine) WaitReady(ctx context.Context) error {
	for {
		if e.closed.Load() {
			return errs.Closed
		}
		e.mu.Lock()
		ready := e.known && len(e.groups) > 0
		for _, g := range e.groups {
			if g.leader.Load() == 0 {
				ready = false
			}
		}
		e.mu.Unlock()
		if ready {
			return nil
		}
		if err := e.rediscover(ctx); err != nil {
			return ctxError(err, nil)
		}
		if err := e.backoff(ctx, 2); err != nil {
			return ctxError(err, nil)
		}
	}
}

// --- per-group state ---

// group is what the client keeps of one group: its leader, the session
// floor, the cache with its feed, and the shared revision fetch.
type group struct {
	name   string
	shard  uint64 // as the servers report it (e.mu); 0 until known
	leader atomic.Uint64
	floor  atomic.Int64
	feed   *feed // nil without a cache
	revs   revBatch
	// progress: one progress request at a time for the feed's waiters.
	progress progressAsk
	streams  map[*stream]struct{} // the app's watches (e.mu)
}

// replaceGroupLocked starts afresh a group whose name now names another
// group (deleted and created again): the old one's revisions, session
// floor and cache say nothing of the new one, whose revisions start again
// at 1 (the old floor made every session read wait for a revision the new
// group might never reach). The app's watches stay tracked. e.mu held.
func (e *Engine) replaceGroupLocked(old *group) *group {
	if old.feed != nil {
		old.feed.stop()
	}
	delete(e.groups, old.name)
	g := e.groupLocked(old.name)
	g.streams, old.streams = old.streams, nil
	return g
}

func (e *Engine) groupLocked(name string) *group {
	g := e.groups[name]
	if g == nil {
		g = &group{name: name}
		e.groups[name] = g
	}
	return g
}

func (e *Engine) group(name string) *group {
	if name == "" {
		name = DefaultGroup
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.groupLocked(name)
}

func (g *group) feeding() bool { return g.feed != nil && g.feed.running() }

func (g *group) raiseFloor(rev int64) {
	for {
		cur := g.floor.Load()
		if rev <= cur || g.floor.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// GroupStates is the client's view of the groups: leaders as discovered,
// and the revision each group's cache reached (0 without one).
func (e *Engine) GroupStates() []core.GroupState {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]core.GroupState, 0, len(e.groups))
	for _, g := range e.groups {
		st := core.GroupState{Name: g.name, Leader: g.leader.Load()}
		if g.feed != nil {
			st.Revision, _ = g.feed.cache.Pos()
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b core.GroupState) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

// groupName maps "" to the default group.
func groupName(name string) string {
	if name == "" {
		return DefaultGroup
	}
	return name
}
