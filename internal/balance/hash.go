package balance

import (
	"cmp"
	"encoding/binary"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// Ring parameters, buraksezer/consistent's Config: partitions are assigned
// to members with bounded loads (no member gets more than Load × the
// average); a key maps to a partition by hash modulo the partition count.
// The partition count is fixed (it does not follow the eligible count), so
// a key's partition never changes and a member joining or leaving moves
// only the partitions whose owner changes: about 1/n of keys
// (TestHashKeyCrossing256; it used to double when the count crossed 256,
// moving 9,963 of 10,000 keys). It must be at least the member count (the
// algorithm has no room otherwise); larger sets hash over their first
// Partitions members by ID (see table). Memory while hashed: about 400
// bytes per member (its 20 ring points and slot) and 4 bytes per partition
// (64 KiB) for each published Set's table (BenchmarkViewMemory).
const (
	Partitions        = 16381 // prime, so keys spread evenly
	replicationFactor = 20
	loadFactor        = 1.25
)

// ringTable is a precomputed partition → member table for one Set.
// consistent.LocateKey is not used on the pick path: it needs a []byte (an
// allocation for a string key), calls the hasher through an interface and
// takes a read lock. Hashing the key here with the same hasher and reading
// the table gives the same answer with no allocation and no lock.
type ringTable struct {
	owner []int32 // index into Set.values, by partition
}

// ringName is a member's name on the ring: its ID and a NUL. The library
// names a member's replicas by appending the replica number to the name,
// so without the NUL "i-1" (replica 10) and "i-11" (replica 0) would share
// a point (in the library, removing one then left the other's point
// without an owner: a nil dereference).
func ringName(id string) string { return id + "\x00" }

// ringSource keeps one ring for all the Sets of a View, so that a change
// adds or removes the ring points of the members that changed instead of
// building the ring anew.
//
// The ring is buraksezer/consistent's — the same points (xxhash of the
// member's name and replica number), the same bounded-load assignment of
// partitions, so the same owner for every key (TestRingMatchesLibrary) —
// but kept here as a sorted slice: the library sorts its whole ring once
// per member added (a build of 10,000 members took 192 s) and redistributes
// after each Add or Remove; here a build is one sort and a change one merge
// and one distribution.
type ringSource struct {
	wanted atomic.Bool // a HashKey asked for a table: keep one from now on
	mu     sync.Mutex
	points []ringPoint      // sorted by hash
	slot   map[string]int32 // ring name -> its points' slot, for members with points
	free   []int32          // slots to reuse
	slots  int32            // slots handed out
	last   *ringTable       // the table for the members in slot
}

type ringPoint struct {
	hash uint64
	slot int32 // the member's slot in its ringSource
}

// partitionHashes are the ring positions of the partitions, as the
// library computes them (xxhash of the partition number, 8 bytes little
// endian), sorted by position.
var partitionHashes = sync.OnceValue(func() []partitionHash {
	hs := make([]partitionHash, Partitions)
	var b [8]byte
	for p := range hs {
		binary.LittleEndian.PutUint64(b[:], uint64(p))
		hs[p] = partitionHash{hash: xxhash.Sum64(b[:]), part: int32(p)}
	}
	slices.SortFunc(hs, func(a, b partitionHash) int { return cmp.Compare(a.hash, b.hash) })
	return hs
})

type partitionHash struct {
	hash uint64
	part int32
}

// memberPoints are the ring points of one member, named as the library
// names replicas: the member's name followed by the replica number.
func memberPoints(name string, slot int32, out []ringPoint) []ringPoint {
	for i := range replicationFactor {
		out = append(out, ringPoint{hash: xxhash.Sum64String(name + strconv.Itoa(i)), slot: slot})
	}
	return out
}

func byHash(a, b ringPoint) int { return cmp.Compare(a.hash, b.hash) }

// table brings the ring to exactly ids and returns its table, indexing ids.
func (r *ringSource) table(ids []string) *ringTable {
	if len(ids) == 0 {
		return &ringTable{}
	}
	if len(ids) > Partitions {
		ids = ids[:Partitions]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.slot == nil {
		r.slot = make(map[string]int32, len(ids))
	}
	// index: slot -> position in ids (-1: not a member now).
	index := make([]int32, r.slots, r.slots+int32(len(ids)))
	for i := range index {
		index[i] = -1
	}
	var added []ringPoint
	for i, id := range ids {
		name := ringName(id)
		sl, ok := r.slot[name]
		if !ok {
			if n := len(r.free); n > 0 {
				sl, r.free = r.free[n-1], r.free[:n-1]
			} else {
				sl = r.slots
				r.slots++
				index = append(index, -1)
			}
			r.slot[name] = sl
			added = memberPoints(name, sl, added)
		}
		index[sl] = int32(i)
	}
	// Points of members gone go; points of members new are sorted and
	// merged in.
	gone := false
	for name, sl := range r.slot {
		if index[sl] < 0 {
			delete(r.slot, name)
			gone = true
		}
	}
	if gone {
		r.points = slices.DeleteFunc(r.points, func(p ringPoint) bool { return index[p.slot] < 0 })
		r.free = r.free[:0]
		for sl, pos := range index {
			if pos < 0 {
				r.free = append(r.free, int32(sl))
			}
		}
	}
	if !gone && len(added) == 0 && r.last != nil {
		// The same members, so the same positions (ids are sorted): a
		// change that left the candidates as they were costs nothing here.
		return r.last
	}
	if len(added) > 0 {
		slices.SortFunc(added, byHash)
		r.points = merge(r.points, added)
	}
	r.last = &ringTable{owner: distribute(r.points, index, len(ids))}
	return r.last
}

// merge merges two slices sorted by hash.
func merge(a, b []ringPoint) []ringPoint {
	out := make([]ringPoint, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if b[0].hash < a[0].hash {
			out, b = append(out, b[0]), b[1:]
		} else {
			out, a = append(out, a[0]), a[1:]
		}
	}
	return append(append(out, a...), b...)
}

// distribute assigns every partition to a member as the library's
// distributePartitions does: the first member at or after the partition's
// position on the ring whose load is below the average load (the
// partition count over the member count, rounded down, times the load
// factor, rounded up). index maps a point's slot to the member's position.
func distribute(points []ringPoint, index []int32, n int) []int32 {
	avg := int32(math.Ceil(float64(Partitions/n) * loadFactor))
	loads := make([]int32, n)
	owner := make([]int32, Partitions)
	// Where each partition's walk starts: the first point at or after it
	// (one merge of the sorted partitions with the ring, instead of a
	// binary search each).
	start := make([]int32, Partitions)
	j := 0
	for _, ph := range partitionHashes() {
		for j < len(points) && points[j].hash < ph.hash {
			j++
		}
		start[ph.part] = int32(j)
	}
	// The walks, in partition order: each partition's owner depends on the
	// loads the partitions before it left.
	for part := range owner {
		idx := int(start[part])
		for range len(points) {
			if idx >= len(points) {
				idx = 0
			}
			m := index[points[idx].slot]
			if loads[m] < avg {
				loads[m]++
				owner[part] = m
				break
			}
			idx++
		}
	}
	return owner
}

// HashKey returns the member that owns key on the consistent-hash ring, so a
// key sticks to its member while the set is stable and, when one of n members
// joins or leaves, only about 1/n of keys move. The first HashKey of a
// View's Sets builds the ring (and allocates); from then on the View keeps
// it up to date as it publishes Sets, and HashKey allocates nothing.
func (s *Set[T]) HashKey(key string) (T, bool) {
	t := s.ring.Load()
	if t == nil {
		// From now on the View keeps a ring, also while it is empty.
		if !s.src.wanted.Load() {
			s.src.wanted.Store(true)
		}
		if len(s.values) == 0 {
			var zero T
			return zero, false
		}
		t = s.src.table(s.ids)
		s.ring.Store(t)
	}
	if len(t.owner) == 0 {
		var zero T
		return zero, false
	}
	// Same hash and modulo as consistent.FindPartitionID.
	part := xxhash.Sum64String(key) % Partitions
	return s.values[t.owner[part]], true
}
