// Package cluster is the engine behind dister.Node: it runs the system shard
// (the catalog of groups and servers) and one shard per group on an
// internal/shard Host, keeps every server's shards in line with the catalog,
// and turns KV operations into proposals and reads with the consistency the
// caller asked for. The root package wraps it in the public API.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/health"
	"github.com/dister/dister/internal/peer"
	"github.com/dister/dister/internal/shard"
	"github.com/dister/dister/internal/tlsutil"
)

// Shard ids: the system shard, then the default group; created groups get
// ids from a counter in the catalog and never reuse one.
const (
	SystemShard    uint64 = 1
	DefaultShard   uint64 = 2
	DefaultGroup          = "default"
	firstFreeShard uint64 = 3
)

// Config is what the engine needs; the root package fills it from Options
// after validating them.
type Config struct {
	NodeID         uint64
	DataDir        string
	RaftAddr       string
	PeerAddr       string
	InitialMembers map[uint64]Peer // empty on a first start without Join = a cluster of this server alone
	Join           bool
	Servers        []string
	Shard          shard.Config // NodeID, DataDir, RaftAddr, Logger and callbacks are set by Open
	Logger         *slog.Logger
	// Metrics receives the engine's Prometheus series; nil = none.
	Metrics prometheus.Registerer
	// LeaseCheckpoint is how often a group leader records the remaining
	// TTL of its leases through Raft; 0 = 5 minutes.
	LeaseCheckpoint time.Duration
	// CheckDamping is how many consecutive health-check results must agree
	// before an instance's status changes; 0 = health.DefaultDamping (2).
	CheckDamping int
	// EnableScriptChecks lets this server run script and custom checks of
	// the groups it leads, when the cluster setting allows them too.
	EnableScriptChecks bool
	// CheckOutputBody: failing http checks show their response body.
	CheckOutputBody bool
	// CheckTargets: what checks may connect to (health.ParseTargets).
	CheckTargets []string
	// ReconcileInterval is the period of the catalog/membership pass that
	// also runs on every catalog change; 0 = 1s.
	ReconcileInterval time.Duration

	// TLS, if set, secures the peer API (server and client side) with
	// mutual TLS; the Raft transport's files are in Shard.TLS.
	TLS *tlsutil.Source
	// PeerAuth checks every call to this server's peer API (nil = none).
	PeerAuth peer.Authorizer
	// PeerDial is added to the options of this server's own peer calls
	// (its token).
	PeerDial []grpc.DialOption
}

// Peer is a server's two addresses.
type Peer = core.Peer

var _ core.Engine = (*Engine)(nil)

// Engine is one running server.
type Engine struct {
	cfg     Config
	log     *slog.Logger
	host    *shard.Host
	peerSrv *peer.Server
	peers   *peer.Client

	session uint64           // random per Engine: the first half of every dedup id
	ids     core.ProposerIDs // the second half, and the mark sent with it
	floors  sync.Map         // shard id -> *atomic.Int64, the session-read floor
	hook    atomic.Pointer[txnHook]
	// stepHook, when set (tests only), runs as a membership step starts.
	stepHook atomic.Pointer[func(ctx context.Context, step string, id uint64) error]
	// peerProposeHook, when set (tests only), runs as a client's Propose
	// (n = 1, many false) or ProposeMany (n commands) comes in; its error
	// is the call's.
	peerProposeHook atomic.Pointer[func(ctx context.Context, n int, many bool) error]
	metrics         *metrics

	mu       sync.Mutex
	groups   map[string]groupRecord // catalog as last applied locally
	servers  map[uint64]Peer        // likewise
	flags    map[uint64]serverFlags // likewise
	recorded bool                   // the catalog has this server's addresses
	lessors  map[uint64]*lessor     // groups this server leads
	settled  chan struct{}          // closed and replaced after each reconcile pass
	// catalogMoved is closed and replaced each time the local replica of
	// the system shard applies entries (see untilMoved in reconcile.go);
	// under movedMu, not mu, so the apply path takes no lock a slow
	// holder of mu keeps.
	movedMu      sync.Mutex
	catalogMoved chan struct{}
	removed      bool       // this server was removed from the cluster
	left         bool       // ...and has stopped its group replicas
	shardsMu     sync.Mutex // serializes starting group shards with leave

	wake chan struct{}   // buffered(1): asks the reconciler for a pass
	life context.Context // ends at Close; bounds the engine's own goroutines
	stop context.CancelFunc
	done chan struct{}

	hubs     sync.Map   // shard id -> *hub (watch fan-out)
	hubMu    sync.Mutex // serializes hub creation
	watchers sync.WaitGroup
	watchMu  sync.Mutex // orders starting watch goroutines against Close
	// hubHook, when set (tests only), runs before each hub advance.
	hubHook atomic.Pointer[func(shardID uint64)]
	// closeHook, when set (tests only), runs in Close once new calls are
	// refused, before Close waits for the loops and closes the host.
	closeHook atomic.Pointer[func()]
	// checkWriteHook, when set (tests only), runs before each write of a
	// checker with the instance key and the status it writes ("" for a
	// removal).
	checkWriteHook atomic.Pointer[func(key, status string)]

	leaseWake chan struct{} // buffered(1)
	leaseDone chan struct{}
	checkDone chan struct{}
	// restoreDone: closed when compactRestored (restore.go) ends.
	restoreDone chan struct{}
	prober      *health.Prober // shared by the checkers of every group led here
	notRun      atomic.Uint64  // probes of this server's checkers that could not run
	checkLoads  atomic.Uint64  // full reads of a group's instances by this server's checkers
	checkers    atomic.Int64   // service checkers running (see checkLoop)
	// reconciling: the reconcile loop runs (Open got that far); set before
	// Open returns, read by Close.
	reconciling bool
	closed      atomic.Bool
	once        sync.Once
	cerr        error
}

