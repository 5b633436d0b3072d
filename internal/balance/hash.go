package balance

import (
	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// Ring parameters. buraksezer/consistent assigns partitions to members with
// bounded loads (no member gets more than Load × the average); keys map to a
// partition by hash modulo the partition count. More partitions give a finer
// split (better balance and closer to 1/n keys moving when a member leaves);
// more replicas spread each member around the ring. Measured with
// TestHashKeyMovement (worst case over which member leaves, 100,000 keys):
// 271/20 moved up to 1/n+8.4% with 4.9% between staying members; 1021/40
// moves at most 1/n+3% with under 1% between staying members. 2039/40 is no
// better and doubles the table. See hashPartitions for large sets.
const (
	basePartitions    = 1021
	replicationFactor = 40
	loadFactor        = 1.25
)

// ring is a precomputed partition → member table. consistent.LocateKey is
// not used on the pick path: it needs a []byte (an allocation for a string
// key), calls the hasher through an interface and takes a read lock. Hashing
// the key here with the same hasher and reading the table gives the same
// answer with no allocation and no lock.
type ring struct {
	owner []int32 // index into Set.values, by partition
}

type xxHasher struct{}

func (xxHasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

type ringMember string

func (m ringMember) String() string { return string(m) }

// hashPartitions keeps the partition count fixed for every realistic set so a
// key's partition never changes, and grows it only when there are more
// members than partitions, where consistent would otherwise panic (every
// member needs room for at least one partition). Four partitions per member
// guarantees that room at a load factor of 1.25.
//
// Build cost is the library's: it re-sorts the ring after each member, so New
// grows as n² log n — about a millisecond at tens of members, but seconds at
// a thousand. Sets are rebuilt only on membership change, off the pick path.
func hashPartitions(n int) int {
	p := basePartitions
	for p < 4*n {
		p = p*2 + 1
	}
	return p
}

func buildRing(ids []string) ring {
	if len(ids) == 0 {
		return ring{}
	}
	members := make([]consistent.Member, len(ids))
	index := make(map[string]int32, len(ids))
	for i, id := range ids {
		members[i] = ringMember(id)
		index[id] = int32(i)
	}
	p := hashPartitions(len(ids))
	c := consistent.New(members, consistent.Config{
		Hasher:            xxHasher{},
		PartitionCount:    p,
		ReplicationFactor: replicationFactor,
		Load:              loadFactor,
	})
	owner := make([]int32, p)
	for part := range owner {
		owner[part] = index[c.GetPartitionOwner(part).String()]
	}
	return ring{owner: owner}
}

// HashKey returns the member that owns key on the consistent-hash ring, so a
// key sticks to its member while the set is stable and, when one of n members
// leaves, only about 1/n of keys move.
func (s *Set[T]) HashKey(key string) (T, bool) {
	if len(s.ring.owner) == 0 {
		var zero T
		return zero, false
	}
	// Same hash and modulo as consistent.FindPartitionID.
	part := xxhash.Sum64String(key) % uint64(len(s.ring.owner))
	return s.values[s.ring.owner[part]], true
}
