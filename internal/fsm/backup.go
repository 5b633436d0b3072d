package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"

	"github.com/dister/dister/internal/errs"
)

// Backups. A cluster backup carries, per group, the records a new cluster
// needs to continue from: every key record ('k', the reserved namespace
// included) and every lease ('l'), as stored. It leaves out what belongs
// to the old cluster's Raft log and proposers (applied index, sessions,
// stored results, lessor epoch) and the watch history: a restored group
// starts its history above the backup's revision, so a watch from before
// gets ErrCompacted instead of a gap. Attachments ('a') follow from the key
// records and are rebuilt by the Seeder.

// DumpQuery asks Lookup for a *Dump of the state as of now.
type DumpQuery struct{}

// Dump is a point-in-time view of a state machine's backup records. It
// pins a pebble snapshot: Close it. Reading it never holds the state
// machine's lock for longer than one chunk, so Update is not held up.
type Dump struct {
	Revision int64
	s        *StateMachine
	db       *space
	snap     *snapshot
	once     sync.Once
}

// dumpChunk bounds the records copied out under the read lock at a time.
const dumpChunk = 1 << 20

var (
	dumpLower = []byte{prefixKey}
	dumpUpper = []byte{prefixLease + 1}
)

func (s *StateMachine) dump() (*Dump, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return nil, fmt.Errorf("fsm: dump: %w", errs.Closed)
	}
	snap := s.db.NewSnapshot()
	rev, found, err := snapUint64(snap, metaRevisionKey)
	if err == nil && !found {
		rev, _, err = snapUint64(snap, metaAppliedKey)
	}
	if err != nil {
		_ = snap.Close()
		return nil, err
	}
	return &Dump{Revision: int64(rev), s: s, db: s.db, snap: snap}, nil
}

func snapUint64(snap *snapshot, key []byte) (uint64, bool, error) {
	v, closer, err := snap.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("fsm: dump: %w", err)
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, false, fmt.Errorf("fsm: corrupt meta value %q (%d bytes)", key[1:], len(v))
	}
	return binary.BigEndian.Uint64(v), true, nil
}

// Close releases the snapshot. Idempotent.
func (d *Dump) Close() {
	d.once.Do(func() {
		// Safe after the store closed, which took its snapshots along.
		_ = d.snap.Close()
	})
}

// EstimateBytes is about what the records weigh on disk now (for a
// progress bar; the live database, not the snapshot).
func (d *Dump) EstimateBytes() int64 {
	d.s.mu.RLock()
	defer d.s.mu.RUnlock()
	if d.s.db != d.db {
		return 0
	}
	n, err := d.db.EstimateDiskUsage(dumpLower, dumpUpper)
	if err != nil {
		return 0
	}
	return int64(n)
}

// Each calls fn with every backup record in key order: key records, then
// leases. The slices are valid only during the call. A replica whose
// database was closed or replaced (a Raft snapshot installed) meanwhile
// fails with errs.Closed.
func (d *Dump) Each(fn func(key, value []byte) error) error {
	var buf []byte
	var ends []int
	lower := append([]byte(nil), dumpLower...)
	for {
		buf, ends = buf[:0], ends[:0]
		more, err := d.chunk(lower, &buf, &ends)
		if err != nil {
			return err
		}
		start := 0
		var lastKey []byte
		for i := 0; i+1 < len(ends); i += 2 {
			k, v := buf[start:ends[i]], buf[ends[i]:ends[i+1]]
			start = ends[i+1]
			if err := fn(k, v); err != nil {
				return err
			}
			lastKey = k
		}
		if !more {
			return nil
		}
		lower = append(append(lower[:0], lastKey...), 0)
	}
}

// chunk copies records from lower on into buf (key, value, key, ...; ends
// marks where each ends) until about dumpChunk bytes; more tells whether
// records are left.
func (d *Dump) chunk(lower []byte, buf *[]byte, ends *[]int) (more bool, err error) {
	d.s.mu.RLock()
	defer d.s.mu.RUnlock()
	if d.s.db != d.db {
		return false, fmt.Errorf("fsm: dump: the replica's state was closed or replaced during the backup: %w", errs.Closed)
	}
	it := d.snap.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: dumpUpper})
	for valid := it.First(); valid; valid = it.Next() {
		if len(*buf) >= dumpChunk && len(*ends) > 0 {
			more = true
			break
		}
		*buf = append(*buf, it.Key()...)
		*ends = append(*ends, len(*buf))
		*buf = append(*buf, it.Value()...)
		*ends = append(*ends, len(*buf))
	}
	if err := it.Close(); err != nil {
		return false, fmt.Errorf("fsm: dump: %w", err)
	}
	return more, nil
}

