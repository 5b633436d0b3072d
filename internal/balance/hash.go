package balance

import (
	"sync"
	"sync/atomic"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// Ring parameters. buraksezer/consistent assigns partitions to members with
// bounded loads (no member gets more than Load × the average); a key maps
// to a partition by hash modulo the partition count. The partition count
// is fixed (it does not follow the eligible count), so a key's partition
// never changes and a member joining or leaving moves only the partitions
// whose owner changes: about 1/n of keys (TestHashKeyCrossing256). It must
// be at least the member count (the library has no room otherwise); sets
// larger than it hash over their first Partitions members by ID (see
// table). Memory while hashed: the library's tables, about 100 bytes per
// partition plus 50 per member and replica, and 4 bytes per partition for
// the pick table.
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

type xxHasher struct{}

func (xxHasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// ringMember is a member's name on the ring: its ID and a NUL. The
// library names a member's replicas by appending the replica number to
// the name, so without the NUL "i-1" (replica 10) and "i-11" (replica 0)
// would share a point, and removing one would leave the other's point
// without an owner (a nil dereference in the library).
type ringMember string

func (m ringMember) String() string { return string(m) }

func ringName(id string) string { return id + "\x00" }

// ringSource keeps one consistent ring for all the Sets of a View, so that
// a change adds or removes the members that changed instead of building
// the ring anew (the library sorts its whole ring once per member added,
// so a build from scratch grows as n² log n).
type ringSource struct {
	wanted atomic.Bool // a HashKey asked for a table: keep one from now on
	mu     sync.Mutex
	c      *consistent.Consistent
	in     map[string]struct{} // the members in c
}

func ringConfig() consistent.Config {
	return consistent.Config{
		Hasher:            xxHasher{},
		PartitionCount:    Partitions,
		ReplicationFactor: replicationFactor,
		Load:              loadFactor,
	}
}

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
	index := make(map[string]int32, len(ids)) // by ring name
	for i, id := range ids {
		index[ringName(id)] = int32(i)
	}
	if r.c == nil {
		ms := make([]consistent.Member, len(ids))
		for i, id := range ids {
			ms[i] = ringMember(ringName(id))
		}
		r.c = consistent.New(ms, ringConfig())
		r.in = make(map[string]struct{}, len(ids))
		for _, id := range ids {
			r.in[ringName(id)] = struct{}{}
		}
	} else {
		// Remove first: the ring then never holds more than Partitions
		// members (the library panics without room for each). A ring
		// emptied on the way is fine: Add starts it afresh.
		for name := range r.in {
			if _, ok := index[name]; !ok {
				r.c.Remove(name)
				delete(r.in, name)
			}
		}
		for _, id := range ids {
			if name := ringName(id); !hasKey(r.in, name) {
				r.c.Add(ringMember(name))
				r.in[name] = struct{}{}
			}
		}
	}
	owner := make([]int32, Partitions)
	for part := range owner {
		owner[part] = index[r.c.GetPartitionOwner(part).String()]
	}
	return &ringTable{owner: owner}
}

func hasKey(m map[string]struct{}, k string) bool {
	_, ok := m[k]
	return ok
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
