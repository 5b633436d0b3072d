package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/bloom"
	"github.com/cockroachdb/pebble/vfs"

	"github.com/dister/dister/internal/errs"
)

// Shared is the one pebble database the state machines of a host keep
// their state in, each in a key space of its own, so that a group costs no
// database of its own: no memtable, files, goroutines or fsyncs at
// creation per group, and the writes of all groups go through one commit
// pipeline.
//
// Layout (every key of a state machine keeps the layout of keys.go, behind
// a prefix):
//
//	0x00 + shard(8 BE)              the shard's current generation (8 BE)
//	0x01 + shard(8 BE) + gen(8 BE)  + key: the shard's state in that generation
//
// A generation plays the part a database directory played when every
// replica had its own: RecoverFromSnapshot loads the stream into the next
// generation and switches the record in the same batch that drops the old
// one, so a crash or a bad stream leaves the previous state whole. Open
// drops the shard's other generations (the leftovers of such a crash).
//
// Batches are committed to the WAL without a sync (see Sync): what a crash
// loses is a suffix of the batches committed since the last Sync, for every
// shard at once, and each shard's applied index is in the same batches as
// its state, so every shard rolls back to a state and index that belong
// together, and dragonboat replays the rest from its Raft log.
type Shared struct {
	db         *pebble.DB
	cache      *pebble.Cache
	tableCache *pebble.TableCache

	// mu guards closed: a snapshot (a Dump's, a Raft snapshot's) may be
	// released after the database closed, and pebble must not see that.
	mu     sync.RWMutex
	closed bool

	// WAL syncs, numbered: syncBegun counts those started, syncDone is the
	// number of the last one finished (they run one at a time, under
	// syncMu). A write that ended before sync n began is durable once
	// syncDone >= n, so a caller needs a sync of its own only when none
	// numbered high enough has finished (see syncUpTo).
	syncMu    sync.Mutex
	syncBegun atomic.Uint64
	syncDone  atomic.Uint64

	// pace paces the tables the store writes in the background (pace.go).
	pace *pacer
}

// sharedTableCacheSize bounds the sstables the store keeps open.
const sharedTableCacheSize = 4096

// sharedMemTableSize is the store's memtable: one for every group.
const sharedMemTableSize = 64 << 20

// OpenShared opens (or creates) the store in dir with a block cache of
// cacheBytes besides its memtables (see openSharedOn). Close it after every
// state machine that used it has closed.
func OpenShared(dir string, cacheBytes int64) (*Shared, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open state store: %w", err)
	}
	return openSharedOn(vfs.Default, dir, cacheBytes, newPacer(pacedRate), sharedMemTableSize)
}

// openSharedOn is OpenShared on fs (tests crash a store on a file system
// that forgets what was not synced), its tables paced by pace.
func openSharedOn(fs vfs.FS, dir string, cacheBytes int64, pace *pacer, memTableSize int) (*Shared, error) {
	// pebble reserves room for each memtable in the block cache: a cache
	// of cacheBytes alone held no block once a full memtable existed. The
	// blocks get cacheBytes while a memtable is flushed beside the one
	// written to, and up to cacheBytes + memTableSize between flushes.
	s := &Shared{cache: pebble.NewCache(cacheBytes + 2*int64(memTableSize)), pace: pace}
	s.tableCache = pebble.NewTableCache(s.cache, runtime.GOMAXPROCS(0), sharedTableCacheSize)
	db, err := openPebble(pacedFS{FS: fs, p: pace}, dir, s, memTableSize, false, true)
	if err != nil {
		_ = s.tableCache.Unref()
		s.cache.Unref()
		return nil, err
	}
	s.db = db
	pace.db.Store(db)
	return s, nil
}

// Close flushes the memtable (sparing a restart the replay of the log) and
// closes the store. Idempotent.
func (s *Shared) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	defer s.pace.rush()()
	_ = s.db.Flush()
	s.pace.db.Store(nil)
	err := s.db.Close()
	_ = s.tableCache.Unref()
	s.cache.Unref()
	if err != nil {
		return fmt.Errorf("close state store: %w", err)
	}
	return nil
}

// Sync makes every batch committed before the call durable: it syncs the
// WAL up to a record written after them. Many shards call it (dragonboat
// does before it compacts a shard's log, before a snapshot and every few
// minutes), and one WAL sync serves every call that began before it
// started. A memtable flush would do too, but it writes every group's
// recent state as one more small table and holds the caller (an apply
// worker other groups share) for as long as it takes.
func (s *Shared) Sync() error { return s.syncUpTo(s.nextSync()) }

// nextSync is the number of the first WAL sync that covers every batch
// committed before the call. The sync numbered syncBegun may have begun
// before such a batch ended; the one after it began later.
func (s *Shared) nextSync() uint64 { return s.syncBegun.Load() + 1 }

// syncUpTo returns once WAL sync n, or a later one, has finished, running
// one itself if none has.
func (s *Shared) syncUpTo(n uint64) error {
	if s.syncDone.Load() >= n {
		return nil
	}
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	if s.syncDone.Load() >= n {
		return nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errs.Closed
	}
	next := s.syncBegun.Add(1)
	if err := s.db.LogData(nil, pebble.Sync); err != nil {
		return err
	}
	s.syncDone.Store(next)
	return nil
}

// DropShard deletes everything the shard holds, every generation and its
// record, and compacts the range so the disk space is given back. The
// shard's state machine must be closed.
func (s *Shared) DropShard(shard uint64) error {
	lo, hi := shardRange(shard)
	b := s.db.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(lo, hi, nil); err != nil {
		return err
	}
	if err := b.Delete(genKey(shard), nil); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errs.Closed
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return err
	}
	// The tombstones are flushed by the compaction, which gives the space
	// back.
	defer s.pace.rush()()
	return s.db.Compact(lo, hi, false)
}

