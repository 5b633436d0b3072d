package dister

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dister/dister/internal/client"
	"github.com/dister/dister/internal/cluster"
	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/shard"
	"github.com/dister/dister/internal/tlsutil"
)

// Version is dister's version string.
const Version = "0.1.0-dev"

// Node is one running dister node: a server, or a client node (see
// RoleClient) with the same methods. Its methods are safe for concurrent
// use.
type Node struct {
	e       core.Engine // the server engine, or a client node's
	role    Role
	timeout time.Duration
	def     *Group
	// staleAfter is Options.BalancerStaleAfter with the default applied;
	// 0 = never stale.
	staleAfter time.Duration

	log       *slog.Logger
	balancers sync.Map // group name -> *Balancer
	keep      *keeper  // renews this Node's leases

	// life ends at Close and stops the Node's own goroutines (balancer
	// views, service watches), which watchers counts; mu orders starting
	// one against Close.
	life     context.Context
	stop     context.CancelFunc
	mu       sync.Mutex
	watchers sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	// localCalls counts the calls that may be answered from this process's
	// memory (see shareCPU).
	localCalls atomic.Uint32
}

// yieldEvery is how many calls answered from memory pass between two
// yields of the processor (see shareCPU): one in 8 cost nothing measurable
// (BenchmarkGet/stale), one every call cost 30% of the reads per second.
const yieldEvery = 8

// shareCPU yields the processor on every yieldEvery-th call answered from
// memory: a session or stale read, a client node's cache hit, a balancer's
// view (a linearizable read waits on the network anyway). Such calls never
// block, so callers that do little else keep every processor busy, and Go's
// scheduler then runs the goroutines a network read wakes only every few
// hundred milliseconds: the Raft transport's and the engine's, so a leader
// stopped hearing its followers within the election timeout and stepped
// down, again and again, while 64 goroutines read
// (TestLocalReadStormKeepsLeaders). A yield lets the scheduler look at its
// other goroutines.
func (n *Node) shareCPU(c cluster.Consistency) {
	if c != cluster.Linearizable && n.localCalls.Add(1)%yieldEvery == 0 {
		runtime.Gosched()
	}
}

// Status is what a node reports about itself, without a network round
// trip. A client node has NodeID 0, and each group's Revision is the one
// its cache has reached (0 without a cache, or before the group's first
// Get).
type Status struct {
	NodeID  uint64
	Role    Role
	Version string
	Groups  []GroupStatus // the groups this server hosts, sorted by name
}

// GroupStatus is one hosted group as this server sees it.
type GroupStatus struct {
	Name     string
	Leader   uint64 // 0 = no leader known
	Revision int64  // the last revision this server applied
}

// Status reports this server's view of itself and its groups.
func (n *Node) Status() Status {
	st := Status{NodeID: n.ID(), Role: n.role, Version: Version}
	for _, g := range n.e.GroupStates() {
		st.Groups = append(st.Groups, GroupStatus{Name: g.Name, Leader: g.Leader, Revision: g.Revision})
	}
	return st
}

// Member is one server of the cluster.
type Member struct {
	ID uint64
	Peer
	Leader bool // leads group "default"
	Alive  bool // answered just now
	Voter  bool // votes in the catalog and the default group (false while a new server catches up)
}