// identity is persisted in DataDir so that a restart needs no flags but
// DataDir, and a server that joined with NodeID 0 keeps the id it was given.
type identity struct {
	NodeID   uint64 `json:"node_id"`
	RaftAddr string `json:"raft_addr"`
	PeerAddr string `json:"peer_addr"`
}

const identityFile = "dister-node.json"

// Open starts the server: it does not wait for a leader (see WaitReady).
func Open(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	prober, err := newProber(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.ReconcileInterval == 0 {
		cfg.ReconcileInterval = time.Second
	}
	if cfg.LeaseCheckpoint == 0 {
		cfg.LeaseCheckpoint = defaultCheckpoint
	}
	// A first start that fails (a port in use, a join refused) must not
	// leave a half-made data dir behind: the next start, with other flags,
	// would find a Raft host directory that is not its own.
	existed, empty := dirState(cfg.DataDir)
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, errs.Mark(fmt.Errorf("create data dir: %w", err), errs.Invalid)
	}
	e := &Engine{
		cfg:          cfg,
		log:          cfg.Logger,
		peers:        peer.NewClient(append(peerDial(cfg.TLS), cfg.PeerDial...)...),
		groups:       map[string]groupRecord{},
		servers:      map[uint64]Peer{},
		lessors:      map[uint64]*lessor{},
		leaseWake:    make(chan struct{}, 1),
		leaseDone:    make(chan struct{}),
		checkDone:    make(chan struct{}),
		restoreDone:  make(chan struct{}),
		prober:       prober,
		settled:      make(chan struct{}),
		catalogMoved: make(chan struct{}),
		wake:         make(chan struct{}, 1),
		done:         make(chan struct{}),
	}
	e.life, e.stop = context.WithCancel(context.Background())
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("session id: %w", err)
	}
	e.session = binary.LittleEndian.Uint64(b[:]) | 1 // never 0: 0 means "no dedup"

	ok := false
	defer func() {
		if !ok {
			e.Close()
			if empty {
				removeCreated(cfg.DataDir, existed, e.log)
			}
		}
	}()
	id, restart, err := e.identify(ctx)
	if err != nil {
		return nil, err
	}
	e.cfg.NodeID = id
	e.log = e.log.With("node", id)

	sc := cfg.Shard
	sc.NodeID, sc.DataDir, sc.RaftAddr, sc.Logger = id, cfg.DataDir, cfg.RaftAddr, e.log
	sc.OnApply = func(shardID uint64) {
		if shardID == SystemShard {
			e.moveCatalog()
			e.kick()
		}
		e.kickHub(shardID)
	}
	sc.OnLeaderChange = func(shardID, _ uint64) {
		if shardID == SystemShard {
			e.kick()
		}
		if name, ok := e.shardNames()[shardID]; ok {
			e.metrics.leaderChange(name)
		}
	}
	if e.host, err = shard.NewHost(sc); err != nil {
		return nil, err
	}
	if e.metrics, err = newMetrics(e, cfg.Metrics); err != nil {
		return nil, fmt.Errorf("%v: %w", err, errs.Invalid)
	}
	if e.peerSrv, err = peer.Listen(cfg.PeerAddr, peer.Guard((*peerHandler)(e), e.peerAuthorizer()), e.log, peerServe(cfg.TLS)...); err != nil {
		return nil, err
	}
	initial, join := e.bootstrapMembers(restart)
	for _, s := range []uint64{SystemShard, DefaultShard} {
		if err := e.host.StartShard(s, initial, join); err != nil {
			return nil, err
		}
	}
	if !restart {
		if err := e.saveIdentity(); err != nil {
			return nil, err
		}
	}
	e.reconciling = true
	go e.reconcileLoop(e.life)
	go e.leaseLoop()
	go e.checkLoop()
	go e.compactRestored()
	ok = true
	return e, nil
}

