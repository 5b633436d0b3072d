package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble"

	"github.com/dister/dister/internal/errs"
)

// Exactly-once application: the client sessions of the Raft dissertation
// (section 6.3). Every command of a proposer carries its session, its
// sequence number, its mark (the proposer's lowest sequence number still
// unanswered) and its clock (see Command). Per session the state machine
// keeps
//
//	's' + session(8 BE)            -> mark(8 BE) + last time(8 BE)
//	'd' + session(8 BE) + seq(8 BE) -> index(8 BE) + encoded result
//
// a result for every sequence number at or above the mark that it applied,
// and the meta key "mclock" holds the newest command time of the group.
// A command whose id has a result is answered from it; one below the mark
// is a late copy of a command whose proposer already had its answer (or
// gave up on it) and is refused. So the table holds what is outstanding,
// whatever the load: a retry is answered from it however many other
// commands were applied in between. A session whose last time is more than
// the horizon behind the group's clock is forgotten at the next sweep
// (every sweepEvery entries, by index, so where sweeps fall depends on the
// log alone). Times are the proposing servers' clocks, carried in the
// commands (a client node's command is stamped by the server that takes
// it: a client's clock running fast would make every other session look
// idle, one running slow its own); the applying server's clock is never
// read.
//
// Data dirs written before sessions hold 'x' + index rows (the old dedup
// index); the first sweep deletes them, and their 'd' rows belong to
// sessions that are forgotten like any other.
const (
	prefixSession = 's'
	sessionKeyLen = 1 + 8

	// DefaultSessionHorizon is Options.SessionHorizon when 0: how long (on
	// the proposers' clocks, in ms) a session may be idle before its
	// results are forgotten.
	DefaultSessionHorizon = 60 * 60 * 1000
	// sweepEvery: sessions are swept when an entry's index is a multiple of it.
	sweepEvery = 1024
)

var metaClockKey = []byte{prefixMeta, 'c', 'l', 'o', 'c', 'k'}

// session is what Update keeps in memory of one session: a cache of its
// 's' row and of which 'd' rows exist, loaded at Open and on recovery.
type session struct {
	id     uint64
	mark   uint64
	last   int64
	stored []uint64 // sequence numbers with a result row, ascending
	dirty  bool     // the 's' row must be written at the end of the Update
}

func sessionKey(dst *[sessionKeyLen]byte, id uint64) []byte {
	dst[0] = prefixSession
	binary.BigEndian.PutUint64(dst[1:], id)
	return dst[:]
}

// sessionFor returns the session of cmd, starting one when it is new.
func (s *StateMachine) sessionFor(id uint64) *session {
	ss := s.sessions[id]
	if ss == nil {
		ss = &session{id: id}
		s.sessions[id] = ss
	}
	return ss
}

// dedup runs before cmd applies. It reports done, with cmd's result, when
// cmd is answered without applying: a repeated id answered from its stored result, or a
// late copy below the session's mark refused. Otherwise it has advanced the
// session (time, mark, forgetting results below the mark) and cmd applies.
func (s *StateMachine) dedup(b *batch, cmd *Command) (r Result, done bool, err error) {
	ss := s.sessionFor(cmd.Session)
	if cmd.Seq < ss.mark {
		return Result{Data: encodeError(fmt.Errorf(
			"command %d of session %x was answered or abandoned before (the session is at %d): %w",
			cmd.Seq, cmd.Session, ss.mark, errs.UnknownOutcome))}, true, nil
	}
	if cmd.Time > ss.last {
		ss.last = cmd.Time
		s.markDirty(ss)
	}
	if cmd.Time > s.clock {
		s.clock = cmd.Time
		s.clockDirty = true
	}
	if cmd.Mark > ss.mark {
		if err := s.forgetBelow(b, ss, cmd.Mark); err != nil {
			return Result{}, false, err
		}
		ss.mark = cmd.Mark
		s.markDirty(ss)
	}
	if _, found := slices.BinarySearch(ss.stored, cmd.Seq); !found {
		return Result{}, false, nil
	}
	var kb [dedupIDKeyLen]byte
	v, closer, err := b.Get(dedupIDKey(&kb, cmd.Session, cmd.Seq))
	if err != nil {
		return Result{}, false, fmt.Errorf("dedup lookup: %w", err)
	}
	defer closer.Close()
	if len(v) < 8 {
		return Result{}, false, errors.New("corrupt dedup entry")
	}
	data := append([]byte(nil), v[8:]...)
	value := binary.BigEndian.Uint64(v) // the index it applied at, as the first time
	if isErrorResult(data) {
		value = 0
	}
	return Result{Value: value, Data: data}, true, nil
}

// storeResult records the result of cmd, applied at index.
func (s *StateMachine) storeResult(b *batch, cmd *Command, index uint64, data []byte) error {
	var kb [dedupIDKeyLen]byte
	d := b.SetDeferred(dedupIDKeyLen, 8+len(data))
	copy(d.Key, dedupIDKey(&kb, cmd.Session, cmd.Seq))
	binary.BigEndian.PutUint64(d.Value, index)
	copy(d.Value[8:], data)
	if err := d.Finish(); err != nil {
		return fmt.Errorf("dedup store: %w", err)
	}
	ss := s.sessions[cmd.Session]
	i, _ := slices.BinarySearch(ss.stored, cmd.Seq)
	ss.stored = slices.Insert(ss.stored, i, cmd.Seq)
	return nil
}

