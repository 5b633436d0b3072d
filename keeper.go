package dister

import (
	"context"
	"errors"
	"hash/maphash"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dister/dister/internal/cluster"
	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/svc"
)

// The keeper keeps this Node's leases alive: those granted with AutoRenew
// and those of ttl instances registered without ExternalHeartbeat. Each
// lease is renewed every third of its TTL. Renewals go in batches: on each
// tick, one KeepAliveBatch per group carries every lease of the group that
// is due (one RPC and one leadership confirmation at the leader, however
// many leases), and each group's batch runs on its own goroutine, so a
// group whose leader is slow or gone delays no other group's leases.
//
// A lease found lost while the Node runs (it expired during a partition
// longer than its TTL, or was revoked behind the Node's back): a plain
// AutoRenew lease is dropped (its keys are gone with it); a ttl instance's
// record is read, and if it is still the one this Node registered (same
// lease) it is registered again with a new lease. An instance deregistered
// on purpose (its record gone) or registered again by someone else (another
// lease) is left as it is.
type keeper struct {
	n    *Node
	seed maphash.Seed

	mu     sync.Mutex
	groups map[string]*keptGroup
	// stripes order, per instance, this Node's Register and Deregister of
	// it with the keeper's recovery of it.
	stripes [64]sync.Mutex
	// batches counts KeepAliveBatch calls (tests read it).
	batches int64
	// renewed, when set (tests only), runs after each KeepAliveBatch call
	// with its group and error, before the keeper acts on the answer.
	renewed atomic.Pointer[func(group string, err error)]
}

type keptGroup struct {
	leases map[int64]*kept
	// insts maps an instance ("service/id") this Node keeps alive to its
	// current lease; while a lost lease is being recovered it still names
	// the lost one, and Deregister deletes it.
	insts map[string]int64
	busy  bool // a batch of this group is in flight
}

type kept struct {
	ttl  time.Duration
	next time.Time
	inst *svc.Record // a ttl instance as this Node registered it; nil = a plain lease
}

// keeperTick is how often the keeper looks for due leases. A lease is due
// every third of its TTL (at least MinLeaseTTL/3), so a tick well under
// that keeps renewals on time without busy work.
const keeperTick = 100 * time.Millisecond

func newKeeper(n *Node) *keeper {
	return &keeper{n: n, seed: maphash.MakeSeed(), groups: map[string]*keptGroup{}}
}

func instKey(service, id string) string { return service + "/" + id }

// stripe is the lock ordering an instance's registrations and recovery.
func (k *keeper) stripe(group, service, id string) *sync.Mutex {
	return &k.stripes[maphash.String(k.seed, group+"/"+service+"/"+id)%uint64(len(k.stripes))]
}

func (k *keeper) group(name string) *keptGroup {
	g := k.groups[name]
	if g == nil {
		g = &keptGroup{leases: map[int64]*kept{}, insts: map[string]int64{}}
		k.groups[name] = g
	}
	return g
}

// add keeps lease id of group alive from now on; inst, for a ttl instance,
// is what to register again should the lease be lost.
func (k *keeper) add(group string, id int64, ttl time.Duration, inst *svc.Record) {
	k.mu.Lock()
	defer k.mu.Unlock()
	g := k.group(group)
	if inst != nil {
		key := instKey(inst.Service, inst.ID)
		if old, ok := g.insts[key]; ok && old != id {
			delete(g.leases, old)
		}
		g.insts[key] = id
	}
	g.leases[id] = &kept{ttl: ttl, next: time.Now().Add(ttl / 3), inst: inst}
}

// remove stops keeping lease id alive.
func (k *keeper) remove(group string, id int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if g := k.groups[group]; g != nil {
		g.drop(id)
	}
}

// drop stops keeping lease id alive, and the instance it kept; k.mu held.
func (g *keptGroup) drop(id int64) {
	if kp := g.leases[id]; kp != nil && kp.inst != nil {
		if key := instKey(kp.inst.Service, kp.inst.ID); g.insts[key] == id {
			delete(g.insts, key)
		}
	}
	delete(g.leases, id)
}

// removeInstance stops keeping an instance alive (deregistered, or
// registered again without a lease of this Node's).
func (k *keeper) removeInstance(group, service, id string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if g := k.groups[group]; g != nil {
		key := instKey(service, id)
		if lease, ok := g.insts[key]; ok {
			delete(g.leases, lease)
			delete(g.insts, key)
		}
	}
}

