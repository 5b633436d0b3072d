package balance

import "math/bits"

// Pick chooses an eligible member with probability proportional to its
// weight. The caller supplies the randomness (math/rand/v2's Uint64 is
// lock-free and allocation-free) so that Pick is a pure function of rnd and
// the Set, which makes it testable and keeps generator state out of the Set.
func (s *Set[T]) Pick(rnd uint64) (T, bool) {
	n := len(s.cum)
	if n == 0 {
		var zero T
		return zero, false
	}
	// The high word of rnd*total is uniform on [0,total) for uniform rnd,
	// without the bias of a modulo or the cost of a division.
	r, _ := bits.Mul64(rnd, s.cum[n-1])
	// First index whose cumulative weight exceeds r; hand-rolled because a
	// closure passed to sort.Search is not guaranteed to stay off the heap.
	lo, hi := 0, n-1
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if s.cum[mid] > r {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return s.values[lo], true
}

// RoundRobin returns the eligible members in turn, ignoring priority. The
// position is the Set's Counter, shared with the Sets rebuilt after it
// (NewShared), so a change of the set does not restart the rotation.
func (s *Set[T]) RoundRobin() (T, bool) {
	n := uint64(len(s.values))
	if n == 0 {
		var zero T
		return zero, false
	}
	i := (s.rr.n.Add(1) - 1) % n
	return s.values[i], true
}
