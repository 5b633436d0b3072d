package fsm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble"

	"github.com/dister/dister/internal/errs"
)

// ErrStopped is returned by Open, SaveSnapshot and RecoverFromSnapshot when
// their stop channel was closed; internal/shard maps it to dragonboat's
// ErrOpenStopped / ErrSnapshotStopped.
var ErrStopped = errors.New("stopped")

// Options configures a StateMachine.
type Options struct {
	// SessionHorizon is how long, in ms of the proposing servers' clocks, a
	// session may be idle before its stored results are forgotten (see
	// sessions.go). It must be the same on every replica of a group, since
	// it shapes the replicated state. 0 = DefaultSessionHorizon.
	SessionHorizon int64
	// EventRetention is how many revisions of watch events are kept: when
	// a command raises the revision to r, a multiple of 1024 greater than
	// the retention, the events of revisions <= r-EventRetention are dropped
	// and the compact revision becomes r-EventRetention+1. Like
	// SessionHorizon it must be the same on every replica of a group.
	// 0 = DefaultEventRetention.
	EventRetention uint64
	// Shared is the store the state machines of one host keep their state
	// in, each in the key space of its Shard. Nil = a store of this state
	// machine's own, under its directory, closed by its Close.
	Shared *Shared
	// Shard names this state machine's key space in Shared (its Raft
	// shard id). 0 is a valid id.
	Shard uint64
}

// StateMachine is one replica's state on pebble.
//
// Concurrency: Update, Open, RecoverFromSnapshot and Close are never called
// concurrently with each other (dragonboat's contract); Lookup, Sync,
// PrepareSnapshot, SaveSnapshot, Applied and WaitApplied may run at any time.
// mu guards the database handle against being closed or swapped (Close,
// RecoverFromSnapshot) while a reader uses it.
type StateMachine struct {
	dir       string // legacy data (a replica's own database, a restore's seed), imported by Open
	horizon   int64
	retention uint64
	shard     uint64
	shared    *Shared // nil = a store of its own

	mu     sync.RWMutex
	store  *Shared // shared, or its own (opened by Open, closed by Close)
	db     *space  // the current generation; nil before Open and after Close
	closed bool

	applied     atomic.Uint64
	revision    atomic.Int64  // the group's revision as of the last commit
	epoch       atomic.Uint64 // the lessor epoch as of the last commit
	compact     atomic.Int64  // compact revision as of the last commit
	leaseGen    atomic.Uint64 // see LeaseGeneration
	reservedGen atomic.Uint64 // see ReservedGeneration
	// commits counts Update's commits twice: odd from just before a
	// commit until its revision is stored, even otherwise. A reader that
	// finds it even and unchanged around opening its iterator knows the
	// iterator sees the state of revision (readView).
	commits atomic.Uint64

	// WaitApplied's wake-up: waiters take waitCh; Update closes and replaces
	// it only when someone took it (waiting), so an Update nobody waits for
	// allocates nothing.
	waitMu  sync.Mutex
	waitCh  chan struct{}
	waiting bool
	done    chan struct{} // closed by Close
	once    sync.Once

	// Update-only state (Update is single-threaded), loaded by Open and
	// RecoverFromSnapshot; see sessions.go.
	sessions      map[uint64]*session
	dirtySessions []*session
	clock         int64 // the newest command time applied
	clockDirty    bool
	legacyDedup   bool  // the data dir holds a pre-session dedup index
	leaseBase     int64 // added to the index to make a lease id (backup.go)
	// counting: revisions are the counter (see Update); false until the
	// first entry of the current codec, while entries of the previous
	// binary keep its revisions, their indexes.
	counting bool
	kbuf     []byte // 'k'+key of the op being applied
	abuf     []byte // 'a'+lease+key being written
	scratch  []byte // keys collected by trimDedup, deletePrefix and revokeLease
	ends     []int  // where the items in scratch end

	// failCommit, when set (tests), fails Update in place of its commit.
	failCommit error
	// broken is set when a failed Update could not restore the state
	// Update works from: every later Update fails with it.
	broken error

	evRev           uint64 // revision of the events being written
	evSeq           uint32 // sequence of the next event of evRev
	epochNow        uint64 // the lessor epoch as the entry being applied sees it
	leasesChanged   bool   // the Update being applied changed a lease
	reservedChanged bool   // ... or a key of the reserved namespace
}