// Record kinds of a backup, by their first byte.
const (
	BackupKey   = prefixKey
	BackupLease = prefixLease
)

// BackupUserKey returns the key a key record names (its reserved-namespace
// prefix included), or false if key is not a key record.
func BackupUserKey(key []byte) ([]byte, bool) {
	if len(key) < 2 || key[0] != prefixKey {
		return nil, false
	}
	return key[1:], true
}

// LeaseWithRemaining returns a lease record (key, value) whose checkpoint
// is remaining ms (at least 1, at most the TTL), so that a new leader
// starts its countdown there.
func LeaseWithRemaining(key, value []byte, remaining func(id int64) int64) (id int64, out []byte, err error) {
	if len(key) != leaseKeyLen || key[0] != prefixLease {
		return 0, nil, fmt.Errorf("fsm: %x is no lease key: %w", key, errCorruptLease)
	}
	id = int64(binary.BigEndian.Uint64(key[1:]))
	l, err := decodeLeaseRecord(value)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: lease %d", err, id)
	}
	l.remaining = min(max(remaining(id), 1), l.ttl)
	return id, appendLeaseRecord(nil, l), nil
}

// LeaseOf decodes a lease record: its id, TTL and checkpointed remaining
// time (ms; 0 = none).
func LeaseOf(key, value []byte) (id, ttl, remaining int64, err error) {
	if len(key) != leaseKeyLen || key[0] != prefixLease {
		return 0, 0, 0, fmt.Errorf("fsm: %x is no lease key: %w", key, errCorruptLease)
	}
	l, err := decodeLeaseRecord(value)
	if err != nil {
		return 0, 0, 0, err
	}
	return int64(binary.BigEndian.Uint64(key[1:])), l.ttl, l.remaining, nil
}

// Seeder writes the state of a new replica: the records of a backup, or
// keys of its own (a catalog). The replica starts from it with applied
// index 0, so the Raft log of the new cluster applies on top of it.
type Seeder struct {
	dir      string
	db       *pebble.DB
	b        *pebble.Batch
	prev     []byte
	n        int
	abuf     []byte
	leaseMax int64
	maxMod   int64          // the newest mod revision of a key record
	leases   map[int64]bool // leases seen
	needed   map[int64]bool // leases named by key records
}

// metaLeaseBaseKey holds the lease id base of a restored replica: a grant
// without an id gets Raft index + base, above every restored lease id
// (absent = 0).
var metaLeaseBaseKey = []byte{prefixMeta, 'l', 'e', 'a', 's', 'e', 'b', 'a', 's', 'e'}

// maxLeaseBase bounds the lease id base (and so a restored lease id), so
// that index + base never overflows; loadState refuses a larger base, so
// the Seeder refuses such a lease rather than seed a replica that cannot
// open.
const maxLeaseBase = math.MaxInt64 / 2

// NewSeeder creates dir (which must not exist or be empty) and a database
// generation in it to seed.
func NewSeeder(dir string) (*Seeder, error) {
	if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("fsm: seed %s: the directory is not empty: %w", dir, errs.Invalid)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("fsm: seed: %w", err)
	}
	db, err := openPebble(vfs.Default, filepath.Join(dir, dbDirName(1)), nil, legacyMemTableSize, false, false)
	if err != nil {
		return nil, err
	}
	return &Seeder{dir: dir, db: db, b: db.NewBatch(), leases: map[int64]bool{}, needed: map[int64]bool{}}, nil
}

var errCorruptBackup = errors.New("fsm: corrupt backup record")