// run renews due leases until the Node closes.
func (k *keeper) run() {
	t := time.NewTicker(keeperTick)
	defer t.Stop()
	for {
		select {
		case <-k.n.life.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		k.mu.Lock()
		for name, g := range k.groups {
			if len(g.leases) == 0 && len(g.insts) == 0 {
				delete(k.groups, name)
				continue
			}
			if g.busy {
				continue
			}
			if !g.anyDue(now) {
				continue
			}
			// Leases due soon ride along with the due ones (a sixth of
			// a TTL early), so a group's renewals settle into one batch
			// per third of a TTL however their registrations were spread.
			var due []int64
			timeout := time.Duration(0)
			for id, kp := range g.leases {
				if !now.Before(kp.next.Add(-kp.ttl / 6)) {
					due = append(due, id)
					if timeout == 0 || kp.ttl/3 < timeout {
						timeout = kp.ttl / 3
					}
				}
			}
			if len(due) == 0 {
				continue
			}
			g.busy = true
			if !k.n.spawn(func() { k.renew(name, g, due, timeout) }) {
				g.busy = false
			}
		}
		k.mu.Unlock()
	}
}

// forget stops keeping the leases of g in lists alive, and the
// instances they kept.
func (k *keeper) forget(g *keptGroup, lists ...[]int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, ids := range lists {
		for _, id := range ids {
			g.drop(id)
		}
	}
}

func (g *keptGroup) anyDue(now time.Time) bool {
	for _, kp := range g.leases {
		if !now.Before(kp.next) {
			return true
		}
	}
	return false
}

// renew sends one group's due leases, in batches of at most
// core.MaxKeepAliveBatch, and acts on the answers.
func (k *keeper) renew(group string, g *keptGroup, due []int64, timeout time.Duration) {
	defer func() {
		k.mu.Lock()
		g.busy = false
		k.mu.Unlock()
	}()
	for len(due) > 0 {
		ids := due[:min(len(due), core.MaxKeepAliveBatch)]
		due = due[len(ids):]
		ctx, cancel := context.WithTimeout(k.n.life, max(timeout, time.Second))
		rs, err := k.n.e.KeepAliveBatch(ctx, group, ids)
		cancel()
		if h := k.renewed.Load(); h != nil {
			(*h)(group, err)
		}
		k.mu.Lock()
		k.batches++
		k.mu.Unlock()
		if err != nil {
			if errors.Is(err, errs.GroupNotFound) {
				// The group is gone, and with it every lease this batch
				// and the rest of due carried. Not the group's entry:
				// the group may have been created again meanwhile, and a
				// lease granted in the new one must stay kept.
				k.forget(g, ids, due)
				return
			}
			// Due again at the next tick.
			k.n.log.Debug("leases not renewed", "group", group, "leases", len(ids), "err", err)
			continue
		}
		now := time.Now()
		var lost []*kept
		var lostIDs []int64
		k.mu.Lock()
		for i, id := range ids {
			kp := g.leases[id]
			if kp == nil {
				continue // removed meanwhile
			}
			switch {
			case rs[i].Err == nil:
				kp.next = now.Add(kp.ttl / 3)
			case errors.Is(rs[i].Err, errs.LeaseNotFound):
				delete(g.leases, id)
				if kp.inst != nil {
					lost, lostIDs = append(lost, kp), append(lostIDs, id)
				}
			}
		}
		k.mu.Unlock()
		for i, kp := range lost {
			id := lostIDs[i]
			k.n.spawn(func() { k.recover(group, kp, id) })
		}
	}
}

// recover registers a ttl instance again after its lease was lost, unless
// it was deregistered or registered again meanwhile. It retries until the
// Node closes.
func (k *keeper) recover(group string, kp *kept, lost int64) {
	inst := kp.inst
	backoff := 100 * time.Millisecond
	for {
		done, err := k.recoverOnce(group, inst, lost)
		if done {
			return
		}
		k.n.log.Debug("ttl instance not registered again yet", "service", inst.Service, "id", inst.ID, "err", err)
		select {
		case <-k.n.life.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (k *keeper) recoverOnce(group string, inst *svc.Record, lost int64) (bool, error) {
	mu := k.stripe(group, inst.Service, inst.ID)
	mu.Lock()
	defer mu.Unlock()
	key := instKey(inst.Service, inst.ID)
	k.mu.Lock()
	cur, ok := k.group(group).insts[key]
	k.mu.Unlock()
	if !ok || cur != lost {
		return true, nil // deregistered or registered again through this Node
	}
	forget := func() {
		k.mu.Lock()
		if g := k.groups[group]; g != nil && g.insts[key] == lost {
			delete(g.insts, key)
		}
		k.mu.Unlock()
	}
	ctx, cancel := k.n.bound(k.n.life)
	defer cancel()
	got, err := k.n.e.Get(ctx, group, svc.InstanceKey(inst.Service, inst.ID), cluster.ReadOpts{Consistency: cluster.Linearizable})
	if err != nil {
		if errors.Is(err, errs.GroupNotFound) || errors.Is(err, errs.Closed) {
			forget()
			return true, err
		}
		return false, err
	}
	if !got.Found {
		forget() // deregistered (or removed as critical): stays gone
		return true, nil
	}
	stored, err := svc.Decode(got.KV.Value)
	if err != nil || stored.Lease != lost {
		forget() // registered again by someone else
		return true, err
	}
	r := cloneRecord(inst)
	if err := k.n.e.Register(ctx, group, r); err != nil {
		if errors.Is(err, errs.Invalid) || errors.Is(err, errs.GroupNotFound) {
			forget()
			return true, err
		}
		return false, err
	}
	k.add(group, r.Lease, inst.Check.TTL, inst)
	k.n.log.Info("ttl instance registered again after its lease was lost", "group", group,
		"service", inst.Service, "id", inst.ID)
	return true, nil
}

func cloneRecord(r *svc.Record) *svc.Record {
	c := *r
	c.Tags, c.Meta, c.Extra = slices.Clone(r.Tags), maps.Clone(r.Meta), slices.Clone(r.Extra)
	return &c
}