// Open starts a server: it bootstraps a new cluster (InitialMembers),
// restarts from DataDir, or joins a running cluster (Join). It returns once
// the local replicas are started and does not wait for a leader, so servers
// of one cluster can be opened one after another; calls wait for a leader
// within their ctx, and WaitReady waits explicitly. A Join asks Servers to
// add this server, which needs a leader: Open waits for that within ctx.
//
// With Role RoleClient, Open starts a client node on Servers and returns at
// once; calls wait for the servers within their ctx.
func Open(ctx context.Context, o Options) (*Node, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(minLevel{h: slog.Default().Handler(), min: slog.LevelWarn})
	}
	timeout := o.RequestTimeout
	if timeout == 0 {
		timeout = defaultRequestTimeout
	}
	tlsSrc, err := o.tlsSource(o.Logger)
	if err != nil {
		return nil, err
	}
	if o.Role == RoleClient {
		return openClient(o, timeout, tlsSrc)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	initial := make(map[uint64]cluster.Peer, len(o.InitialMembers))
	for id, p := range o.InitialMembers {
		initial[id] = cluster.Peer{RaftAddr: p.RaftAddr, PeerAddr: p.PeerAddr}
	}
	e, err := cluster.Open(ctx, cluster.Config{
		NodeID:             o.NodeID,
		DataDir:            o.DataDir,
		RaftAddr:           o.RaftAddr,
		PeerAddr:           o.PeerAddr,
		InitialMembers:     initial,
		Join:               o.Join,
		Servers:            o.Servers,
		Logger:             o.Logger,
		Metrics:            o.Metrics,
		LeaseCheckpoint:    o.LeaseCheckpoint,
		CheckDamping:       o.CheckDamping,
		EnableScriptChecks: o.EnableScriptChecks,
		CheckOutputBody:    o.CheckOutputBody,
		CheckTargets:       o.CheckTargets,
		TLS:                tlsSrc,
		PeerAuth:           peerAuthorizer(o.PeerTokens),
		PeerDial:           peerDial(o),
		Shard: shard.Config{
			RTT:                o.RTT,
			ElectionRTT:        o.ElectionRTT,
			HeartbeatRTT:       o.HeartbeatRTT,
			SnapshotEntries:    o.SnapshotEntries,
			CompactionOverhead: o.CompactionOverhead,
			EventRetention:     o.EventHistory,
			TLS:                o.raftTLS(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("dister.Open: %w", err)
	}
	n := &Node{e: e, timeout: timeout, log: o.Logger, staleAfter: staleAfter(o.BalancerStaleAfter)}
	n.life, n.stop = context.WithCancel(context.Background())
	n.def = &Group{n: n, name: cluster.DefaultGroup}
	n.keep = newKeeper(n)
	n.spawn(n.keep.run)
	return n, nil
}

// openClient starts a client-role node. It does not wait for the servers:
// calls do, within their ctx (WaitReady waits explicitly).
func openClient(o Options, timeout time.Duration, tlsSrc *tlsutil.Source) (*Node, error) {
	size := o.CacheSize
	switch {
	case size == 0:
		size = defaultCacheSize
	case size < 0:
		size = 0
	}
	e, err := client.Open(client.Config{Servers: o.Servers, CacheSize: size, Logger: o.Logger, TLS: tlsSrc, Dial: peerDial(o)})
	if err != nil {
		return nil, fmt.Errorf("dister.Open: %w", err)
	}
	n := &Node{e: e, role: RoleClient, timeout: timeout, log: o.Logger, staleAfter: staleAfter(o.BalancerStaleAfter)}
	n.life, n.stop = context.WithCancel(context.Background())
	n.def = &Group{n: n, name: cluster.DefaultGroup}
	n.keep = newKeeper(n)
	n.spawn(n.keep.run)
	return n, nil
}

// bound gives ctx the Node's RequestTimeout when it has no deadline.
func (n *Node) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, n.timeout)
}

// Role is the node's role.
func (n *Node) Role() Role { return n.role }

// ID is this server's node id (assigned by the cluster after a Join with
// NodeID 0).
func (n *Node) ID() uint64 { return n.e.NodeID() }

// WaitReady returns once every group this server hosts has a leader.
func (n *Node) WaitReady(ctx context.Context) error {
	ctx, cancel := n.bound(ctx)
	defer cancel()
	return n.e.WaitReady(ctx)
}

// Close stops the server. It is idempotent; calls in flight end with
// ErrClosed.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.stop()
		n.mu.Unlock()
		n.watchers.Wait()
		n.closeErr = n.e.Close()
	})
	return n.closeErr
}

// KV is the key-value store of group "default".
func (n *Node) KV() *KV { return n.def.KV() }

// Group is a handle on a group. It does not check that the group exists:
// calls through it return ErrGroupNotFound when it does not.
func (n *Node) Group(name string) *Group {
	if name == "" {
		name = cluster.DefaultGroup
	}
	return &Group{n: n, name: name}
}

// Group is an isolated data space: its own keys and revisions.
type Group struct {
	n    *Node
	name string
}

// Name is the group's name.
func (g *Group) Name() string { return g.name }

// KV is the group's key-value store.
func (g *Group) KV() *KV { return &KV{n: g.n, group: g.name} }

// Leader is the id of the group's leader as this server knows it (0 = none
// known).
func (g *Group) Leader(ctx context.Context) (uint64, error) {
	ctx, cancel := g.n.bound(ctx)
	defer cancel()
	return g.n.e.Leader(ctx, g.name)
}

// CreateGroup creates a group. It returns once the group has a leader and
// is usable through this Node; other servers start it as they learn of it.
// ErrConflict if it exists.
func (n *Node) CreateGroup(ctx context.Context, name string) error {
	ctx, cancel := n.bound(ctx)
	defer cancel()
	if err := n.e.CreateGroup(ctx, name); err != nil {
		return fmt.Errorf("create group %q: %w", name, err)
	}
	return nil
}