// New returns a StateMachine storing its data under dir (this replica's own
// folder, created by Open).
func New(dir string, o Options) *StateMachine {
	hz := o.SessionHorizon
	if hz <= 0 {
		hz = DefaultSessionHorizon
	}
	r := o.EventRetention
	if r == 0 {
		r = DefaultEventRetention
	}
	s := &StateMachine{
		dir:       dir,
		horizon:   hz,
		retention: r,
		shard:     o.Shard,
		shared:    o.Shared,
		waitCh:    make(chan struct{}),
		done:      make(chan struct{}),
	}
	s.compact.Store(1)
	return s
}

// ownStoreDir is the store under dir of a state machine that has no
// Options.Shared.
const ownStoreDir = "store"

// Open opens the state machine's key space (creating it, or importing the
// database of a replica that had one of its own) and returns the applied
// index it holds: dragonboat replays the log from the next index.
func (s *StateMachine) Open(stop <-chan struct{}) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("open after close: %w", errs.Closed)
	}
	if s.db != nil {
		return 0, errors.New("already open")
	}
	select {
	case <-stop:
		return 0, ErrStopped
	default:
	}
	st := s.shared
	if st == nil {
		var err error
		if st, err = OpenShared(filepath.Join(s.dir, ownStoreDir), 8<<20); err != nil {
			return 0, fmt.Errorf("open: %w", err)
		}
	}
	sp, err := s.openSpace(st)
	if err == nil {
		var ld loadedState
		if ld, err = loadState(sp); err == nil {
			s.store, s.db = st, sp
			s.loaded(ld)
			s.applied.Store(ld.applied)
			s.leaseGen.Add(1)
			s.reservedGen.Add(1)
			return ld.applied, nil
		}
	}
	if st != s.shared {
		_ = st.Close()
	}
	return 0, err
}

// openSpace returns the shard's current generation in st: the one its
// record names (dropping any other, the leftovers of a recovery that
// crashed), an import of the legacy database in dir, or a new one.
func (s *StateMachine) openSpace(st *Shared) (*space, error) {
	gen, err := st.readGen(s.shard)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(s.dir, currentFile)); err == nil {
		return s.importLegacy(st, gen+1)
	}
	if err := removeStale(s.dir, 0); err != nil {
		return nil, err
	}
	fresh := gen == 0
	if fresh {
		// A new replica. The record need not be durable before its data
		// is: the store loses a suffix of its batches in a crash, so data
		// of generation 1 never outlives it.
		gen = 1
		err = st.switchGen(s.shard, gen)
	} else {
		err = st.dropOtherGens(s.shard, gen)
	}
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	sp := st.space(s.shard, gen)
	if !fresh {
		// The state found may hold writes of an earlier run in this process
		// (a replica stopped and started again on the same store) that no
		// WAL sync has covered yet; the applied index Open reports counts
		// them, so the first Sync must not be skipped.
		sp.wrote()
	}
	return sp, nil
}

// loadedState is what Update keeps in memory, as loadState read it.
type loadedState struct {
	applied  uint64
	revision int64
	epoch    uint64
	compact  int64
	sessions map[uint64]*session
	clock    int64
	legacy   bool // pre-session dedup index present
	counting bool // a revision counter is stored
	// leaseBase is added to the Raft index to make a lease id (restored
	// replicas, see backup.go).
	leaseBase uint64
}

// loaded installs st as the state Update works from (the applied index is
// published by the caller, after the database is in place).
func (s *StateMachine) loaded(st loadedState) {
	s.sessions, s.clock, s.legacyDedup, s.counting = st.sessions, st.clock, st.legacy, st.counting
	s.leaseBase = int64(st.leaseBase)
	s.dirtySessions, s.clockDirty = nil, false
	s.revision.Store(st.revision)
	s.epoch.Store(st.epoch)
	s.compact.Store(st.compact)
}

// dropUpdate undoes in memory what an Update that failed did: its batch
// is dropped, so the sessions, results and clock it noted are not the
// store's. They are read from the store again (a replica whose engine
// applies the entries again must dedup them as the others do); when that
// fails too, the state machine refuses every later Update.
func (s *StateMachine) dropUpdate() {
	ld, err := loadState(s.db)
	if err != nil {
		s.broken = fmt.Errorf("update: state not restored after a failed update: %w", err)
		return
	}
	s.loaded(ld)
}

