// Package balance chooses one instance of a service from an immutable
// Set. A View applies the watch's changes to a service's members one at a
// time and publishes a new Set after each batch with an atomic pointer swap
// in the caller; every pick then reads only that snapshot, so it takes no
// lock, makes no network call and allocates nothing.
//
// Eligibility is decided when a Set is published and shared by all
// strategies:
//
//   - the candidate tier is the passing members if any pass, otherwise the
//     warning ones; unusable members are never chosen;
//   - within that tier, priority-0 members are standbys: they are eligible
//     only when every candidate has priority 0 (then they are equal, picked
//     uniformly), which also keeps the v1.5 rule "one candidate → it"
//     (docs/legacy.md).
//
// Pick weighs eligible members by priority, RoundRobin rotates through them
// evenly and HashKey maps a key to one of them by consistent hashing; the
// hash ring is built only when a HashKey is first asked of a View's Sets.
package balance

import (
	"cmp"
	"math"
	"slices"
	"sync/atomic"
)

// Tier is the health class of a member as the balancer sees it.
type Tier int

const (
	Passing  Tier = iota // health check passing
	Warning              // usable only while no member passes
	Unusable             // critical or not checked yet: never chosen
)

// Member is one instance offered to New or View.Put. Value is what picks
// return; a pointer to the service layer's instance record keeps Set small
// and lets every Set of a View share the one record.
type Member[T any] struct {
	ID       string // unique within the set; ties the hash ring to identity
	Priority int    // weight for Pick; 0 = standby, negative counts as 0
	Tier     Tier
	Value    T
}

// maxWeight bounds one priority so that the sum over any realistic number of
// members cannot overflow the uint64 cumulative table.
const maxWeight = math.MaxUint32

// Set is an immutable snapshot of one service's eligible members. It is
// safe for concurrent use; the mutable parts are the round-robin counter
// (atomic) and the hash table, built on first use. A Set must not be copied
// after first use.
type Set[T any] struct {
	values []T      // eligible members, sorted by ID so builds are order-independent
	ids    []string // parallel to values
	cum    []uint64 // cumulative weights, parallel to values; cum[len-1] is the total
	rr     *Counter
	ring   atomic.Pointer[ringTable] // nil until a HashKey needs it
	src    *ringSource               // where the table comes from; shared by a View's Sets
}

// Counter is a round-robin position that Sets published one after another
// share, so the rotation goes on across changes instead of restarting at
// the first member each time the instance set changes.
type Counter struct{ n atomic.Uint64 }

// New builds a Set. Members with a duplicate ID are dropped except the last
// one, matching "register replaces" in the service layer. New never fails:
// with no usable member the Set is empty and every pick reports ok=false.
func New[T any](members ...Member[T]) *Set[T] { return NewShared(new(Counter), members...) }

// NewShared is New with a round-robin position shared with other Sets.
func NewShared[T any](rr *Counter, members ...Member[T]) *Set[T] {
	v := NewView[T](rr)
	for _, m := range members {
		v.Put(m)
	}
	return v.Set()
}

// View is the mutable side of one service's balancer state: the members,
// kept sorted by ID within each usable tier, so that a change costs a
// binary search and a move of pointers, and publishing a Set copies the
// eligible tier once. It is not safe for concurrent use (one writer, the
// watch that feeds it); the Sets it publishes are.
type View[T any] struct {
	rr    *Counter
	byID  map[string]*entry[T]
	tiers [Unusable][]*entry[T] // Passing and Warning members, sorted by ID
	pos   [Unusable]int         // how many of each tier have Priority > 0
	src   *ringSource
}

type entry[T any] struct {
	Member[T]
}

// NewView returns an empty View whose Sets share rr (a new Counter if nil).
func NewView[T any](rr *Counter) *View[T] {
	if rr == nil {
		rr = new(Counter)
	}
	return &View[T]{rr: rr, byID: make(map[string]*entry[T]), src: new(ringSource)}
}

// Len is how many members the View holds, usable or not.
func (v *View[T]) Len() int { return len(v.byID) }

