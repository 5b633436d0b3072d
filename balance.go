package dister

import (
	"context"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dister/dister/internal/balance"
	"github.com/dister/dister/internal/cluster"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/svc"
)

// MaxBalancedServices is how many services one Balancer (so one group on
// one Node) keeps a watched local view of. Picks of further services read
// the registry each time (allocations, but the same answers, ErrStaleView
// included: they read no older than the Balancer's latest leader
// confirmation). A view holds one copy of each of its service's instances
// (shared by every snapshot it publishes) and about 120 bytes of tables
// per instance; a view that HashKey used also holds the hash ring (see
// docs/balancing.md). Views that no Pick read for ten minutes are
// dropped, so memory follows the services in use.
const MaxBalancedServices = 4096

// Balancer picks one usable instance of a service. The first Pick of a
// service loads its instances and starts a watch that keeps a local view
// fresh; every later Pick reads that view only: no network round trip, no
// lock, no allocation.
//
// Usable means passing; only when no instance passes, warning instances
// are used. Critical instances, and instances not checked yet, never are.
// Within the usable tier, instances with priority 0 are standbys, picked
// only when every usable instance has priority 0 (then uniformly).
//
// A view that has not heard from the cluster for Options.BalancerStaleAfter
// fails Picks with ErrStaleView; Fresh() reads the registry instead.
type Balancer struct {
	s       *Services
	views   sync.Map // service name -> *view
	count   atomic.Int64
	sweeper sync.Once
	idle    time.Duration // the sweep period; 0 = viewIdle (tests shorten it)
	epoch   time.Time     // views' clocks count from here (monotonic)
	// spare are the round-robin positions of the services without a view
	// (Fresh picks, and those past MaxBalancedServices), by a hash of the
	// name: bounded memory, and a rotation that goes on from Pick to Pick.
	spare [256]balance.Counter
	seed  maphash.Seed
	// confirms are the latest two leader-confirmed revisions and when
	// they were read: a view that has delivered everything up to one of
	// them was current at that time (see confirm).
	confirms [2]atomic.Pointer[confirmation]
}

type confirmation struct {
	rev int64
	at  int64 // since epoch
}

type view struct {
	set   atomic.Pointer[balance.Set[*Instance]]
	rr    balance.Counter // the round-robin position, kept across changes
	ready chan struct{}   // closed once set is first stored, or err set
	err   error           // why the view ended before its first load
	// heard is when (since the Balancer's epoch) the view last knew itself
	// current: its load, an event, or a progress note at a confirmed
	// revision.
	heard atomic.Int64
	// stale is set by the sweep once heard is older than the bound and
	// cleared when the view hears again: Pick reads one flag instead of
	// the clock (a clock read costs more than the rest of a Pick on some
	// machines).
	stale atomic.Bool
	// size is how many instances the service has (usable or not); used
	// tells whether a Pick read the view since the last sweep.
	size atomic.Int64
	used atomic.Bool
	idle int // sweeps in a row without a Pick; the sweep's alone
	stop context.CancelFunc
}

// viewIdle is the sweep period: a view of a service without instances
// that was not picked from for this long is dropped, and any view after
// idleSweeps such periods (its watch and memory; the next Pick loads it
// again).
const (
	viewIdle   = time.Minute
	idleSweeps = 10
)

// Balancer is the balancer of group "default".
func (n *Node) Balancer() *Balancer { return n.def.Balancer() }

// Balancer is the group's balancer. All calls for a group share one.
func (g *Group) Balancer() *Balancer {
	if b, ok := g.n.balancers.Load(g.name); ok {
		return b.(*Balancer)
	}
	b, _ := g.n.balancers.LoadOrStore(g.name, &Balancer{s: g.Services(), epoch: time.Now(), seed: maphash.MakeSeed()})
	return b.(*Balancer)
}

// PickOption chooses the strategy of a Pick (the default is
// priority-weighted random, dister v1.5's; of several strategies the last
// counts), or how it reads (Fresh).
type PickOption struct {
	strategy pickStrategy
	key      string
	fresh    bool
}

type pickStrategy uint8

const (
	strategyNone pickStrategy = iota
	strategyPriority
	strategyRoundRobin
	strategyHash
)

// PriorityWeighted picks at random with probability proportional to
// Priority (the default).
func PriorityWeighted() PickOption { return PickOption{strategy: strategyPriority} }

// RoundRobin rotates through the usable instances evenly, ignoring
// priority (standbys still wait).
func RoundRobin() PickOption { return PickOption{strategy: strategyRoundRobin} }

// HashKey picks by consistent hashing of key: the same key gets the same
// instance while the usable set is stable, and when an instance joins or
// leaves only about 1/n of keys move.
func HashKey(key string) PickOption { return PickOption{strategy: strategyHash, key: key} }