// Shards lists the shards that have a generation record (state) in the
// store.
func (s *Shared) Shards() ([]uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, errs.Closed
	}
	it := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{storeGen}, UpperBound: []byte{storeGen + 1}})
	var out []uint64
	for valid := it.First(); valid; valid = it.Next() {
		if k := it.Key(); len(k) == 9 {
			out = append(out, binary.BigEndian.Uint64(k[1:]))
		}
	}
	return out, it.Close()
}

// HasShard tells whether shard has state in the store.
func (s *Shared) HasShard(shard uint64) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false
	}
	gen, err := s.readGen(shard)
	return err == nil && gen != 0
}

// Key layout of the store.
const (
	storeGen   = 0x00
	storeSpace = 0x01
	spaceLen   = 1 + 8 + 8
)

func genKey(shard uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{storeGen}, shard)
}

// shardRange is every generation of shard.
func shardRange(shard uint64) (lo, hi []byte) {
	lo = binary.BigEndian.AppendUint64([]byte{storeSpace}, shard)
	return lo, prefixEnd(lo)
}

// readGen reads shard's current generation; 0 = none (a new replica).
func (s *Shared) readGen(shard uint64) (uint64, error) {
	v, closer, err := s.db.Get(genKey(shard))
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read generation: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 || binary.BigEndian.Uint64(v) == 0 {
		return 0, fmt.Errorf("corrupt generation record of shard %d (%x)", shard, v)
	}
	return binary.BigEndian.Uint64(v), nil
}

// space is shard's state in generation gen.
func (s *Shared) space(shard, gen uint64) *space {
	p := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64([]byte{storeSpace}, shard), gen)
	return &space{st: s, shard: shard, gen: gen, p: p, end: prefixEnd(p)}
}

// switchGen makes gen shard's current generation and drops every other,
// in one batch, not synced: after a crash the store holds either the old
// generation whole or the new one (see Shared).
func (s *Shared) switchGen(shard, gen uint64) error {
	b := s.db.NewBatch()
	defer b.Close()
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], gen)
	if err := b.Set(genKey(shard), v[:], nil); err != nil {
		return err
	}
	if err := s.dropOthers(b, shard, gen); err != nil {
		return err
	}
	return b.Commit(pebble.NoSync)
}

// dropOtherGens drops the generations of shard other than gen, if any.
func (s *Shared) dropOtherGens(shard, gen uint64) error {
	b := s.db.NewBatch()
	defer b.Close()
	if err := s.dropOthers(b, shard, gen); err != nil {
		return err
	}
	if b.Empty() {
		return nil
	}
	return b.Commit(pebble.NoSync)
}

// dropOthers adds to b the deletion of every generation of shard but gen,
// where keys exist (a range tombstone costs every later read that crosses
// it).
func (s *Shared) dropOthers(b *pebble.Batch, shard, gen uint64) error {
	lo, hi := shardRange(shard)
	keep := s.space(shard, gen)
	for _, r := range [][2][]byte{{lo, keep.p}, {keep.end, hi}} {
		if r[0] == nil {
			continue
		}
		it := s.db.NewIter(&pebble.IterOptions{LowerBound: r[0], UpperBound: r[1]})
		found := it.First()
		if err := it.Close(); err != nil {
			return err
		}
		if found {
			if err := b.DeleteRange(r[0], r[1], nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// openPebble opens a database, the server's store with a WAL (see Sync)
// and a replica's own (a legacy one, a restore's seed: written once, then
// flushed) without.
func openPebble(fs vfs.FS, path string, shared *Shared, memTableSize int, mustExist, wal bool) (*pebble.DB, error) {
	opts := &pebble.Options{
		ErrorIfNotExists: mustExist,
		MemTableSize:     memTableSize,
		DisableWAL:       !wal,
		// Write the WAL back as it grows rather than leave it to the
		// kernel: its batches are committed unsynced, and ext4 writes a
		// file's unsynced blocks along with the next journal commit, which
		// the Raft log's fsync on the same disk then waits for
		// (BenchmarkPutSpread p99 at 256 writers 64.6 and 54.5 ms without,
		// 47.8 and 43.9 ms with, same run).
		WALBytesPerSync: 256 << 10,
		Logger:          quietLogger{},
		// The plain file system: pebble's default wraps it in disk health
		// checks, a ticker goroutine, that report slow disks to an event
		// listener dister does not set.
		FS: fs,
	}
	if shared != nil {
		shared.pace.listen(opts)
		// Writes stop when the memtables hold this many times
		// MemTableSize: one being written to, one being flushed, and
		// room for one more, which lifts the pacing (pace.go).
		opts.MemTableStopWritesThreshold = 3
	}
	// Bloom filters: every Update looks up its dedup id, which is almost
	// always absent, and a Put's key, which often is; without filters each
	// miss reads a block of every level.
	opts.Levels = make([]pebble.LevelOptions, 7)
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
		opts.Levels[i].Compression = pebble.NoCompression
	}
	if shared != nil {
		opts.Cache, opts.TableCache = shared.cache, shared.tableCache
	} else {
		opts.Cache = pebble.NewCache(8 << 20)
		defer opts.Cache.Unref() // pebble.Open takes its own reference
	}
	db, err := pebble.Open(path, opts)
	if err != nil {
		return nil, fmt.Errorf("open pebble %s: %w", path, err)
	}
	return db, nil
}

// quietLogger drops pebble's informational chatter. Fatalf must not return:
// pebble calls it when its commit pipeline is broken and carries on as if it
// had stopped the process.
type quietLogger struct{}

func (quietLogger) Infof(string, ...interface{}) {}
func (quietLogger) Fatalf(format string, args ...interface{}) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}
