// Package cache is a client node's read cache of one group: an LRU of keys
// (github.com/hashicorp/golang-lru/v2) kept current by the group's watch.
//
// The cache is a snapshot of the group at revision Pos, the revision up to
// which the watch delivered every event (and progress note): a key that is
// cached holds its value (or its absence) as of max(Pos, the revision it
// was filled at). The watch updates cached keys; a put of a key that is
// not cached enters the cache only while it has free room (the stream
// warms an empty cache, but never evicts a key that was read for one that
// was not).
// While the watch is lost the cache is not Trusted (reads that need a
// bound go to servers); when the watch resumes without a gap it is trusted
// again, and when it cannot (history compacted) the cache is Reset.
package cache

import (
	"context"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Event is one change of a key at a revision: its new value, or its
// deletion (Found false).
type Event[V any] struct {
	Key   string
	Value V
	Found bool
}

type item[V any] struct {
	value V
	found bool
	at    int64 // the revision the value is known at (its fill or its event)
}

// Cache of one group. Its methods are safe for concurrent use.
type Cache[V any] struct {
	mu      sync.Mutex
	lru     *lru.Cache[string, item[V]]
	size    int
	pos     int64
	trusted bool
	moved   chan struct{} // closed and replaced whenever pos moves
	// filter is the state of filtered mode (follow.go); nil otherwise.
	filter  *filter[V]
	purging bool // Reset's purge: evictions need no unfollow
}

// New returns a cache of at most size (> 0) keys, at revision 0 and not
// trusted until Reset.
func New[V any](size int) *Cache[V] {
	c := &Cache[V]{size: size, moved: make(chan struct{})}
	l, err := lru.NewWithEvict[string, item[V]](size, c.evicted)
	if err != nil { // size <= 0: the caller's bug
		panic(err)
	}
	c.lru = l
	return c
}

// evicted is the LRU's eviction callback, run inside an LRU call (c.mu
// held): in filtered mode an evicted key is no longer followed.
func (c *Cache[V]) evicted(key string, _ item[V]) {
	if c.filter != nil && !c.purging {
		c.unfollow(key)
	}
}

// Reset empties the cache and starts it at pos (a watch follows from
// pos+1), trusted. In filtered mode nothing is followed any more.
func (c *Cache[V]) Reset(pos int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.purging = true
	c.lru.Purge()
	c.purging = false
	if c.filter != nil {
		c.filter.clear()
	}
	c.trusted = true
	c.move(pos)
}

// Untrust marks the watch lost: reads with a freshness bound stop using
// the cache until Trust.
func (c *Cache[V]) Untrust() {
	c.mu.Lock()
	c.trusted = false
	c.mu.Unlock()
}

// Trust marks the watch resumed without a gap (from Pos+1).
func (c *Cache[V]) Trust() {
	c.mu.Lock()
	c.trusted = true
	c.mu.Unlock()
}

// move sets pos to rev if higher and wakes the waiters; c.mu held.
func (c *Cache[V]) move(rev int64) {
	if rev == c.pos {
		return
	}
	c.pos = rev
	close(c.moved)
	c.moved = make(chan struct{})
}

// Apply takes the events of revision rev: cached keys take their new value
// (unless they were filled at rev or later), puts of keys not cached enter
// while the cache has room, and Pos becomes rev. Revisions at or below Pos
// are ignored (a resumed watch's repeats).
func (c *Cache[V]) Apply(rev int64, evs []Event[V]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev <= c.pos {
		return
	}
	// A txn may change a key more than once: its last event is the key's
	// state at rev, and the rule below (at >= rev) would keep the first.
	var last map[string]int
	if len(evs) > 1 {
		last = make(map[string]int, len(evs))
		for i, ev := range evs {
			last[ev.Key] = i
		}
	}
	for i, ev := range evs {
		if last != nil && last[ev.Key] != i {
			continue
		}
		if c.filter != nil {
			c.applyFollowed(rev, ev)
			continue
		}
		it, ok := c.lru.Peek(ev.Key)
		if ok && it.at >= rev {
			continue
		}
		if !ok && (!ev.Found || c.lru.Len() >= c.size) {
			continue
		}
		c.lru.Add(ev.Key, item[V]{value: ev.Value, found: ev.Found, at: rev})
	}
	c.move(rev)
}

// Progress records that every event up to rev was applied.
func (c *Cache[V]) Progress(rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev > c.pos {
		c.move(rev)
	}
}

// Pos is the revision the watch has delivered up to, and whether the cache
// is trusted.
func (c *Cache[V]) Pos() (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pos, c.trusted
}

// Lookup returns key's cached value (found false: cached as absent) and
// the revision it is known at; ok false when key is not cached. trusted
// tells whether the cache is trusted.
func (c *Cache[V]) Lookup(key string) (value V, found bool, at int64, ok, trusted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	it, ok := c.lru.Get(key)
	if !ok {
		return value, false, 0, false, c.trusted
	}
	return it.value, it.found, max(it.at, c.pos), true, c.trusted
}

// Fill caches a value read from a server at revision rev, unless the
// watch has already delivered a revision above rev: an event for key in
// between may have gone by unseen (key was not cached), so the read could
// be older than the cache (the fill race). Events at or below rev that the
// watch delivers later leave the value alone. In filtered mode key must be
// followed (Follow) and rev not older than its follow's ack: a fill before
// the ack waits for it (and reports false).
func (c *Cache[V]) Fill(key string, value V, found bool, rev int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.filter != nil {
		return c.fillFollowed(key, value, found, rev, false)
	}
	return c.fill(key, value, found, rev)
}

// fill is Fill's rule; c.mu held.
func (c *Cache[V]) fill(key string, value V, found bool, rev int64) bool {
	if rev < c.pos {
		return false
	}
	if it, ok := c.lru.Peek(key); ok && it.at >= rev {
		return false
	}
	c.lru.Add(key, item[V]{value: value, found: found, at: rev})
	return true
}

// Warm caches a value listed from a server at revision rev, under Fill's
// rule, but only into free room: it never evicts a key (a warm-up must not
// push out what the application reads). It reports false when the cache
// is full, so the warm-up can stop. In filtered mode it follows key (the
// value is cached at the ack, under Fill's rule).
func (c *Cache[V]) Warm(key string, value V, rev int64) (room bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.filter != nil {
		// Follows waiting for their ack hold room too.
		if _, ok := c.filter.follows[key]; !ok {
			if len(c.filter.follows) >= c.size || !c.follow(key) {
				return false
			}
		}
		if c.lru.Contains(key) || c.lru.Len() < c.size {
			c.fillFollowed(key, value, true, rev, true)
		}
		return true
	}
	if !c.lru.Contains(key) && c.lru.Len() >= c.size {
		return false
	}
	c.fill(key, value, true, rev)
	return true
}

// Len is the number of cached keys.
func (c *Cache[V]) Len() int { return c.lru.Len() }

// WaitPos waits until Pos reaches rev or ctx ends; it reports whether Pos
// reached rev.
func (c *Cache[V]) WaitPos(ctx context.Context, rev int64) bool {
	for {
		c.mu.Lock()
		if c.pos >= rev {
			c.mu.Unlock()
			return true
		}
		moved := c.moved
		c.mu.Unlock()
		select {
		case <-moved:
		case <-ctx.Done():
			return false
		}
	}
}

// Moved returns a channel closed when Pos next moves.
func (c *Cache[V]) Moved() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.moved
}