// DeleteGroup deletes a group and all its data on every server.
// ErrGroupNotFound if it does not exist; "default" cannot be deleted. It
// returns once the server it ran on removed the group's data and every
// other server that answers stopped serving the group (waiting at most 5 s
// for them), so a read through any server afterwards finds it gone; a
// server that was down drops the group when it comes back.
func (n *Node) DeleteGroup(ctx context.Context, name string) error {
	ctx, cancel := n.bound(ctx)
	defer cancel()
	if err := n.e.DeleteGroup(ctx, name); err != nil {
		return fmt.Errorf("delete group %q: %w", name, err)
	}
	return nil
}

// Groups lists the groups, sorted by name.
func (n *Node) Groups(ctx context.Context) ([]string, error) {
	ctx, cancel := n.bound(ctx)
	defer cancel()
	g, err := n.e.Groups(ctx)
	if err != nil {
		return nil, fmt.Errorf("list groups: %w", err)
	}
	return g, nil
}

// AddServer adds a server to the cluster (id 0 = the next free id) and
// returns its id. The new server then starts with Join (or joins through
// Servers by itself, which calls AddServer). It becomes a non-voting member
// of every group and is promoted to voter once it has caught up. An
// address another server has is ErrConflict (the same Raft address again
// returns that server's id, so a joining server may retry); an id above
// 2^62 is ErrInvalid.
func (n *Node) AddServer(ctx context.Context, id uint64, p Peer) (uint64, error) {
	ctx, cancel := n.bound(ctx)
	defer cancel()
	id, err := n.e.AddServer(ctx, id, cluster.Peer{RaftAddr: p.RaftAddr, PeerAddr: p.PeerAddr})
	if err != nil {
		return 0, fmt.Errorf("add server: %w", err)
	}
	return id, nil
}

// RemoveServer removes a server from every group for good; its id is never
// reused. The server leaves every group's Raft configuration first and
// stops its replicas only after that committed; the steps are recorded in
// the catalog, so if the call ends early (ctx, Close, a leader change) the
// cluster finishes the removal. ErrNotFound if no such server; ErrInvalid
// for the last voter, or when some group would be left without a live
// majority (nothing is changed then).
func (n *Node) RemoveServer(ctx context.Context, id uint64) error {
	ctx, cancel := n.bound(ctx)
	defer cancel()
	if err := n.e.RemoveServer(ctx, id); err != nil {
		return fmt.Errorf("remove server %d: %w", id, err)
	}
	return nil
}

// Members lists the servers, sorted by id.
func (n *Node) Members(ctx context.Context) ([]Member, error) {
	ctx, cancel := n.bound(ctx)
	defer cancel()
	ms, err := n.e.Members(ctx)
	if err != nil {
		return nil, fmt.Errorf("members: %w", err)
	}
	out := make([]Member, len(ms))
	for i, m := range ms {
		out[i] = Member{ID: m.ID, Peer: Peer{RaftAddr: m.Peer.RaftAddr, PeerAddr: m.Peer.PeerAddr},
			Leader: m.Leader, Alive: m.Alive, Voter: m.Voter}
	}
	return out, nil
}

// Settings are the cluster-wide settings.
type Settings struct {
	// ScriptChecks allows script and custom health checks, which run a
	// command on the group leader. Off by default: whoever can register an
	// instance could otherwise run code on the servers. Turning it off
	// stops existing script checks from running (they report critical).
	ScriptChecks bool
}

// Settings reads the cluster settings (linearizable).
func (n *Node) Settings(ctx context.Context) (Settings, error) {
	ctx, cancel := n.bound(ctx)
	defer cancel()
	s, err := n.e.Settings(ctx)
	if err != nil {
		return Settings{}, fmt.Errorf("settings: %w", err)
	}
	return Settings{ScriptChecks: s.ScriptChecks}, nil
}

// SetSettings replaces the cluster settings; every server applies them
// once it has applied the write.
func (n *Node) SetSettings(ctx context.Context, s Settings) error {
	ctx, cancel := n.bound(ctx)
	defer cancel()
	if err := n.e.SetSettings(ctx, cluster.Settings{ScriptChecks: s.ScriptChecks}); err != nil {
		return fmt.Errorf("set settings: %w", err)
	}
	return nil
}

// spawn runs f on a goroutine that Close waits for; false (f not run) when
// the Node is closed.
func (n *Node) spawn(f func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.life.Err() != nil {
		return false
	}
	n.watchers.Add(1)
	go func() {
		defer n.watchers.Done()
		f()
	}()
	return true
}

// minLevel passes on the records of h at min and above: a Node given no
// Logger says only what needs attention through slog.Default.
type minLevel struct {
	h   slog.Handler
	min slog.Level
}

func (m minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= m.min && m.h.Enabled(ctx, l)
}
func (m minLevel) Handle(ctx context.Context, r slog.Record) error { return m.h.Handle(ctx, r) }
func (m minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h: m.h.WithAttrs(as), min: m.min}
}
func (m minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h: m.h.WithGroup(name), min: m.min}
}