// Fresh reads the service's instances linearizably (a round trip to the
// group's leader, and allocations) instead of from the local view, and
// picks among them by the same rules: for a caller that must not act on
// an old view, or one that got ErrStaleView. HashKey under Fresh builds
// the hash ring for this Pick alone.
func Fresh() PickOption { return PickOption{fresh: true} }

// Pick returns one usable instance of service, or ErrNoInstance, or
// ErrStaleView when its view stopped hearing from the cluster. ctx bounds
// only the first Pick of a service (the load of its view), and Fresh ones.
func (b *Balancer) Pick(ctx context.Context, service string, opts ...PickOption) (Instance, error) {
	var o PickOption
	for _, op := range opts {
		if op.fresh {
			o.fresh = true
		} else if op.strategy != strategyNone {
			o.strategy, o.key = op.strategy, op.key
		}
	}
	var set *balance.Set[*Instance]
	var err error
	if o.fresh {
		set, err = b.fresh(ctx, service)
	} else {
		set, err = b.set(ctx, service)
	}
	b.s.n.shareCPU(cluster.Stale) // a view in memory
	if err != nil {
		return Instance{}, fmt.Errorf("pick %s: %w", quoteKey(service), err)
	}
	var inst *Instance
	var ok bool
	switch o.strategy {
	case strategyRoundRobin:
		inst, ok = set.RoundRobin()
	case strategyHash:
		inst, ok = set.HashKey(o.key)
	default:
		inst, ok = set.Pick(rand.Uint64())
	}
	if !ok {
		return Instance{}, fmt.Errorf("pick %s: %w", quoteKey(service), errs.NoInstance)
	}
	return *inst, nil
}

// now is the Balancer's clock: monotonic, without allocating.
func (b *Balancer) now() int64 { return int64(time.Since(b.epoch)) }

// set returns the current view of service, starting it on first use.
func (b *Balancer) set(ctx context.Context, service string) (*balance.Set[*Instance], error) {
	v, ok := b.views.Load(service)
	if !ok {
		if err := svc.ValidName("service name", service); err != nil {
			return nil, err
		}
		if b.count.Load() >= MaxBalancedServices {
			return b.unwatched(ctx, service)
		}
		nv := &view{ready: make(chan struct{})}
		var loaded bool
		if v, loaded = b.views.LoadOrStore(service, nv); !loaded {
			b.count.Add(1)
			if !b.start(service, nv) {
				return nil, errs.Closed
			}
		}
	}
	vw := v.(*view)
	if !vw.used.Load() {
		vw.used.Store(true)
	}
	s := vw.set.Load()
	if s == nil {
		ctx, cancel := b.s.n.bound(ctx)
		defer cancel()
		select {
		case <-vw.ready:
			if s = vw.set.Load(); s == nil {
				return nil, vw.err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-b.s.n.life.Done():
			return nil, errs.Closed
		}
	}
	if vw.stale.Load() {
		return nil, errs.StaleView
	}
	return s, nil
}

// read builds a one-off set from the registry (over MaxBalancedServices).
func (b *Balancer) read(ctx context.Context, service string, opts ...QueryOption) (*balance.Set[*Instance], error) {
	insts, err := b.s.Get(ctx, service, opts...)
	if err != nil {
		return nil, err
	}
	rr := &b.spare[maphash.String(b.seed, service)%uint64(len(b.spare))]
	if v, ok := b.views.Load(service); ok {
		rr = &v.(*view).rr // keep the rotation of the view
	}
	bv := balance.NewView[*Instance](rr)
	for i := range insts {
		bv.Put(member(&insts[i]))
	}
	return bv.Set(), nil
}

// unwatched reads service's instances for a Pick past the view bound by
// the views' rule: no newer than the latest revision confirmed with the
// leader, and only while that confirmation is within the bound (a
// server's own replica answers a plain read even when it is cut off).
func (b *Balancer) unwatched(ctx context.Context, service string) (*balance.Set[*Instance], error) {
	bound := b.s.n.staleAfter
	if bound == 0 {
		return b.read(ctx, service)
	}
	c := b.confirms[0].Load()
	if c == nil {
		// Not confirmed yet (the first third of the bound): ask the leader.
		return b.read(ctx, service, WithRead(Linearizable()))
	}
	if b.now()-c.at > int64(bound) {
		return nil, errs.StaleView
	}
	return b.read(ctx, service, WithRead(MinRevision(c.rev)))
}

// fresh reads service's instances linearizably (Fresh).
func (b *Balancer) fresh(ctx context.Context, service string) (*balance.Set[*Instance], error) {
	if err := svc.ValidName("service name", service); err != nil {
		return nil, err
	}
	return b.read(ctx, service, WithRead(Linearizable()))
}

// member is how the balancer sees an instance.
func member(in *Instance) balance.Member[*Instance] {
	tier := balance.Unusable
	switch in.Status {
	case StatusPassing:
		tier = balance.Passing
	case StatusWarning:
		tier = balance.Warning
	}
	return balance.Member[*Instance]{ID: in.ID, Priority: in.Priority, Tier: tier, Value: in}
}
