package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// The record cache. A put or delete must read the key's current record
// (for the new version, the event's previous entry, the lease to detach),
// and that read, a seek through the store's 64 MiB memtable, was a fifth
// of a put's CPU on every replica. The cache keeps the current records of
// the keys the apply path touched last, per store (all the groups of a
// server share it), bounded in bytes, so a put of a key written recently
// reads memory instead.
//
// It is the apply path's alone: Update reads and writes it, reads for
// clients never do. Every write of a record by the apply path sets or
// drops its entry in the same step, so an entry always equals what the
// batch being applied would read. What changes a space wholesale (Open,
// a snapshot's recovery) and an Update that failed (its batch is dropped,
// the entries it set are not the store's) give the state machine a new
// cache id: entries under the old id are never read again and age out.
const (
	// recordCacheBytes bounds one store's record cache: key, value and
	// recordCacheOverhead per entry.
	recordCacheBytes = 4 << 20
	// recordCacheOverhead is an entry's memory besides its key and value
	// (list element with the header and the string and slice headers,
	// map slot): measured, 190-210 bytes.
	recordCacheOverhead = 224
)

type recordCacheKey struct {
	id  uint64 // the state machine's cache id (see StateMachine.recID)
	key string // 'k' + user key
}

type cachedRecord struct {
	h recordHeader
	// value is overwritten only by the next set of its key, which comes
	// after its reader (the apply path of the same state machine) is done
	// with it.
	value []byte
}

type recordCache struct {
	nextID atomic.Uint64

	mu    sync.Mutex
	lru   *simplelru.LRU[recordCacheKey, cachedRecord]
	bytes int
	max   int
}

func newRecordCache(maxBytes int) *recordCache {
	c := &recordCache{max: maxBytes}
	// Bounded by bytes, not by count: the count bound is never reached.
	c.lru, _ = simplelru.NewLRU[recordCacheKey, cachedRecord](math.MaxInt32, func(k recordCacheKey, v cachedRecord) {
		c.bytes -= entryCost(k.key, v.value)
	})
	return c
}

// entryCost is an entry's memory: value is the cached copy, whose
// capacity is its allocation; the key's allocation is rounded up as Go
// rounds small ones.
func entryCost(key string, value []byte) int {
	return (len(key)+15)&^15 + cap(value) + recordCacheOverhead
}

// newID returns a cache id that no state machine used before.
func (c *recordCache) newID() uint64 { return c.nextID.Add(1) }

// get returns the cached record of key ('k'-prefixed) under id.
func (c *recordCache) get(id uint64, key []byte) (cachedRecord, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Get(recordCacheKey{id, string(key)})
}

// set caches key's current record; value is copied.
func (c *recordCache) set(id uint64, key []byte, h recordHeader, value []byte) {
	k := recordCacheKey{id, string(key)}
	c.mu.Lock()
	defer c.mu.Unlock()
	old, had := c.lru.Peek(k)
	var v []byte
	if had && cap(old.value) >= len(value) && cap(old.value) <= 2*len(value)+64 {
		// The new value goes into the old one's memory. A value once
		// returned by get is done with when its record is written (see
		// currentRecord), and a copy per put of a cached key spread the
		// cache's long-lived objects over the heap's spans among the
		// apply path's garbage: the heap in use grew by twice the cache.
		v = append(old.value[:0], value...)
	} else {
		v = bytes.Clone(value)
	}
	cost := entryCost(k.key, v)
	if cost > c.max {
		c.lru.Remove(k) // its eviction callback accounts for old
		return
	}
	if had {
		// Add replaces in place, without the eviction callback.
		c.bytes -= entryCost(k.key, old.value)
	}
	c.lru.Add(k, cachedRecord{h: h, value: v})
	c.bytes += cost
	for c.bytes > c.max {
		if _, _, ok := c.lru.RemoveOldest(); !ok {
			break
		}
	}
}

// drop forgets key's record (it was deleted).
func (c *recordCache) drop(id uint64, key []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Remove(recordCacheKey{id, string(key)})
}

// currentRecord is key's ('k'-prefixed) current record as the batch being
// applied reads it: from the record cache, else from the batch (and then
// cached). closer is nil when the value came from the cache (it is valid
// until the key's record is written: use it before); else the caller
// closes it once done with value.
func (s *StateMachine) currentRecord(b *batch, key []byte) (h recordHeader, value []byte, closer closerFunc, found bool, err error) {
	recs := s.store.recs
	if r, ok := recs.get(s.recID, key); ok {
		if s.checkRecords {
			if err := s.checkCachedRecord(b, key, r); err != nil {
				return h, nil, nil, false, err
			}
		}
		return r.h, r.value, nil, true, nil
	}
	h, value, c, found, err := getRecord(b, key)
	if err != nil || !found {
		return h, nil, nil, false, err
	}
	recs.set(s.recID, key, h, value)
	return h, value, func() { _ = c.Close() }, true, nil
}

// closerFunc releases pebble memory; nil releases nothing.
type closerFunc func()

func (f closerFunc) close() {
	if f != nil {
		f()
	}
}

// wroteRecord and droppedRecord keep the cache equal to the batch: every
// write of a record by the apply path calls one of them.
func (s *StateMachine) wroteRecord(key []byte, h recordHeader, value []byte) {
	s.store.recs.set(s.recID, key, h, value)
}

func (s *StateMachine) droppedRecord(key []byte) { s.store.recs.drop(s.recID, key) }

// forgetRecords makes the state machine's cached records unreachable.
func (s *StateMachine) forgetRecords() { s.recID = s.store.recs.newID() }

var errRecordCacheStale = errors.New("record cache differs from the store")

// checkCachedRecord compares a cache hit with the store (tests turn it on
// with checkRecords).
func (s *StateMachine) checkCachedRecord(b *batch, key []byte, r cachedRecord) error {
	h, value, closer, found, err := getRecord(b, key)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("%w: key %q cached, not stored", errRecordCacheStale, key[1:])
	}
	defer closer.Close()
	if h != r.h || !bytes.Equal(value, r.value) {
		return fmt.Errorf("%w: key %q cached %+v %q, stored %+v %q", errRecordCacheStale, key[1:], r.h, r.value, h, value)
	}
	return nil
}