// Add stores one backup record; records come in strictly increasing key
// order, as Dump.Each gives them.
func (s *Seeder) Add(key, value []byte) error {
	if s.n > 0 && bytes.Compare(key, s.prev) <= 0 {
		return fmt.Errorf("%w: record %d out of order", errCorruptBackup, s.n)
	}
	switch {
	case len(key) == 0:
		return fmt.Errorf("%w: empty key", errCorruptBackup)
	case len(key) >= 2 && key[0] == prefixKey:
		if len(key)-1 > MaxKeySize {
			return fmt.Errorf("%w: key of %d bytes", errCorruptBackup, len(key)-1)
		}
		h, _, err := decodeRecord(value)
		if err != nil {
			return fmt.Errorf("%w: key %q: %v", errCorruptBackup, key[1:], err)
		}
		// A stored key was created at revision 1 or later and written at
		// least once: a create revision of 0 would pass a create-if-absent
		// compare on a key that exists.
		if h.create < 1 || h.create > h.mod || h.version < 1 {
			return fmt.Errorf("%w: key %q created at revision %d, modified at %d, version %d", errCorruptBackup, key[1:], h.create, h.mod, h.version)
		}
		s.maxMod = max(s.maxMod, h.mod)
		if h.lease != 0 {
			s.needed[h.lease] = true
			s.abuf = appendAttachKey(s.abuf, h.lease, key[1:])
			if err := s.b.Set(s.abuf, nil, nil); err != nil {
				return fmt.Errorf("fsm: seed: %w", err)
			}
		}
	case key[0] == prefixLease:
		id, _, _, err := LeaseOf(key, value)
		if err != nil || id <= 0 || id > maxLeaseBase {
			return fmt.Errorf("%w: lease %x: %v", errCorruptBackup, key, err)
		}
		s.leases[id] = true
		s.leaseMax = max(s.leaseMax, id)
	default:
		return fmt.Errorf("%w: unknown record kind %q", errCorruptBackup, key[0])
	}
	if err := s.b.Set(key, value, nil); err != nil {
		return fmt.Errorf("fsm: seed: %w", err)
	}
	s.prev = append(s.prev[:0], key...)
	s.n++
	return s.maybeCommit()
}

// Put stores key with value as written at revision rev (version 1).
func (s *Seeder) Put(key string, value []byte, rev int64) error {
	var hb [maxRecordHeader]byte
	rec := append(putRecordHeader(&hb, recordHeader{create: rev, mod: rev, version: 1}), value...)
	if err := s.b.Set(appendUserKey(nil, key), rec, nil); err != nil {
		return fmt.Errorf("fsm: seed: %w", err)
	}
	return s.maybeCommit()
}

func (s *Seeder) maybeCommit() error {
	if s.b.Len() < recoverBatchSize {
		return nil
	}
	if err := s.b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("fsm: seed: %w", err)
	}
	_ = s.b.Close()
	s.b = s.db.NewBatch()
	return nil
}

// Finish sets the revision (the compact revision goes just above it: the
// history before is not carried), flushes, and makes the seeded database
// the replica's. On an error it aborts (see Abort): nothing stays open.
func (s *Seeder) Finish(revision int64) error {
	err := s.finish(revision)
	if err != nil {
		s.Abort()
	}
	return err
}

func (s *Seeder) finish(revision int64) error {
	for id := range s.needed {
		if !s.leases[id] {
			return fmt.Errorf("%w: keys are attached to lease %d, which the backup lacks", errCorruptBackup, id)
		}
	}
	if revision < 0 || revision >= math.MaxInt64-1 {
		return fmt.Errorf("fsm: seed: revision %d: %w", revision, errs.Invalid)
	}
	if s.maxMod > revision {
		// Revisions would go backwards: the next write is below a key's.
		return fmt.Errorf("%w: a key modified at revision %d, above the group's %d", errCorruptBackup, s.maxMod, revision)
	}
	var v [8]byte
	for _, m := range []struct {
		key []byte
		v   uint64
	}{{metaRevisionKey, uint64(revision)}, {metaCompactKey, uint64(revision) + 1}, {metaLeaseBaseKey, uint64(s.leaseMax)}} {
		binary.BigEndian.PutUint64(v[:], m.v)
		if err := s.b.Set(m.key, v[:], nil); err != nil {
			return fmt.Errorf("fsm: seed: %w", err)
		}
	}
	if err := s.b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("fsm: seed: %w", err)
	}
	_ = s.b.Close()
	s.b = nil
	if err := s.db.Flush(); err != nil {
		return fmt.Errorf("fsm: seed: flush: %w", err)
	}
	err := s.db.Close()
	s.db = nil
	if err != nil {
		return fmt.Errorf("fsm: seed: %w", err)
	}
	return writeCurrent(s.dir, 1)
}

// Abort drops what was seeded and the directory.
// Idempotent.
func (s *Seeder) Abort() {
	if s.b != nil {
		_ = s.b.Close()
		s.b = nil
	}
	if s.db != nil {
		_ = s.db.Close()
		s.db = nil
	}
	_ = os.RemoveAll(s.dir)
}