// readUint64 reads an 8-byte big-endian meta value; found false if absent.
func readUint64(db *space, key []byte, what string) (v uint64, found bool, err error) {
	b, closer, err := db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read %s: %w", what, err)
	}
	defer closer.Close()
	if len(b) != 8 {
		return 0, false, fmt.Errorf("corrupt %s (%d bytes)", what, len(b))
	}
	return binary.BigEndian.Uint64(b), true, nil
}

// loadState reads what Update keeps in memory. A data dir written before
// revisions were a counter (or a fresh one) has none stored: its revision
// was the applied index, and the counter starts from there at the first
// entry of the current codec.
func loadState(db *space) (st loadedState, err error) {
	if st.applied, _, err = readUint64(db, metaAppliedKey, "applied index"); err != nil {
		return st, err
	}
	rev, found, err := readUint64(db, metaRevisionKey, "revision")
	if err != nil {
		return st, err
	}
	st.counting = found
	if !found {
		rev = st.applied
	}
	if rev > math.MaxInt64 {
		return st, fmt.Errorf("corrupt revision %d", rev)
	}
	st.revision = int64(rev)
	if st.epoch, _, err = readUint64(db, metaEpochKey, "lessor epoch"); err != nil {
		return st, err
	}
	c, found, err := readUint64(db, metaCompactKey, "compact revision")
	if err != nil {
		return st, err
	}
	var cb []byte
	if found {
		cb = binary.BigEndian.AppendUint64(nil, c)
	}
	if st.compact, err = readCompact(cb, found); err != nil {
		return st, err
	}
	if st.leaseBase, _, err = readUint64(db, metaLeaseBaseKey, "lease id base"); err != nil {
		return st, err
	}
	if st.leaseBase > maxLeaseBase {
		return st, fmt.Errorf("fsm: corrupt lease id base %d", st.leaseBase)
	}
	st.sessions, st.clock, st.legacy, err = loadSessions(db)
	return st, err
}

// Close closes the state machine (and its own store, if it has one; a
// shared one stays open for the others); later calls return errs.Closed.
// Idempotent.
func (s *StateMachine) Close() error {
	s.mu.Lock()
	st := s.store
	s.db, s.store = nil, nil
	s.closed = true
	s.mu.Unlock()
	s.once.Do(func() { close(s.done) })
	if st == nil || st == s.shared {
		return nil
	}
	return st.Close()
}

// Sync makes every applied entry durable: Update writes only the memtable
// (no WAL) since the Raft log can replay it, and dragonboat calls Sync
// before it compacts that log.
func (s *StateMachine) Sync() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return fmt.Errorf("sync: %w", errs.Closed)
	}
	if err := s.db.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	return nil
}

// Applied returns the index of the last applied entry.
func (s *StateMachine) Applied() uint64 { return s.applied.Load() }

// Revision returns the group's revision as of the last applied Update.
func (s *StateMachine) Revision() int64 { return s.revision.Load() }

// WaitApplied returns nil once Applied() >= index, ctx.Err() when ctx ends
// first, errs.Closed when the state machine is closed first.
func (s *StateMachine) WaitApplied(ctx context.Context, index uint64) error {
	return s.wait(ctx, func() bool { return s.applied.Load() >= index })
}

// WaitRevision returns nil once Revision() >= rev, ctx.Err() when ctx ends
// first, errs.Closed when the state machine is closed first.
func (s *StateMachine) WaitRevision(ctx context.Context, rev int64) error {
	return s.wait(ctx, func() bool { return s.revision.Load() >= rev })
}

// wait returns once reached holds; it is checked after every Update.
func (s *StateMachine) wait(ctx context.Context, reached func() bool) error {
	for {
		if reached() {
			return nil
		}
		s.waitMu.Lock()
		ch := s.waitCh
		s.waiting = true
		s.waitMu.Unlock()
		// An Update that published before we took ch did not close ch for
		// us: look again before sleeping.
		if reached() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.done:
			return fmt.Errorf("wait: %w", errs.Closed)
		}
	}
}

// setApplied publishes a new applied index and wakes the waiters.
func (s *StateMachine) setApplied(index uint64) {
	s.applied.Store(index)
	s.waitMu.Lock()
	if s.waiting {
		close(s.waitCh)
		s.waitCh = make(chan struct{})
		s.waiting = false
	}
	s.waitMu.Unlock()
}