// forgetBelow deletes the results of ss below mark: their proposer has
// its answers.
func (s *StateMachine) forgetBelow(b *batch, ss *session, mark uint64) error {
	n := 0
	var kb [dedupIDKeyLen]byte
	for _, seq := range ss.stored {
		if seq >= mark {
			break
		}
		if err := b.Delete(dedupIDKey(&kb, ss.id, seq), nil); err != nil {
			return fmt.Errorf("dedup trim: %w", err)
		}
		n++
	}
	ss.stored = ss.stored[n:]
	if len(ss.stored) == 0 {
		ss.stored = nil
	}
	return nil
}

func (s *StateMachine) markDirty(ss *session) {
	if !ss.dirty {
		ss.dirty = true
		s.dirtySessions = append(s.dirtySessions, ss)
	}
}

// writeSessions writes the 's' rows and the clock that the Update changed.
func (s *StateMachine) writeSessions(b *batch) error {
	var kb [sessionKeyLen]byte
	var v [16]byte
	for _, ss := range s.dirtySessions {
		ss.dirty = false
		if s.sessions[ss.id] != ss { // swept meanwhile
			continue
		}
		binary.BigEndian.PutUint64(v[:8], ss.mark)
		binary.BigEndian.PutUint64(v[8:], uint64(ss.last))
		if err := b.Set(sessionKey(&kb, ss.id), v[:], nil); err != nil {
			return fmt.Errorf("write session: %w", err)
		}
	}
	clear(s.dirtySessions)
	s.dirtySessions = s.dirtySessions[:0]
	if s.clockDirty {
		var c [8]byte
		binary.BigEndian.PutUint64(c[:], uint64(s.clock))
		if err := b.Set(metaClockKey, c[:], nil); err != nil {
			return fmt.Errorf("write clock: %w", err)
		}
		s.clockDirty = false
	}
	return nil
}

// sweepSessions forgets the sessions idle past the horizon, and the
// pre-session dedup index of an old data dir.
func (s *StateMachine) sweepSessions(b *batch) error {
	var kb [sessionKeyLen]byte
	for id, ss := range s.sessions {
		if s.clock-ss.last <= s.horizon {
			continue
		}
		if err := s.forgetBelow(b, ss, ^uint64(0)); err != nil {
			return err
		}
		if err := b.Delete(sessionKey(&kb, id), nil); err != nil {
			return fmt.Errorf("sweep sessions: %w", err)
		}
		delete(s.sessions, id)
	}
	if !s.legacyDedup {
		return nil
	}
	s.legacyDedup = false
	return s.deleteRange(b, []byte{prefixDedupIdx}, []byte{prefixDedupIdx + 1})
}

// deleteRange deletes every key in [lower, upper) one by one (see
// trimEvents for why not with a range tombstone).
func (s *StateMachine) deleteRange(b *batch, lower, upper []byte) error {
	for {
		it := b.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		buf := s.scratch[:0]
		ends := s.ends[:0]
		exhausted := true
		for valid := it.First(); valid; valid = it.Next() {
			if len(ends) == deletePrefixChunk {
				exhausted = false
				break
			}
			buf = append(buf, it.Key()...)
			ends = append(ends, len(buf))
		}
		if err := it.Close(); err != nil {
			return fmt.Errorf("delete range: %w", err)
		}
		start := 0
		for _, end := range ends {
			if err := b.Delete(buf[start:end], nil); err != nil {
				return fmt.Errorf("delete range: %w", err)
			}
			start = end
		}
		s.scratch, s.ends = buf[:0], ends[:0]
		if exhausted {
			s.releaseScratch()
			return nil
		}
		lower = append(append([]byte(nil), lastOf(buf, ends)...), 0)
	}
}

// loadSessions reads the sessions, their stored results and the clock.
func loadSessions(db *space) (map[uint64]*session, int64, bool, error) {
	sessions := map[uint64]*session{}
	get := func(id uint64) *session {
		ss := sessions[id]
		if ss == nil {
			ss = &session{id: id}
			sessions[id] = ss
		}
		return ss
	}
	it := db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixSession}, UpperBound: []byte{prefixSession + 1}})
	for valid := it.First(); valid; valid = it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != sessionKeyLen || len(v) != 16 {
			_ = it.Close()
			return nil, 0, false, fmt.Errorf("corrupt session row %x", k)
		}
		ss := get(binary.BigEndian.Uint64(k[1:]))
		ss.mark = binary.BigEndian.Uint64(v[:8])
		ss.last = int64(binary.BigEndian.Uint64(v[8:]))
	}
	if err := it.Close(); err != nil {
		return nil, 0, false, fmt.Errorf("load sessions: %w", err)
	}
	it = db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixDedupID}, UpperBound: []byte{prefixDedupID + 1}})
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) != dedupIDKeyLen {
			_ = it.Close()
			return nil, 0, false, fmt.Errorf("corrupt dedup row %x", k)
		}
		ss := get(binary.BigEndian.Uint64(k[1:9]))
		ss.stored = append(ss.stored, binary.BigEndian.Uint64(k[9:])) // keys are sorted
	}
	if err := it.Close(); err != nil {
		return nil, 0, false, fmt.Errorf("load dedup rows: %w", err)
	}
	it = db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixDedupIdx}, UpperBound: []byte{prefixDedupIdx + 1}})
	legacy := it.First()
	if err := it.Close(); err != nil {
		return nil, 0, false, fmt.Errorf("look for the old dedup index: %w", err)
	}
	var clock int64
	v, closer, err := db.Get(metaClockKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		return nil, 0, false, fmt.Errorf("read clock: %w", err)
	default:
		if len(v) != 8 {
			_ = closer.Close()
			return nil, 0, false, fmt.Errorf("corrupt clock (%d bytes)", len(v))
		}
		clock = int64(binary.BigEndian.Uint64(v))
		_ = closer.Close()
	}
	return sessions, clock, legacy, nil
}
