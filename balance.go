package dister

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dister/dister/internal/balance"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/svc"
)

// MaxBalancedServices is how many services one Balancer keeps a watched
// local view of. Picks of further services read the registry each time
// (a network round trip and allocations, but the same answers).
const MaxBalancedServices = 4096

// Balancer picks one usable instance of a service. The first Pick of a
// service loads its instances and starts a watch that keeps a local view
// fresh until the Node closes; every later Pick reads that view only: no
// network round trip, no lock, no allocation.
//
// Usable means passing; only when no instance passes, warning instances
// are used. Critical instances, and instances not checked yet, never are.
// Within the usable tier, instances with priority 0 are standbys, picked
// only when every usable instance has priority 0.
type Balancer struct {
	s       *Services
	views   sync.Map // service name -> *view
	count   atomic.Int64
	sweeper sync.Once
	idle    time.Duration // the sweep period; 0 = viewIdle (tests shorten it)
}

type view struct {
	set   atomic.Pointer[balance.Set[Instance]]
	rr    balance.Counter // the round-robin position, kept across rebuilds
	ready chan struct{}   // closed once set is first stored, or err set
	err   error           // why the view ended before its first load
	// size is how many instances the service has (usable or not); used
	// tells whether a Pick read the view since the last sweep. A view of
	// no instances that nobody picked from is dropped by the sweep.
	size atomic.Int64
	used atomic.Bool
	stop context.CancelFunc
}

// viewIdle is the sweep period: a view of a service without instances
// that was not picked from for this long is dropped (Picks of names that
// never exist would otherwise keep a watch each until Close).
const viewIdle = time.Minute

// Balancer is the balancer of group "default".
func (n *Node) Balancer() *Balancer { return n.def.Balancer() }

// Balancer is the group's balancer. All calls for a group share one.
func (g *Group) Balancer() *Balancer {
	if b, ok := g.n.balancers.Load(g.name); ok {
		return b.(*Balancer)
	}
	b, _ := g.n.balancers.LoadOrStore(g.name, &Balancer{s: g.Services()})
	return b.(*Balancer)
}

// PickOption chooses the strategy of a Pick; the default is
// priority-weighted random (dister v1.5's).
type PickOption struct {
	strategy pickStrategy
	key      string
}

type pickStrategy uint8

const (
	strategyPriority pickStrategy = iota
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
// instance while the usable set is stable, and when an instance leaves only
// its keys move.
func HashKey(key string) PickOption { return PickOption{strategy: strategyHash, key: key} }

// Pick returns one usable instance of service, or ErrNoInstance. ctx bounds
// only the first Pick of a service (the load of its view).
func (b *Balancer) Pick(ctx context.Context, service string, opts ...PickOption) (Instance, error) {
	var o PickOption
	if len(opts) > 0 {
		o = opts[len(opts)-1]
	}
	set, err := b.set(ctx, service)
	if err != nil {
		return Instance{}, fmt.Errorf("pick %q: %w", service, err)
	}
	var inst Instance
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
		return Instance{}, fmt.Errorf("pick %q: %w", service, errs.NoInstance)
	}
	return inst, nil
}

// set returns the current view of service, starting it on first use.
func (b *Balancer) set(ctx context.Context, service string) (*balance.Set[Instance], error) {
	v, ok := b.views.Load(service)
	if !ok {
		if err := svc.ValidName("service name", service); err != nil {
			return nil, err
		}
		if b.count.Load() >= MaxBalancedServices {
			return b.read(ctx, service)
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
	if s := vw.set.Load(); s != nil {
		return s, nil
	}
	ctx, cancel := b.s.n.bound(ctx)
	defer cancel()
	select {
	case <-vw.ready:
		if s := vw.set.Load(); s != nil {
			return s, nil
		}
		return nil, vw.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.s.n.life.Done():
		return nil, errs.Closed
	}
}

// read builds a one-off set from the registry (over MaxBalancedServices).
func (b *Balancer) read(ctx context.Context, service string) (*balance.Set[Instance], error) {
	insts, err := b.s.Get(ctx, service)
	if err != nil {
		return nil, err
	}
	set := make(map[string]Instance, len(insts))
	for _, in := range insts {
		set[in.ID] = in
	}
	return buildSet(new(balance.Counter), set), nil
}

// start runs the goroutine that keeps v fresh until the Node closes,
// reloading after any watch failure; false when the Node is closed.
func (b *Balancer) start(service string, v *view) bool {
	n := b.s.n
	b.sweeper.Do(func() { n.spawn(b.sweep) })
	ctx, stop := context.WithCancel(n.life)
	v.stop = stop
	ok := n.spawn(func() {
		defer stop()
		var once sync.Once
		backoff := 50 * time.Millisecond
		for {
			err := b.s.follow(ctx, service, func(_ int64, set map[string]Instance) bool {
				v.size.Store(int64(len(set)))
				v.set.Store(buildSet(&v.rr, set))
				once.Do(func() { close(v.ready) })
				backoff = 50 * time.Millisecond
				return true
			})
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, errs.GroupNotFound) {
				// The group is gone (or never was): drop the view, so a
				// later Pick starts afresh and sees that.
				b.drop(service, v)
				once.Do(func() { v.err = err; close(v.ready) })
				return
			}
			n.log.Debug("balancer view of a service restarts", "service", service, "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	})
	if !ok {
		stop()
	}
	return ok
}

// drop forgets v (if it is still service's view) and stops its watch.
func (b *Balancer) drop(service string, v *view) {
	if b.views.CompareAndDelete(service, v) {
		b.count.Add(-1)
	}
	v.stop()
}

// sweep drops, every viewIdle, the views of services without instances
// that no Pick read since the previous sweep.
func (b *Balancer) sweep() {
	life := b.s.n.life
	idle := b.idle
	if idle == 0 {
		idle = viewIdle
	}
	t := time.NewTicker(idle)
	defer t.Stop()
	for {
		select {
		case <-life.Done():
			return
		case <-t.C:
		}
		b.views.Range(func(k, v any) bool {
			vw := v.(*view)
			if !vw.used.Swap(false) && vw.size.Load() == 0 && vw.set.Load() != nil {
				b.drop(k.(string), vw)
			}
			return true
		})
	}
}

// buildSet is the balancer's snapshot of an instance set.
func buildSet(rr *balance.Counter, set map[string]Instance) *balance.Set[Instance] {
	members := make([]balance.Member[Instance], 0, len(set))
	for id, in := range set {
		tier := balance.Unusable
		switch in.Status {
		case StatusPassing:
			tier = balance.Passing
		case StatusWarning:
			tier = balance.Warning
		}
		members = append(members, balance.Member[Instance]{ID: id, Priority: in.Priority, Tier: tier, Value: in})
	}
	return balance.NewShared(rr, members...)
}
