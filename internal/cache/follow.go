package cache

// Filtered mode. A cache whose watch is filtered to the keys it follows
// (a client's feed) must know, for each key, from which revision on the
// watch delivers its events: a value read at revision R may be cached
// only if R is not older than that, or an event in between went by unseen.
//
// A key is followed before it is filled (Follow, on a miss); the follow
// goes to the server in the next Change, and the server's Ack of that
// change names the revision its events come from. A fill that comes before
// the ack waits in the key's follow and is decided at the ack. A key whose
// fill cannot be cached, and a key the LRU evicts, is unfollowed again.
// When the watch resumes on another server, the new stream's request
// carries every followed hash (FollowedHashes) and its start acks the
// follows that were still waiting (Opened).
//
// Hashes, not keys, go to the server. Two followed keys may share a hash:
// counts keeps, per hash, how many keys need it, so that unfollowing one
// never stops the events of the other.

// follow is one followed key.
type follow[V any] struct {
	seq uint64 // the change that carries it (0 = not sent yet)
	at  int64  // its events come after at; -1 until acked
	// fill is a value read while the follow waited for its ack; warm: it
	// was listed by a warm-up, and takes free room only.
	fill *item[V]
	warm bool
	// abandoned: the read it waited for failed, and no fill came.
	abandoned bool
}

// filter is the filtered mode's state; under Cache.mu.
type filter[V any] struct {
	hash    func(string) uint64
	follows map[string]*follow[V]
	counts  map[uint64]int
	pending map[uint64]bool     // changes not sent yet: true add, false remove
	sent    map[uint64][]string // seq of a change sent -> keys it follows
	unsent  []string            // followed since the last change was taken
	waiting int                 // follows holding a fill (at most twice the cache size: a warm-up may hold one share)
	seq     uint64
	limit   int // most hashes followed at once
}

// Change is a filter change for the server: Seq is what its ack names.
type Change struct {
	Seq         uint64
	Add, Remove []uint64
}

// NewFiltered returns a cache of at most size keys for a watch filtered to
// the keys it follows (see above), which hash names to the server; at
// most limit hashes are followed at once.
func NewFiltered[V any](size, limit int, hash func(string) uint64) *Cache[V] {
	c := New[V](size)
	c.filter = &filter[V]{hash: hash, limit: limit}
	c.filter.clear()
	return c
}

func (f *filter[V]) clear() {
	f.follows = map[string]*follow[V]{}
	f.counts = map[uint64]int{}
	f.pending = map[uint64]bool{}
	f.sent = map[uint64][]string{}
	f.unsent = nil
	f.waiting = 0
}

// Filtered tells whether the cache follows a filtered watch.
func (c *Cache[V]) Filtered() bool { return c.filter != nil }

// Follow starts following key, unless it is followed already (or the
// filter is full); it reports whether a change is now pending for the
// server. A cache that is not filtered follows every key.
func (c *Cache[V]) Follow(key string) bool {
	if c.filter == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.follow(key)
}

// follow is Follow; c.mu held.
func (c *Cache[V]) follow(key string) bool {
	f := c.filter
	if _, ok := f.follows[key]; ok || len(f.counts) >= f.limit {
		return false
	}
	f.follows[key] = &follow[V]{at: -1}
	f.unsent = append(f.unsent, key)
	f.count(f.hash(key), 1)
	return true
}

// count adds d to h's count and records the change the server needs when
// the count leaves or reaches zero.
func (f *filter[V]) count(h uint64, d int) {
	n := f.counts[h] + d
	switch {
	case n > 0 && n == d:
		f.counts[h] = n
		f.pending[h] = true
	case n > 0:
		f.counts[h] = n
	default:
		delete(f.counts, h)
		f.pending[h] = false
	}
}

// unfollow forgets key; c.mu held.
func (c *Cache[V]) unfollow(key string) {
	f := c.filter
	fl, ok := f.follows[key]
	if !ok {
		return
	}
	if fl.fill != nil {
		f.waiting--
	}
	delete(f.follows, key)
	f.count(f.hash(key), -1)
}

// TakeChange returns the next change for the server (nil: none pending),
// with at most max hashes added and max removed.
func (c *Cache[V]) TakeChange(max int) *Change {
	if c.filter == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.filter
	if len(f.pending) == 0 && len(f.unsent) == 0 {
		return nil
	}
	f.seq++
	ch := &Change{Seq: f.seq}
	for h, add := range f.pending {
		if add && len(ch.Add) < max {
			ch.Add = append(ch.Add, h)
		} else if !add && len(ch.Remove) < max {
			ch.Remove = append(ch.Remove, h)
		} else {
			continue
		}
		delete(f.pending, h)
	}
	// The keys followed since the last change are acked with this one
	// (a key whose hash others follow already needs no add of its own),
	// except those whose add did not fit.
	var keys, later []string
	for _, k := range f.unsent {
		fl, ok := f.follows[k]
		if !ok || fl.at >= 0 || fl.seq != 0 {
			continue
		}
		if _, still := f.pending[f.hash(k)]; still {
			later = append(later, k)
			continue
		}
		fl.seq = ch.Seq
		keys = append(keys, k)
	}
	f.unsent = later
	if len(keys) > 0 {
		f.sent[ch.Seq] = keys
	}
	return ch
}