// identify settles this server's id: from DataDir on a restart, from the
// cluster for a Join, or from the config.
func (e *Engine) identify(ctx context.Context) (id uint64, restart bool, err error) {
	path := filepath.Join(e.cfg.DataDir, identityFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		var idn identity
		if err := json.Unmarshal(data, &idn); err != nil || idn.NodeID == 0 {
			return 0, false, fmt.Errorf("%s is damaged (%v): %w", path, err, errs.Invalid)
		}
		if e.cfg.NodeID != 0 && e.cfg.NodeID != idn.NodeID {
			return 0, false, fmt.Errorf("NodeID %d does not match %d recorded in %s: %w",
				e.cfg.NodeID, idn.NodeID, path, errs.Invalid)
		}
		if idn.RaftAddr != e.cfg.RaftAddr {
			return 0, false, fmt.Errorf("RaftAddr %q differs from %q recorded in %s; a server keeps its Raft address: %w",
				e.cfg.RaftAddr, idn.RaftAddr, path, errs.Invalid)
		}
		return idn.NodeID, true, nil
	case !errors.Is(err, os.ErrNotExist):
		return 0, false, fmt.Errorf("read %s: %w", path, err)
	}
	id = e.cfg.NodeID
	if e.cfg.Join {
		// The cluster records a joining server at once; one that then cannot
		// start (a port in use) was a member that never ran, and a retry on
		// another port a second one.
		if err := canListen(e.cfg.RaftAddr, e.cfg.PeerAddr); err != nil {
			return 0, false, err
		}
		if id, err = e.joinThroughSeeds(ctx); err != nil {
			return 0, false, err
		}
	}
	if id == 0 {
		return 0, false, fmt.Errorf("NodeID is required on a first start without Join (no %s in %s): %w",
			identityFile, e.cfg.DataDir, errs.Invalid)
	}
	return id, false, nil
}

// canListen tells whether this server can listen on its addresses now,
// before it asks the cluster to record it.
func canListen(addrs ...string) error {
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return errs.Mark(fmt.Errorf("listen on %s before joining: %w", a, err), errs.Invalid)
		}
		l.Close()
	}
	return nil
}

// saveIdentity records the server's id once it has started, so a start
// that failed (a port in use, say) leaves nothing behind to contradict.
func (e *Engine) saveIdentity() error {
	path := filepath.Join(e.cfg.DataDir, identityFile)
	idn, _ := json.Marshal(identity{NodeID: e.cfg.NodeID, RaftAddr: e.cfg.RaftAddr, PeerAddr: e.cfg.PeerAddr})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, idn, 0o640); err != nil {
		return errs.Mark(fmt.Errorf("write %s: %w", tmp, err), errs.Invalid)
	}
	if err := os.Rename(tmp, path); err != nil {
		return errs.Mark(fmt.Errorf("write %s: %w", path, err), errs.Invalid)
	}
	return nil
}

// bootstrapMembers is what the system and default shards start with on a
// first start; on a restart the Host ignores it.
func (e *Engine) bootstrapMembers(restart bool) (map[uint64]string, bool) {
	if restart {
		return nil, false
	}
	if e.cfg.Join {
		return nil, true
	}
	m := map[uint64]string{}
	for id, p := range e.cfg.InitialMembers {
		m[id] = p.RaftAddr
	}
	if len(m) == 0 {
		m[e.cfg.NodeID] = e.cfg.RaftAddr
	}
	return m, false
}

