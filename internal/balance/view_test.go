package balance

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// A View whose Sets nobody hashes never builds a ring; the first HashKey
// builds one, and from then on every published Set carries one.
func TestViewRingLazy(t *testing.T) {
	v := NewView[string](nil)
	for i := range 50 {
		v.Put(mem(fmt.Sprintf("i-%02d", i), 1, Passing))
	}
	s := v.Set()
	s.Pick(1)
	s.RoundRobin()
	if s.Hashed() || v.src.points != nil {
		t.Fatal("ring built though nobody hashed")
	}
	v.Put(mem("i-50", 1, Passing))
	if s2 := v.Set(); s2.Hashed() || v.src.points != nil {
		t.Fatal("ring built on publish though nobody hashed")
	}
	if _, ok := v.Set().HashKey("k"); !ok || v.src.points == nil {
		t.Fatal("HashKey did not build the ring")
	}
	v.Delete("i-00")
	if !v.Set().Hashed() {
		t.Fatal("a Set published after a HashKey has no table")
	}
}

// A View fed a random sequence of puts, deletes and status and priority
// changes publishes, after each, the same Set as New over the same members,
// hash table included.
func TestViewIncrementalEqualsFromScratch(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	v := NewView[string](nil)
	live := map[string]Member[string]{}
	v.Set().HashKey("start") // keep a ring from the start
	const ks = 2000
	for step := range 600 {
		id := fmt.Sprintf("i-%03d", r.IntN(120))
		switch op := r.IntN(10); {
		case op < 2:
			v.Delete(id)
			delete(live, id)
		default:
			m := mem(id, r.IntN(4), Tier(r.IntN(3)))
			m.Value = fmt.Sprintf("%s/%d", id, step) // a new record each time
			v.Put(m)
			live[id] = m
		}
		got := v.Set()
		var all []Member[string]
		for _, m := range live {
			all = append(all, m)
		}
		want := New(all...)
		if !slices.Equal(got.IDs(), want.IDs()) || !slices.Equal(got.Values(), want.Values()) || !slices.Equal(got.cum, want.cum) {
			t.Fatalf("step %d: incremental %v %v, from scratch %v %v", step, got.IDs(), got.cum, want.IDs(), want.cum)
		}
		if !got.Hashed() {
			t.Fatalf("step %d: no hash table after HashKey", step)
		}
		if step%50 == 0 || step == 599 {
			for k := range ks {
				key := fmt.Sprint("key-", k)
				a, okA := got.HashKey(key)
				b, okB := want.HashKey(key)
				if a != b || okA != okB {
					t.Fatalf("step %d: key %q on %q (incremental ring) vs %q (fresh ring)", step, key, a, b)
				}
			}
		}
	}
}

// With 10,000 keys, one instance joining or leaving moves about 1/n of
// them, also where the eligible count crosses 256 (the partition count
// used to double there and reshuffle nearly every key).
func TestHashKeyCrossing256(t *testing.T) {
	const nkeys = 10_000
	ks := make([]string, nkeys)
	for i := range ks {
		ks[i] = fmt.Sprintf("user-%d", i)
	}
	v := NewView[string](nil)
	for i := range 254 {
		v.Put(mem(fmt.Sprintf("10.0.%d.%d:80", i/200, i%200), 1, Passing))
	}
	prev := assign(v.Set(), ks)
	step := func(what string, n int) {
		t.Helper()
		cur := assign(v.Set(), ks)
		moved := 0
		for i := range ks {
			if cur[i] != prev[i] {
				moved++
			}
		}
		limit := 3 * nkeys / n
		t.Logf("%s (n=%d): %d of %d keys moved (1/n = %d)", what, n, moved, nkeys, nkeys/n)
		if moved > limit {
			t.Errorf("%s (n=%d): %d keys moved, want < 3/n = %d", what, n, moved, limit)
		}
		prev = cur
	}
	for i := 254; i < 260; i++ {
		v.Put(mem(fmt.Sprintf("10.0.%d.%d:80", i/200, i%200), 1, Passing))
		step("join", i+1)
	}
	for i := 259; i >= 252; i-- {
		v.Delete(fmt.Sprintf("10.0.%d.%d:80", i/200, i%200))
		step("leave", i)
	}
}

// IDs where one is another plus digits ("i-1", "i-11") used to share ring
// points in the library (it names replicas by appending their number), and
// removing one then crashed it.
func TestHashRingPrefixIDs(t *testing.T) {
	v := NewView[string](nil)
	for i := range 120 {
		v.Put(mem(fmt.Sprintf("i-%d", i), 1, Passing))
	}
	v.Set().HashKey("k")
	for i := range 120 {
		v.Delete(fmt.Sprintf("i-%d", i))
		s := v.Set()
		if _, ok := s.HashKey("k"); ok != (i < 119) {
			t.Fatalf("after %d deletes: ok=%v", i+1, ok)
		}
	}
}

type xxHasher struct{}

func (xxHasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

type ringMember string

func (m ringMember) String() string { return string(m) }

// The ring kept here gives every partition the owner that
// buraksezer/consistent gives it, built at once or after a random sequence
// of joins and leaves (IDs that are prefixes of each other included).
func TestRingMatchesLibrary(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	src := new(ringSource)
	live := map[string]bool{}
	for step := range 40 {
		for range 1 + r.IntN(30) {
			id := fmt.Sprintf("i-%d", r.IntN(400))
			live[id] = !live[id]
		}
		var ids []string
		for id, in := range live {
			if in {
				ids = append(ids, id)
			}
		}
		if len(ids) == 0 {
			continue
		}
		slices.Sort(ids)
		got := src.table(ids)
		ms := make([]consistent.Member, len(ids))
		for i, id := range ids {
			ms[i] = ringMember(ringName(id))
		}
		c := consistent.New(ms, consistent.Config{Hasher: xxHasher{}, PartitionCount: Partitions,
			ReplicationFactor: replicationFactor, Load: loadFactor})
		for part := range Partitions {
			if want := c.GetPartitionOwner(part).String(); ringName(ids[got.owner[part]]) != want {
				t.Fatalf("step %d (%d members): partition %d owned by %q, library says %q", step, len(ids), part, ids[got.owner[part]], want)
			}
		}
	}
}
