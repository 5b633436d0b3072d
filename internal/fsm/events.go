package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble"

	"github.com/dister/dister/internal/errs"
)

// Watch events. Update records every change a command makes under
// 'e' + revision + seq (keys.go), in the same batch as the change itself, so
// the history is part of the replicated state: deterministic, carried by
// snapshots, the same on every replica.
//
// Event encoding (the value of an 'e' key):
//
//	byte    format (1)
//	byte    EventType
//	uvarint len + key
//	EventPut only: the new record (see below)
//	byte    0 = no previous entry, 1 = a previous record follows
//	record: uvarint CreateRevision, uvarint ModRevision, uvarint Version,
//	        varint Lease, uvarint len + value
//
// The revision is in the key, not the value. A delete stores no record of
// its own: its KV is the key and the revision.
const (
	eventFormat = 1
	// maxEventRecord is an encoded record's size without its value.
	maxEventRecord = 5 * binary.MaxVarintLen64
	maxEventHeader = 2 + binary.MaxVarintLen64

	// DefaultEventRetention is Options.EventRetention when 0.
	DefaultEventRetention = 100_000
	// eventTrimEvery: events are trimmed when a command raises the
	// revision to a multiple of it, so where trims fall depends on the log
	// alone, never on how entries were batched into Update calls.
	eventTrimEvery = 1024
)

func appendEventRecord(dst []byte, h recordHeader, valueLen int) []byte {
	dst = binary.AppendUvarint(dst, uint64(h.create))
	dst = binary.AppendUvarint(dst, uint64(h.mod))
	dst = binary.AppendUvarint(dst, uint64(h.version))
	dst = binary.AppendVarint(dst, h.lease)
	return binary.AppendUvarint(dst, uint64(valueLen))
}

// writeEvent appends the next event of the entry being applied (revision
// s.evRev) to b, encoded straight into the batch. cur and value are the new
// record of a put (ignored for a delete); prev and prevValue the previous
// record when hasPrev. prevValue may alias pebble memory: it is copied here.
func (s *StateMachine) writeEvent(b *batch, typ EventType, key []byte,
	cur recordHeader, value []byte, hasPrev bool, prev recordHeader, prevValue []byte) error {
	if s.evSeq == math.MaxUint32 {
		return errors.New("more than 2^32-1 events in one revision")
	}
	var kb [eventKeyLen]byte
	k := eventKey(&kb, s.evRev, s.evSeq)
	s.evSeq++
	if len(key) > 0 && key[0] == reservedByte {
		s.reservedChanged = true
	}

	var hb [maxEventHeader]byte
	head := append(hb[:0], eventFormat, byte(typ))
	head = binary.AppendUvarint(head, uint64(len(key)))
	var cb [maxEventRecord]byte
	var curRec []byte
	if typ == EventPut {
		curRec = appendEventRecord(cb[:0], cur, len(value))
	} else {
		value = nil
	}
	var pb [1 + maxEventRecord]byte
	prevRec := append(pb[:0], 0)
	if hasPrev {
		prevRec[0] = 1
		prevRec = appendEventRecord(prevRec, prev, len(prevValue))
	} else {
		prevValue = nil
	}
	n := len(head) + len(key) + len(curRec) + len(value) + len(prevRec) + len(prevValue)
	d := b.SetDeferred(len(k), n)
	copy(d.Key, k)
	off := copy(d.Value, head)
	off += copy(d.Value[off:], key)
	off += copy(d.Value[off:], curRec)
	off += copy(d.Value[off:], value)
	off += copy(d.Value[off:], prevRec)
	copy(d.Value[off:], prevValue)
	if err := d.Finish(); err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	return nil
}

var errCorruptEvent = errors.New("corrupt stored event")

// decodeEvent decodes a stored event of revision rev; nothing aliases v.
func decodeEvent(rev int64, v []byte) (Event, error) {
	d := decoder{b: v}
	if d.byte() != eventFormat {
		return Event{}, errCorruptEvent
	}
	ev := Event{Type: EventType(d.byte()), Revision: rev}
	ev.KV.Key = d.string(MaxKeySize)
	switch ev.Type {
	case EventPut:
		ev.KV.Record = d.eventRecord()
	case EventDelete:
		ev.KV.ModRevision = rev
	default:
		return Event{}, errCorruptEvent
	}
	switch d.byte() {
	case 0:
	case 1:
		ev.Prev = &KV{Key: ev.KV.Key, Record: d.eventRecord()}
	default:
		return Event{}, errCorruptEvent
	}
	if d.err != nil || len(d.b) != 0 {
		return Event{}, errCorruptEvent
	}
	return ev, nil
}

func (d *decoder) eventRecord() Record {
	var r Record
	r.CreateRevision = int64(d.uvarint())
	r.ModRevision = int64(d.uvarint())
	r.Version = int64(d.uvarint())
	r.Lease = d.varint()
	v := d.raw(MaxValueSize)
	// Like makeKV: an empty value is empty, not nil.
	r.Value = append(make([]byte, 0, len(v)), v...)
	return r
}