// Ack records the server's ack of change seq: the keys it follows have
// their events from after rev on, and rev is a progress note.
func (c *Cache[V]) Ack(seq uint64, rev int64) {
	if c.filter == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev > c.pos {
		c.move(rev)
	}
	f := c.filter
	keys := f.sent[seq]
	delete(f.sent, seq)
	for _, k := range keys {
		if fl, ok := f.follows[k]; ok && fl.at < 0 && fl.seq == seq {
			c.acked(k, fl, rev)
		}
	}
}

// acked settles key's follow at rev. A fill that waited is cached if it is
// not older than rev; else the key is unfollowed (it would follow without
// being cached). Without a fill the read is still on its way: its Fill
// decides (Unfollow, when it fails); c.mu held.
func (c *Cache[V]) acked(key string, fl *follow[V], rev int64) {
	fl.at = rev
	w := fl.fill
	if w == nil {
		if fl.abandoned && !c.lru.Contains(key) {
			c.unfollow(key)
		}
		return
	}
	fl.fill = nil
	c.filter.waiting--
	if fl.warm && !c.lru.Contains(key) && c.lru.Len() >= c.size {
		w = nil // a warm-up never evicts (see Warm)
	}
	if w == nil || w.at < rev || !c.fill(key, w.value, w.found, w.at) {
		if !c.lru.Contains(key) {
			c.unfollow(key)
		}
	}
}

// Unfollow stops following key unless it is cached: its read failed.
func (c *Cache[V]) Unfollow(key string) {
	if c.filter == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	fl, ok := c.filter.follows[key]
	switch {
	case !ok || c.lru.Contains(key):
	case fl.at < 0:
		fl.abandoned = fl.fill == nil // the ack decides
	default:
		c.unfollow(key)
	}
}

// FollowedHashes returns every hash followed, for the request of a new
// stream; the pending changes are dropped (the request carries their
// result), and the follows still waiting for an ack are returned, for
// Opened to settle once the stream started.
func (c *Cache[V]) FollowedHashes() (hashes []uint64, waiting []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.filter
	hashes = make([]uint64, 0, len(f.counts))
	for h := range f.counts {
		hashes = append(hashes, h)
	}
	clear(f.pending)
	clear(f.sent)
	f.unsent = nil
	for k, fl := range f.follows {
		if fl.at < 0 {
			fl.seq = 0
			waiting = append(waiting, k)
		}
	}
	return hashes, waiting
}

// Opened settles the follows of waiting (FollowedHashes'): the stream
// that started with them delivers their events from after rev.
func (c *Cache[V]) Opened(waiting []string, rev int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.filter
	for _, k := range waiting {
		if fl, ok := f.follows[k]; ok && fl.at < 0 && fl.seq == 0 {
			c.acked(k, fl, rev)
		}
	}
}

// fillFollowed is Fill in filtered mode (warm: Warm's); c.mu held.
func (c *Cache[V]) fillFollowed(key string, value V, found bool, rev int64, warm bool) bool {
	fl, ok := c.filter.follows[key]
	switch {
	case !ok:
		return false
	case fl.at < 0:
		switch {
		case fl.fill != nil && fl.fill.at < rev:
			fl.fill = &item[V]{value: value, found: found, at: rev}
			fl.warm, fl.abandoned = warm, false
		case fl.fill == nil && c.filter.waiting < 2*c.size:
			fl.fill = &item[V]{value: value, found: found, at: rev}
			fl.warm, fl.abandoned = warm, false
			c.filter.waiting++
		case fl.fill == nil:
			// The values waiting for acks hold as much as the cache may:
			// this one is not kept (the ack unfollows its key).
			fl.abandoned = true
		}
		return false
	case rev >= fl.at && c.fill(key, value, found, rev):
		return true
	}
	if !c.lru.Contains(key) {
		c.unfollow(key)
	}
	return false
}

// applyFollowed is Apply's rule for one event in filtered mode: only keys
// whose follow was acked take it (a waiting one's events are those of an
// earlier follow of its hash); c.mu held.
func (c *Cache[V]) applyFollowed(rev int64, ev Event[V]) {
	fl, ok := c.filter.follows[ev.Key]
	if !ok || fl.at < 0 || rev <= fl.at {
		return
	}
	if it, ok := c.lru.Peek(ev.Key); ok && it.at >= rev {
		return
	}
	c.lru.Add(ev.Key, item[V]{value: ev.Value, found: ev.Found, at: rev})
}