// IDs lists the IDs of all the View's members, usable or not.
func (v *View[T]) IDs() []string {
	out := make([]string, 0, len(v.byID))
	for id := range v.byID {
		out = append(out, id)
	}
	return out
}

// Put adds m or replaces the member with its ID.
func (v *View[T]) Put(m Member[T]) {
	if m.Tier < Passing || m.Tier > Unusable {
		m.Tier = Unusable
	}
	e, ok := v.byID[m.ID]
	if ok {
		if e.Tier == m.Tier {
			// Same place in the order: update in place (Sets published
			// before hold their own copy of the value).
			if e.Tier != Unusable {
				v.pos[e.Tier] += positive(m.Priority) - positive(e.Priority)
			}
			e.Member = m
			return
		}
		v.unlink(e)
		e.Member = m
	} else {
		e = &entry[T]{Member: m}
		v.byID[m.ID] = e
	}
	if e.Tier == Unusable {
		return
	}
	t := v.tiers[e.Tier]
	i, _ := slices.BinarySearchFunc(t, e.ID, byID[T])
	v.tiers[e.Tier] = slices.Insert(t, i, e)
	v.pos[e.Tier] += positive(e.Priority)
}

// Delete removes the member with id, if any.
func (v *View[T]) Delete(id string) {
	if e, ok := v.byID[id]; ok {
		v.unlink(e)
		delete(v.byID, id)
	}
}

// unlink takes e out of its tier's order.
func (v *View[T]) unlink(e *entry[T]) {
	if e.Tier == Unusable {
		return
	}
	t := v.tiers[e.Tier]
	if i, ok := slices.BinarySearchFunc(t, e.ID, byID[T]); ok {
		v.tiers[e.Tier] = slices.Delete(t, i, i+1)
	}
	v.pos[e.Tier] -= positive(e.Priority)
}

func byID[T any](e *entry[T], id string) int { return cmp.Compare(e.ID, id) }

func positive(p int) int {
	if p > 0 {
		return 1
	}
	return 0
}

// Set publishes the View's current state. Its cost is one pass over the
// eligible tier; the hash table is brought along only once a HashKey asked
// for one (then it is updated from the previous one, not rebuilt).
func (v *View[T]) Set() *Set[T] {
	s := &Set[T]{rr: v.rr, src: v.src}
	best := Passing
	if len(v.tiers[Passing]) == 0 {
		best = Warning
	}
	tier := v.tiers[best]
	anyWeight := v.pos[best] > 0
	n := len(tier)
	if anyWeight {
		n = v.pos[best]
	}
	if n > 0 {
		s.values = make([]T, 0, n)
		s.ids = make([]string, 0, n)
		s.cum = make([]uint64, 0, n)
	}
	var total uint64
	for _, e := range tier {
		w := weight(e.Priority, anyWeight)
		if w == 0 {
			continue
		}
		total += w
		s.values = append(s.values, e.Value)
		s.ids = append(s.ids, e.ID)
		s.cum = append(s.cum, total)
	}
	if v.src.wanted.Load() {
		s.ring.Store(v.src.table(s.ids))
	}
	return s
}

// weight maps a priority to a Pick weight: standbys weigh nothing while some
// candidate has a positive priority, and everyone weighs the same when none has.
func weight(priority int, anyWeight bool) uint64 {
	if !anyWeight {
		return 1
	}
	if priority <= 0 {
		return 0
	}
	return uint64(min(priority, maxWeight))
}

// Len reports how many members are eligible.
func (s *Set[T]) Len() int { return len(s.values) }

// IDs returns the eligible members' IDs in the Set's internal order. It is
// meant for tests and diagnostics; the slice must not be modified.
func (s *Set[T]) IDs() []string { return s.ids }

// Values returns the eligible members' values in the order of IDs; the
// slice must not be modified.
func (s *Set[T]) Values() []T { return s.values }

// Hashed reports whether the Set carries a hash table (tests: a View whose
// Sets nobody hashed builds none).
func (s *Set[T]) Hashed() bool { return s.ring.Load() != nil }
