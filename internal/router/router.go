// Package router places a client node's reads on servers: a consistent-hash
// ring (github.com/buraksezer/consistent) over a group's servers, so each
// key sticks to one server while the set is stable (that server's cache of
// the key's pages stays warm), and when a server stops answering its keys
// move to the next server on the ring, the others' keys staying put.
package router

import (
	"slices"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// Ring parameters: a key's partition is its hash modulo partitions; each
// server owns partitions with bounded load (at most load × the average).
const (
	partitions        = 271
	replicationFactor = 20
	load              = 1.25
)

type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

type member string

func (m member) String() string { return string(m) }

// Ring maps keys to an ordered preference of servers. It is immutable:
// membership changes build a new Ring. The zero Ring has no servers.
type Ring struct {
	servers []string
	// order[p] is every server, in the ring's order of preference for
	// partition p (its owner first, then the next ones on the ring).
	order [][]int32
}

// New builds a ring over servers (addresses; duplicates are ignored).
func New(servers []string) *Ring {
	s := slices.Clone(servers)
	slices.Sort(s)
	s = slices.Compact(s)
	r := &Ring{servers: s}
	if len(s) == 0 {
		return r
	}
	parts := partitions
	for parts < 4*len(s) { // consistent needs room for every member
		parts = parts*2 + 1
	}
	members := make([]consistent.Member, len(s))
	index := make(map[string]int32, len(s))
	for i, a := range s {
		members[i] = member(a)
		index[a] = int32(i)
	}
	c := consistent.New(members, consistent.Config{Hasher: hasher{},
		PartitionCount: parts, ReplicationFactor: replicationFactor, Load: load})
	// The partition's owner comes first; the others follow in an order of
	// their own per partition (rendezvous hashing), so a dead server's
	// partitions spread over all the others. (consistent's GetClosestN
	// orders by member name alone: every partition of a dead server would
	// go to the same next one.)
	r.order = make([][]int32, parts)
	var buf [8]byte
	for p := range r.order {
		owner := index[c.GetPartitionOwner(p).String()]
		o := make([]int32, 0, len(s))
		o = append(o, owner)
		for i := range s {
			if int32(i) != owner {
				o = append(o, int32(i))
			}
		}
		buf = [8]byte{byte(p), byte(p >> 8), byte(p >> 16), byte(p >> 24)}
		weight := func(i int32) uint64 { return xxhash.Sum64String(string(buf[:4]) + s[i]) }
		slices.SortFunc(o[1:], func(a, b int32) int {
			wa, wb := weight(a), weight(b)
			switch {
			case wa > wb:
				return -1
			case wa < wb:
				return 1
			}
			return 0
		})
		r.order[p] = o
	}
	return r
}

// Servers are the ring's servers, sorted.
func (r *Ring) Servers() []string { return r.servers }

// Pick returns the first server in key's order of preference for which
// usable is true (nil usable = every server); false when none is.
func (r *Ring) Pick(key string, usable func(addr string) bool) (string, bool) {
	if r == nil || len(r.order) == 0 {
		return "", false
	}
	// Same hash and modulo as consistent.FindPartitionID.
	p := xxhash.Sum64String(key) % uint64(len(r.order))
	for _, i := range r.order[p] {
		if a := r.servers[i]; usable == nil || usable(a) {
			return a, true
		}
	}
	return "", false
}