// joinThroughSeeds asks the servers in cfg.Servers, in turn, to add this one.
func (e *Engine) joinThroughSeeds(ctx context.Context) (uint64, error) {
	req := peer.JoinRequest{NodeID: e.cfg.NodeID, RaftAddr: e.cfg.RaftAddr, PeerAddr: e.cfg.PeerAddr}
	var last error
	for {
		for _, s := range e.cfg.Servers {
			resp, err := e.peers.Join(ctx, s, req)
			if err == nil {
				return resp.NodeID, nil
			}
			if ctx.Err() != nil {
				return 0, fmt.Errorf("join through %v: %w (last: %v)", e.cfg.Servers, ctx.Err(), last)
			}
			// A seed that is being removed no longer runs the system shard
			// (GroupNotFound) or is closing: another seed may take the join.
			if !errors.Is(err, peer.ErrUnreachable) && !errors.Is(err, errs.NoQuorum) &&
				!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, errs.GroupNotFound) &&
				!errors.Is(err, errs.Closed) {
				return 0, fmt.Errorf("join through %s: %w", s, err)
			}
			last = err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("join through %v: %w (last: %v)", e.cfg.Servers, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// NodeID is this server's id.
func (e *Engine) NodeID() uint64 { return e.cfg.NodeID }

// Close stops the reconciler, the peer RPC and every shard. Idempotent.
func (e *Engine) Close() error {
	e.once.Do(func() {
		// Under watchMu: no watch goroutine is counted after this, so the
		// Wait below sees them all.
		e.watchMu.Lock()
		e.closed.Store(true)
		e.watchMu.Unlock()
		if e.host != nil {
			e.host.Refuse()
		}
		e.stop()
		if h := e.closeHook.Load(); h != nil {
			(*h)()
		}
		if e.reconciling {
			<-e.done
			<-e.leaseDone
			<-e.checkDone
			<-e.restoreDone
		}
		e.watchers.Wait()
		if e.peerSrv != nil {
			e.cerr = e.peerSrv.Close()
		}
		e.metrics.unregister()
		if e.host != nil {
			e.host.Close()
		}
		e.peers.Close()
	})
	return e.cerr
}

func (e *Engine) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// WaitReady returns once every shard this server runs, the system shard
// included, has a leader.
func (e *Engine) WaitReady(ctx context.Context) error {
	if err := e.host.WaitLeader(ctx, SystemShard); err != nil {
		return err
	}
	// Let the reconciler start the groups the committed catalog lists and
	// record this server's addresses (so Members lists it).
	first := true
	if err := e.waitSettled(ctx, func() bool {
		e.mu.Lock()
		done := !first && e.recorded
		e.mu.Unlock()
		first = false
		return done
	}); err != nil {
		return err
	}
	for _, s := range e.host.Shards() {
		if err := e.host.WaitLeader(ctx, s); err != nil {
			if ctx.Err() == nil && !e.closed.Load() && (!e.host.Running(s) || e.host.RemovedHere(s)) {
				continue // stopped meanwhile: a deleted group's shard, or this server left it
			}
			return err
		}
	}
	return nil
}

// Leader is the leader this server knows of for a group (0 = none).
func (e *Engine) Leader(ctx context.Context, group string) (uint64, error) {
	sid, err := e.resolve(ctx, group)
	if err != nil {
		return 0, err
	}
	id, _ := e.host.Leader(sid)
	return id, nil
}

// GroupState is what this server knows of one group it hosts.
type GroupState = core.GroupState

// GroupStates lists the groups this server hosts, sorted by name, without
// any network round trip.
func (e *Engine) GroupStates() []GroupState {
	var out []GroupState
	for sid, name := range e.shardNames() {
		if sid == SystemShard {
			continue
		}
		leader, _ := e.host.Leader(sid)
		out = append(out, GroupState{Name: name, Leader: leader, Revision: e.host.Revision(sid), Shard: sid})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// dirState reports whether dir exists, and whether it is absent or empty
// (nothing of a previous start in it).
func dirState(dir string) (existed, empty bool) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, true
	}
	return true, err == nil && len(entries) == 0
}

// removeCreated undoes a failed first start in dir, which was absent
// (removed again) or empty (emptied again).
func removeCreated(dir string, existed bool, log *slog.Logger) {
	if !existed {
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("a failed first start could not remove the data dir it created", "dir", dir, "err", err)
		}
		return
	}
	entries, _ := os.ReadDir(dir)
	for _, en := range entries {
		if err := os.RemoveAll(filepath.Join(dir, en.Name())); err != nil {
			log.Warn("a failed first start could not remove what it created in the data dir", "path", filepath.Join(dir, en.Name()), "err", err)
		}
	}
}