// Update applies entries in order in one pebble batch and fills each
// entry's Result. Entries at or below the applied index are skipped (their
// Result is left as is): they are already part of the state. It returns an
// error only when storage fails.
func (s *StateMachine) Update(entries []Entry) (_ []Entry, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return entries, fmt.Errorf("update: %w", errs.Closed)
	}
	if s.broken != nil {
		return entries, s.broken
	}
	defer func() {
		if err != nil {
			s.dropUpdate()
			// An odd count here is this Update's failed commit (a broken
			// state machine returns above). It applied nothing (pebble
			// fails a commit before it applies it) and the revision is
			// the store's again: the count is even again, unless the
			// state could not be reloaded (then reads keep reading the
			// revision from their view).
			if s.broken == nil && s.commits.Load()%2 == 1 {
				s.commits.Add(1)
			}
		}
	}()
	b := s.db.NewIndexedBatch()
	defer b.Close()
	last := s.applied.Load()
	rev := s.revision.Load()
	epoch := s.epoch.Load()
	compact := s.compact.Load()
	counting := s.counting
	s.leasesChanged = false
	s.reservedChanged = false
	for i := range entries {
		e := &entries[i]
		if e.Index <= last {
			continue
		}
		// The entry's changes, if it makes any, are the next revision. An
		// entry of the previous binary (codec version 1) before the first
		// of the current codec keeps that binary's revision, its index: a
		// replica upgraded early and one upgraded late must agree.
		previous := !counting && (len(e.Cmd) == 0 || e.Cmd[0] != cmdCodecVersion)
		counting = counting || !previous
		if previous {
			rev = int64(e.Index) - 1
		}
		var err error
		switch {
		case previous:
			s.evRev, s.evSeq, s.epochNow = uint64(rev)+1, 0, epoch
			if e.Result, err = s.applyCommand(b, e.Cmd, e.Index); err != nil {
				return entries, err
			}
			epoch, rev = s.epochNow, int64(e.Index)
			if s.evSeq > 0 {
				err = s.trimEvents(b, uint64(rev), &compact)
			}
		case isBatch(e.Cmd):
			e.Result, err = s.applyBatch(b, e, &rev, &epoch, &compact)
		default:
			e.Result, err = s.applyCounted(b, e.Cmd, e.Index, &rev, &epoch, &compact)
		}
		if err != nil {
			return entries, err
		}
		if e.Index%sweepEvery == 0 {
			if err := s.sweepSessions(b); err != nil {
				return entries, err
			}
		}
		last = e.Index
	}
	if last == s.applied.Load() {
		return entries, nil
	}
	var ab [8]byte
	binary.BigEndian.PutUint64(ab[:], last)
	if err := b.Set(metaAppliedKey, ab[:], nil); err != nil {
		return entries, fmt.Errorf("update: %w", err)
	}
	if counting {
		binary.BigEndian.PutUint64(ab[:], uint64(rev))
		if err := b.Set(metaRevisionKey, ab[:], nil); err != nil {
			return entries, fmt.Errorf("update: %w", err)
		}
	}
	if epoch != s.epoch.Load() {
		binary.BigEndian.PutUint64(ab[:], epoch)
		if err := b.Set(metaEpochKey, ab[:], nil); err != nil {
			return entries, fmt.Errorf("update: %w", err)
		}
	}
	if err := s.writeSessions(b); err != nil {
		return entries, err
	}
	if s.failCommit != nil {
		return entries, s.failCommit
	}
	// Odd while the state and s.revision may disagree (readView).
	s.commits.Add(1)
	if err := b.Commit(pebble.NoSync); err != nil {
		return entries, fmt.Errorf("update: commit: %w", err)
	}
	s.compact.Store(compact)
	s.epoch.Store(epoch)
	s.counting = counting
	if s.leasesChanged {
		s.leaseGen.Add(1)
	}
	if s.reservedChanged {
		s.reservedGen.Add(1)
	}
	// The revision before the applied index: a reader that sees the index
	// (dragonboat's ReadIndex waits on it) finds the revision of it.
	s.revision.Store(rev)
	s.commits.Add(1)
	s.setApplied(last)
	return entries, nil
}
