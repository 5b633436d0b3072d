package fsm

import (
	"io"
	"sync/atomic"

	"github.com/cockroachdb/pebble"
)

// A space is one shard's state in one generation within the Shared store.
// Its methods are pebble's, with keys as keys.go lays them out: the
// shard's prefix goes on at every write, read and bound, and comes off
// every key an iterator returns, so the state machine's code never sees
// it.
type space struct {
	st    *Shared
	shard uint64
	gen   uint64
	p     []byte // storeSpace + shard + gen
	end   []byte // prefixEnd(p); nil = none

	// needSync is the number of the store's WAL sync that covers every
	// write to the space so far (0: none written since it opened).
	needSync atomic.Uint64
}

// wrote records a write to the space that ended.
func (sp *space) wrote() {
	need := sp.st.nextSync()
	for {
		cur := sp.needSync.Load()
		if cur >= need || sp.needSync.CompareAndSwap(cur, need) {
			return
		}
	}
}

// key returns p+k in buf's storage.
func (sp *space) key(buf *[]byte, k []byte) []byte {
	*buf = append(append((*buf)[:0], sp.p...), k...)
	return *buf
}

// bounds prefixes o's bounds (nil o or bound = the whole space). The
// slices are new: pebble keeps bounds until the iterator closes.
func (sp *space) bounds(o *pebble.IterOptions) *pebble.IterOptions {
	out := &pebble.IterOptions{}
	if o != nil {
		*out = *o
	}
	if out.LowerBound != nil {
		out.LowerBound = append(append([]byte(nil), sp.p...), out.LowerBound...)
	} else {
		out.LowerBound = sp.p
	}
	if out.UpperBound != nil {
		out.UpperBound = append(append([]byte(nil), sp.p...), out.UpperBound...)
	} else {
		out.UpperBound = sp.end
	}
	return out
}

func (sp *space) Get(k []byte) ([]byte, io.Closer, error) {
	var buf []byte
	return sp.st.db.Get(sp.key(&buf, k))
}

func (sp *space) NewIter(o *pebble.IterOptions) *iter {
	return &iter{it: sp.st.db.NewIter(sp.bounds(o)), sp: sp}
}

func (sp *space) NewBatch() *batch { return &batch{b: sp.st.db.NewBatch(), sp: sp} }

func (sp *space) NewIndexedBatch() *batch {
	return &batch{b: sp.st.db.NewIndexedBatch(), sp: sp}
}

func (sp *space) NewSnapshot() *snapshot {
	return &snapshot{snap: sp.st.db.NewSnapshot(), sp: sp}
}

// Sync makes what was committed to the space durable. It is skipped when
// a WAL sync that began after the space's last write has finished:
// dragonboat syncs every replica when it starts and every few minutes
// after, and most of a thousand groups wrote nothing since.
func (sp *space) Sync() error {
	need := sp.needSync.Load()
	if need == 0 {
		return nil
	}
	return sp.st.syncUpTo(need)
}

func (sp *space) EstimateDiskUsage(lo, hi []byte) (uint64, error) {
	return sp.st.db.EstimateDiskUsage(
		append(append([]byte(nil), sp.p...), lo...), append(append([]byte(nil), sp.p...), hi...))
}

// clear deletes everything in the space, if it holds anything (a range
// tombstone costs every later read that crosses it).
func (sp *space) clear() error {
	it := sp.st.db.NewIter(&pebble.IterOptions{LowerBound: sp.p, UpperBound: sp.end})
	found := it.First()
	if err := it.Close(); err != nil || !found {
		return err
	}
	b := sp.st.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(sp.p, sp.end, nil); err != nil {
		return err
	}
	defer sp.wrote()
	return b.Commit(pebble.NoSync)
}

// batch is a pebble batch whose keys are the space's.
type batch struct {
	b    *pebble.Batch
	sp   *space
	kbuf []byte // pebble copies keys into the batch: one buffer serves
}

func (b *batch) Get(k []byte) ([]byte, io.Closer, error) { return b.b.Get(b.sp.key(&b.kbuf, k)) }

func (b *batch) Set(k, v []byte, o *pebble.WriteOptions) error {
	return b.b.Set(b.sp.key(&b.kbuf, k), v, o)
}

func (b *batch) Delete(k []byte, o *pebble.WriteOptions) error {
	return b.b.Delete(b.sp.key(&b.kbuf, k), o)
}

// SetDeferred is pebble's, with op.Key the caller's part of the key (the
// prefix is in place).
func (b *batch) SetDeferred(keyLen, valueLen int) *pebble.DeferredBatchOp {
	op := b.b.SetDeferred(len(b.sp.p)+keyLen, valueLen)
	copy(op.Key, b.sp.p)
	op.Key = op.Key[len(b.sp.p):]
	return op
}

func (b *batch) NewIter(o *pebble.IterOptions) *iter {
	return &iter{it: b.b.NewIter(b.sp.bounds(o)), sp: b.sp}
}

func (b *batch) Len() int { return b.b.Len() }
func (b *batch) Commit(o *pebble.WriteOptions) error {
	defer b.sp.wrote()
	return b.b.Commit(o)
}
func (b *batch) Close() error { return b.b.Close() }

// snapshot is a pebble snapshot of the store read through a space. Its
// Close is safe after the store closed (the store took it along).
type snapshot struct {
	snap *pebble.Snapshot
	sp   *space
}

func (s *snapshot) Get(k []byte) ([]byte, io.Closer, error) {
	var buf []byte
	return s.snap.Get(s.sp.key(&buf, k))
}

func (s *snapshot) NewIter(o *pebble.IterOptions) *iter {
	return &iter{it: s.snap.NewIter(s.sp.bounds(o)), sp: s.sp}
}

func (s *snapshot) Close() error {
	st := s.sp.st
	st.mu.RLock()
	defer st.mu.RUnlock()
	if st.closed {
		return nil
	}
	return s.snap.Close()
}

// iter is a pebble iterator over a space: keys come without the prefix.
type iter struct {
	it *pebble.Iterator
	sp *space
}

func (i *iter) First() bool   { return i.it.First() }
func (i *iter) Next() bool    { return i.it.Next() }
func (i *iter) Key() []byte   { return i.it.Key()[len(i.sp.p):] }
func (i *iter) Value() []byte { return i.it.Value() }
func (i *iter) Error() error  { return i.it.Error() }
func (i *iter) Close() error  { return i.it.Close() }

func (i *iter) SeekGE(k []byte) bool {
	var buf []byte
	return i.it.SeekGE(i.sp.key(&buf, k))
}

func (i *iter) SetBounds(lo, hi []byte) {
	o := i.sp.bounds(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	i.it.SetBounds(o.LowerBound, o.UpperBound)
}
