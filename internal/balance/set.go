// Package balance chooses one instance of a service from an immutable,
// precomputed Set. The service layer rebuilds a Set whenever a watch reports
// a change to the instance set and publishes it with an atomic pointer swap;
// every pick then reads only that snapshot, so it takes no lock, makes no
// network call and allocates nothing.
//
// Eligibility is decided once, in New, and shared by all strategies:
//
//   - the candidate tier is the passing members if any pass, otherwise the
//     warning ones; unusable members are never chosen;
//   - within that tier, priority-0 members are standbys: they are eligible
//     only when every candidate has priority 0 (then they are equal), which
//     also keeps the v1.5 rule "one candidate → it" (docs/legacy.md).
//
// Pick weighs eligible members by priority, RoundRobin rotates through them
// evenly and HashKey maps a key to one of them by consistent hashing.
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

// Member is one instance offered to New. Value is what picks return; a
// pointer to the service layer's instance record keeps Set small and lets the
// caller skip any lookup after a pick.
type Member[T any] struct {
	ID       string // unique within the set; ties the hash ring to identity
	Priority int    // weight for Pick; 0 = standby, negative counts as 0
	Tier     Tier
	Value    T
}

// maxWeight bounds one priority so that the sum over any realistic number of
// members cannot overflow the uint64 cumulative table.
const maxWeight = math.MaxUint32

// Set is an immutable snapshot of one service's instances. It is safe for
// concurrent use; the only mutable field is the round-robin counter, which is
// atomic. A Set must not be copied after first use.
type Set[T any] struct {
	values []T      // eligible members, sorted by ID so builds are order-independent
	ids    []string // parallel to values
	cum    []uint64 // cumulative weights, parallel to values; cum[len-1] is the total
	rr     *Counter
	ring   ring // partition → index into values
}

// Counter is a round-robin position that Sets built one after another
// share (NewShared), so the rotation goes on across rebuilds instead of
// restarting at the first member each time the instance set changes.
type Counter struct{ n atomic.Uint64 }

// New builds a Set. Members with a duplicate ID are dropped except the last
// one, matching "register replaces" in the service layer. New never fails:
// with no usable member the Set is empty and every pick reports ok=false.
func New[T any](members ...Member[T]) *Set[T] { return NewShared(new(Counter), members...) }

// NewShared is New with a round-robin position shared with other Sets.
func NewShared[T any](rr *Counter, members ...Member[T]) *Set[T] {
	last := make(map[string]int, len(members))
	for i, m := range members {
		last[m.ID] = i
	}
	best := Unusable
	for i, m := range members {
		if last[m.ID] == i && m.Tier < best {
			best = m.Tier
		}
	}
	s := &Set[T]{rr: rr}
	if best == Unusable {
		return s
	}

	var tier []Member[T]
	anyWeight := false
	for i, m := range members {
		if last[m.ID] != i || m.Tier != best {
			continue
		}
		tier = append(tier, m)
		if m.Priority > 0 {
			anyWeight = true
		}
	}
	// Sorting makes the tables, and so the answer for a given rnd or key,
	// independent of the order the watch delivered the instances in.
	slices.SortFunc(tier, func(a, b Member[T]) int { return cmp.Compare(a.ID, b.ID) })

	var total uint64
	for _, m := range tier {
		w := weight(m.Priority, anyWeight)
		if w == 0 {
			continue
		}
		total += w
		s.values = append(s.values, m.Value)
		s.ids = append(s.ids, m.ID)
		s.cum = append(s.cum, total)
	}
	s.ring = buildRing(s.ids)
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