// trimEvents drops the events that fell out of the retention when revision
// rev (just reached) is a trim point, and records the new compact revision
// in the same batch. compact is the current compact revision, updated.
//
// Events are deleted one by one rather than with a range deletion: range
// tombstones would sit in the sstables of every level until compacted away,
// and every point read of a Put (which touches those files: flushed files
// span all prefixes) would have to consult them.
func (s *StateMachine) trimEvents(b *batch, rev uint64, compact *int64) error {
	if rev%eventTrimEvery != 0 || rev <= s.retention {
		return nil
	}
	next := rev - s.retention + 1 // the lowest revision kept
	if int64(next) <= *compact {
		return nil
	}
	// Everything below *compact is gone already: start there, not at the
	// tombstones of earlier trims.
	var lo, hi [eventKeyLen]byte
	lower := eventKey(&lo, uint64(*compact), 0)
	upper := eventKey(&hi, next, 0)
	for {
		it := b.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		// Collect, then delete once the iterator is closed: it reads the
		// batch being written.
		keys := s.scratch[:0]
		exhausted := true
		for valid := it.First(); valid; valid = it.Next() {
			if len(keys) == deletePrefixChunk*eventKeyLen {
				exhausted = false
				break
			}
			if len(it.Key()) != eventKeyLen {
				_ = it.Close()
				return fmt.Errorf("%w: key %x", errCorruptEvent, it.Key())
			}
			keys = append(keys, it.Key()...)
		}
		if err := it.Close(); err != nil {
			return fmt.Errorf("trim events: %w", err)
		}
		for off := 0; off < len(keys); off += eventKeyLen {
			if err := b.Delete(keys[off:off+eventKeyLen], nil); err != nil {
				return fmt.Errorf("trim events: %w", err)
			}
		}
		s.scratch = keys[:0]
		if exhausted {
			break
		}
		// Resume right after the last key deleted.
		copy(lo[:], keys[len(keys)-eventKeyLen:])
		lower = append(lo[:], 0)
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], next)
	if err := b.Set(metaCompactKey, v[:], nil); err != nil {
		return fmt.Errorf("trim events: %w", err)
	}
	*compact = int64(next)
	return nil
}

// readCompact reads the compact revision stored in meta (1 when absent).
func readCompact(v []byte, found bool) (int64, error) {
	if !found {
		return 1, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("corrupt compact revision (%d bytes)", len(v))
	}
	c := binary.BigEndian.Uint64(v)
	if c < 1 || c > math.MaxInt64 {
		return 0, fmt.Errorf("corrupt compact revision %d", c)
	}
	return int64(c), nil
}

// CompactRevision returns the lowest revision an EventsQuery may start from
// as of the last applied Update (1 until events are first trimmed). It reads
// no storage; an EventsQuery reports the value of its own read view.
func (s *StateMachine) CompactRevision() int64 { return s.compact.Load() }

// CompactedError is the error of an EventsQuery whose From is below the
// compact revision. It matches errs.Compacted with errors.Is; errors.As
// gives CompactRevision, the lowest revision a query may start from.
type CompactedError struct {
	From            int64 // the query's From
	CompactRevision int64
	Revision        int64 // revision of the read view
}

func (e *CompactedError) Error() string {
	return fmt.Sprintf("events from revision %d: history starts at %d: %v", e.From, e.CompactRevision, errs.Compacted)
}

func (e *CompactedError) Unwrap() error { return errs.Compacted }

func (s *StateMachine) events(q *EventsQuery) (*EventsResult, error) {
	if q.From < 1 {
		return nil, fmt.Errorf("events: from revision %d, want >= 1: %w", q.From, errs.Invalid)
	}
	if q.Limit < 0 {
		return nil, fmt.Errorf("events: negative limit %d: %w", q.Limit, errs.Invalid)
	}
	limit := q.Limit
	if limit == 0 {
		limit = DefaultEventsLimit
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	it, rev, err := s.readView()
	if err != nil {
		return nil, err
	}
	defer it.Close()
	res := &EventsResult{Revision: rev}
	// The compact revision of this very view.
	it.SetBounds(metaCompactKey, metaCompactUpper)
	valid := it.First()
	var v []byte
	if valid {
		v = it.Value()
	}
	if res.CompactRevision, err = readCompact(v, valid); err != nil {
		return nil, err
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	if q.From < res.CompactRevision {
		return nil, &CompactedError{From: q.From, CompactRevision: res.CompactRevision, Revision: rev}
	}
	if q.From > rev {
		return res, nil
	}
	var lower [eventKeyLen]byte
	it.SetBounds(eventKey(&lower, uint64(q.From), 0), []byte{prefixEvent + 1})
	// Every revision in [From, rev] has at least one event: room for one
	// each, up to the limit. (Room for the whole limit cost a watch hub
	// 96 KB per applied batch, a third of a watched put path's allocation.)
	res.Events = make([]Event, 0, min(int64(limit), rev-q.From+1, 1024))
	var last int64
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		if len(k) != eventKeyLen {
			return nil, fmt.Errorf("%w: key %x", errCorruptEvent, k)
		}
		r := int64(binary.BigEndian.Uint64(k[1:9]))
		if len(res.Events) >= limit && r != last {
			res.More = true
			break
		}
		ev, err := decodeEvent(r, it.Value())
		if err != nil {
			return nil, fmt.Errorf("%w: key %x", err, k)
		}
		res.Events = append(res.Events, ev)
		last = r
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	return res, nil
}

var metaCompactUpper = append(append([]byte(nil), metaCompactKey...), 0)
