package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/cockroachdb/pebble"

	"github.com/dister/dister/internal/errs"
)

// Record encoding (the value of a 'k' key):
//
//	byte    format (1)
//	uvarint CreateRevision, uvarint ModRevision, uvarint Version
//	varint  Lease
//	rest    value
//
// The value is last and unprefixed so it can be returned without copying
// the header and written without an intermediate buffer.
const (
	recordFormat    = 1
	maxRecordHeader = 1 + 3*binary.MaxVarintLen64 + binary.MaxVarintLen64
)

type recordHeader struct {
	create, mod, version, lease int64
}

func putRecordHeader(dst *[maxRecordHeader]byte, h recordHeader) []byte {
	b := append(dst[:0], recordFormat)
	b = binary.AppendUvarint(b, uint64(h.create))
	b = binary.AppendUvarint(b, uint64(h.mod))
	b = binary.AppendUvarint(b, uint64(h.version))
	return binary.AppendVarint(b, h.lease)
}

var errCorruptRecord = errors.New("fsm: corrupt stored record")

// decodeRecord splits a stored record; value aliases v.
func decodeRecord(v []byte) (h recordHeader, value []byte, err error) {
	d := decoder{b: v}
	if d.byte() != recordFormat {
		return h, nil, errCorruptRecord
	}
	h.create = int64(d.uvarint())
	h.mod = int64(d.uvarint())
	h.version = int64(d.uvarint())
	h.lease = d.varint()
	if d.err != nil {
		return h, nil, errCorruptRecord
	}
	return h, d.b, nil
}

// applyEntry applies one entry into b. Only storage failures are returned:
// a bad command, or one that fails deterministically (missing lease,
// duplicate grant), becomes an error Result with Value 0 and changes
// nothing but the dedup table.
func (s *StateMachine) applyEntry(b *pebble.Batch, e *Entry, dedupMin *uint64) error {
	cmd, err := decodeCommand(e.Cmd, true)
	if err != nil {
		e.Result = Result{Data: encodeError(err)}
		return nil
	}
	var idKey [dedupIDKeyLen]byte
	var staleIdx uint64 // index of an expired dedup entry for this id
	if cmd.Session != 0 {
		dedupIDKey(&idKey, cmd.Session, cmd.Seq)
	}
	if cmd.Session != 0 && s.maybeStored(b, cmd.Session, cmd.Seq) {
		v, closer, err := b.Get(idKey[:])
		switch {
		case errors.Is(err, pebble.ErrNotFound):
		case err != nil:
			return fmt.Errorf("fsm: dedup lookup: %w", err)
		default:
			if len(v) < 8 {
				_ = closer.Close()
				return errors.New("fsm: corrupt dedup entry")
			}
			idx := binary.BigEndian.Uint64(v)
			// Entries older than the window count as absent even if a trim
			// has not removed them yet: the answer must not depend on how
			// dragonboat happened to batch entries into Update calls.
			if e.Index-idx < s.window { // idx < e.Index; no overflow for any window
				data := append([]byte(nil), v[8:]...)
				if isErrorResult(data) {
					idx = 0 // as the first time
				}
				e.Result = Result{Value: idx, Data: data}
				return closer.Close()
			}
			staleIdx = idx
			_ = closer.Close()
		}
	}

	var (
		txnRes   TxnResult
		leaseRes LeaseResult
		fail     error
	)
	switch cmd.Kind {
	case KindTxn:
		txnRes, fail, err = s.applyTxn(b, cmd.Txn, e.Index)
	case KindLeaseGrant:
		leaseRes, fail, err = s.applyGrant(b, cmd.Grant, e.Index)
	case KindLeaseRevoke:
		leaseRes, fail, err = s.applyRevoke(b, cmd.Revoke, e.Index)
	case KindLeaseCheckpoint:
		leaseRes, fail, err = s.applyCheckpoint(b, cmd.Checkpoint, e.Index)
	}
	if err != nil {
		return err
	}
	value := e.Index
	if fail != nil {
		value = 0
	}
	if cmd.Session == 0 {
		e.Result = Result{Value: value, Data: encodeOutcome(nil, cmd.Kind, &txnRes, &leaseRes, fail)}
		return nil
	}
	// One buffer holds the dedup value (index + result); the Result shares
	// its tail, which pebble copies on Set.
	val := make([]byte, 8, 8+8+len(txnRes.Ops)*4+4*binary.MaxVarintLen64)
	binary.BigEndian.PutUint64(val, e.Index)
	val = encodeOutcome(val, cmd.Kind, &txnRes, &leaseRes, fail)
	e.Result = Result{Value: value, Data: val[8:len(val):len(val)]}
	if err := b.Set(idKey[:], val, nil); err != nil {
		return fmt.Errorf("fsm: dedup store: %w", err)
	}
	s.noteStored(cmd.Session, cmd.Seq)
	var idxKey [dedupIdxKeyLen]byte
	if staleIdx != 0 {
		// The id's old index row would otherwise trim the new id row.
		if err := b.Delete(dedupIdxKey(&idxKey, staleIdx), nil); err != nil {
			return fmt.Errorf("fsm: dedup store: %w", err)
		}
	}
	var ids [16]byte
	copy(ids[:], idKey[1:])
	if err := b.Set(dedupIdxKey(&idxKey, e.Index), ids[:], nil); err != nil {
		return fmt.Errorf("fsm: dedup store: %w", err)
	}
	if e.Index < *dedupMin {
		*dedupMin = e.Index
	}
	return nil
}

// encodeOutcome appends the encoded result of a command of kind to dst:
// fail when set, else the result of that kind.
func encodeOutcome(dst []byte, kind CmdKind, txn *TxnResult, lease *LeaseResult, fail error) []byte {
	switch {
	case fail != nil:
		return append(dst, encodeError(fail)...)
	case kind == KindTxn:
		return encodeTxnResult(dst, txn)
	default:
		return encodeLeaseResult(dst, lease)
	}
}

// trimDedup removes the dedup entries that fell out of the window at index
// last. dedupMin spares the scan when nothing is old enough.
func (s *StateMachine) trimDedup(b *pebble.Batch, last uint64, dedupMin *uint64) error {
	if *dedupMin == math.MaxUint64 || last < s.window || last-s.window < *dedupMin {
		return nil
	}
	cutoff := last - s.window // trim every index <= cutoff
	// Start at dedupMin, not at the start of the range: below it lie the
	// tombstones of earlier trims, which pebble would skip one by one until
	// a compaction drops them.
	var lower [dedupIdxKeyLen]byte
	it := b.NewIter(&pebble.IterOptions{
		LowerBound: dedupIdxKey(&lower, *dedupMin),
		UpperBound: []byte{prefixDedupIdx + 1},
	})
	// Collect first, delete after closing: the iterator reads the batch.
	rows := s.scratch[:0]
	next := uint64(math.MaxUint64)
	for valid := it.First(); valid; valid = it.Next() {
		k, v := it.Key(), it.Value()
		if len(k) != dedupIdxKeyLen || len(v) != 16 {
			_ = it.Close()
			return fmt.Errorf("fsm: corrupt dedup index entry %x", k)
		}
		idx := binary.BigEndian.Uint64(k[1:])
		if idx > cutoff {
			next = idx
			break
		}
		rows = append(rows, k...)
		rows = append(rows, v...)
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("fsm: dedup trim: %w", err)
	}
	const row = dedupIdxKeyLen + 16
	var idKey [dedupIDKeyLen]byte
	for off := 0; off+row <= len(rows); off += row {
		r := rows[off : off+row]
		idKey[0] = prefixDedupID
		copy(idKey[1:], r[dedupIdxKeyLen:])
		if err := b.Delete(r[:dedupIdxKeyLen], nil); err != nil {
			return fmt.Errorf("fsm: dedup trim: %w", err)
		}
		if err := b.Delete(idKey[:], nil); err != nil {
			return fmt.Errorf("fsm: dedup trim: %w", err)
		}
	}
	s.scratch = rows[:0]
	*dedupMin = next
	return nil
}

// getRecord reads key (already 'k'-prefixed) through b. The caller must
// close closer when found; value aliases pebble memory until then.
func getRecord(b *pebble.Batch, key []byte) (h recordHeader, value []byte, closer io.Closer, found bool, err error) {
	v, closer, err := b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return h, nil, nil, false, nil
	}
	if err != nil {
		return h, nil, nil, false, fmt.Errorf("fsm: read %q: %w", key[1:], err)
	}
	h, value, err = decodeRecord(v)
	if err != nil {
		_ = closer.Close()
		return h, nil, nil, false, fmt.Errorf("%w: key %q", err, key[1:])
	}
	return h, value, closer, true, nil
}

// applyTxn evaluates t against the state in b and writes the ops of the
// branch taken, all at revision rev. fail is the command's deterministic
// error (a put's lease does not exist); nothing is written then.
func (s *StateMachine) applyTxn(b *pebble.Batch, t *Txn, rev uint64) (res TxnResult, fail, err error) {
	res = TxnResult{Succeeded: true, Revision: int64(rev)}
	for i := range t.Compares {
		ok, err := s.evalCompare(b, &t.Compares[i])
		if err != nil {
			return res, nil, err
		}
		if !ok {
			res.Succeeded = false
			break
		}
	}
	ops, branch := t.Then, "then"
	if !res.Succeeded {
		ops, branch = t.Else, "else"
	}
	if len(ops) == 0 {
		return res, nil, nil
	}
	// No op of a txn creates or removes a lease, so whether a put's lease
	// exists can be checked for all ops before any is applied.
	var checked int64
	for i := range ops {
		if l := ops[i].Lease; ops[i].Type == OpPut && l != 0 && l != checked {
			_, found, err := getLease(b, l)
			if err != nil {
				return res, nil, err
			}
			if !found {
				return res, fmt.Errorf("fsm: %s op %d: lease %d: %w", branch, i, l, errs.LeaseNotFound), nil
			}
			checked = l
		}
	}
	res.Ops = make([]OpResult, len(ops))
	for i := range ops {
		n, err := s.applyOp(b, &ops[i], int64(rev))
		if err != nil {
			return res, nil, err
		}
		res.Ops[i].Deleted = n
	}
	return res, nil, nil
}

func (s *StateMachine) evalCompare(b *pebble.Batch, c *Compare) (bool, error) {
	s.kbuf = appendUserKey(s.kbuf, c.Key)
	h, value, closer, found, err := getRecord(b, s.kbuf)
	if err != nil {
		return false, err
	}
	// A missing key reads as zero revisions and a nil value.
	var r int
	switch c.Target {
	case TargetValue:
		r = bytes.Compare(value, c.Value)
	case TargetVersion:
		r = cmpInt(h.version, c.Int)
	case TargetModRevision:
		r = cmpInt(h.mod, c.Int)
	case TargetCreateRevision:
		r = cmpInt(h.create, c.Int)
	}
	if found {
		_ = closer.Close()
	}
	switch c.Op {
	case OpEqual:
		return r == 0, nil
	case OpNotEqual:
		return r != 0, nil
	case OpLess:
		return r < 0, nil
	case OpGreater:
		return r > 0, nil
	}
	return false, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// applyOp runs one write, with its events, and returns how many keys it
// deleted.
func (s *StateMachine) applyOp(b *pebble.Batch, op *Op, rev int64) (int64, error) {
	switch op.Type {
	case OpPut:
		s.kbuf = appendUserKey(s.kbuf, op.Key)
		old, oldValue, closer, found, err := getRecord(b, s.kbuf)
		if err != nil {
			return 0, err
		}
		h := recordHeader{create: rev, mod: rev, version: 1, lease: op.Lease}
		if found {
			h.create = old.create
			h.version = old.version + 1
		}
		// The event first: it copies the old value, which is pebble's
		// memory until closer is closed.
		err = s.writeEvent(b, EventPut, s.kbuf[1:], h, op.Value, found, old, oldValue)
		if found {
			_ = closer.Close()
		}
		if err != nil {
			return 0, err
		}
		var hb [maxRecordHeader]byte
		hdr := putRecordHeader(&hb, h)
		// Encode straight into the batch: no buffer per value.
		d := b.SetDeferred(len(s.kbuf), len(hdr)+len(op.Value))
		copy(d.Key, s.kbuf)
		copy(d.Value[copy(d.Value, hdr):], op.Value)
		if err := d.Finish(); err != nil {
			return 0, fmt.Errorf("fsm: put: %w", err)
		}
		if old.lease != h.lease { // old is zero when not found
			if err := s.attach(b, s.kbuf[1:], old.lease, h.lease); err != nil {
				return 0, err
			}
		}
		return 0, nil
	case OpDelete:
		s.kbuf = appendUserKey(s.kbuf, op.Key)
		old, oldValue, closer, found, err := getRecord(b, s.kbuf)
		if err != nil || !found {
			return 0, err
		}
		err = s.writeEvent(b, EventDelete, s.kbuf[1:], recordHeader{}, nil, true, old, oldValue)
		_ = closer.Close()
		if err != nil {
			return 0, err
		}
		if err := s.attach(b, s.kbuf[1:], old.lease, 0); err != nil {
			return 0, err
		}
		if err := b.Delete(s.kbuf, nil); err != nil {
			return 0, fmt.Errorf("fsm: delete: %w", err)
		}
		return 1, nil
	case OpDeletePrefix:
		return s.deletePrefix(b, op.Key)
	}
	return 0, nil
}

// A prefix delete (and a lease revocation) works through its keys in
// chunks of at most deletePrefixChunk keys and, for a prefix delete,
// deletePrefixBytes bytes of keys and records, to bound the memory it holds.
const (
	deletePrefixChunk = 1024
	deletePrefixBytes = 4 << 20
	// maxScratch is the most scratch memory kept between Updates.
	maxScratch = 256 << 10
)

func (s *StateMachine) deletePrefix(b *pebble.Batch, prefix string) (int64, error) {
	lower := appendUserKey(nil, prefix)
	upper := prefixEnd(lower)
	if prefix == "" {
		lower = userKeysStart
	}
	var n int64
	for {
		it := b.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		// Keys and records are copied out and deleted once the iterator is
		// closed: the iterator reads the batch being written. ends holds,
		// per key, where its key and its record end in buf.
		buf := s.scratch[:0]
		ends := s.ends[:0]
		exhausted := true
		for valid := it.First(); valid; valid = it.Next() {
			if len(ends) == 2*deletePrefixChunk || len(buf) >= deletePrefixBytes {
				exhausted = false
				break
			}
			buf = append(buf, it.Key()...)
			ends = append(ends, len(buf))
			buf = append(buf, it.Value()...)
			ends = append(ends, len(buf))
		}
		if err := it.Close(); err != nil {
			return n, fmt.Errorf("fsm: delete prefix: %w", err)
		}
		start := 0
		for j := 0; j < len(ends); j += 2 {
			k, v := buf[start:ends[j]], buf[ends[j]:ends[j+1]]
			start = ends[j+1]
			old, oldValue, err := decodeRecord(v)
			if err != nil {
				return n, fmt.Errorf("%w: key %q", err, k[1:])
			}
			if err := s.writeEvent(b, EventDelete, k[1:], recordHeader{}, nil, true, old, oldValue); err != nil {
				return n, err
			}
			if err := s.attach(b, k[1:], old.lease, 0); err != nil {
				return n, err
			}
			if err := b.Delete(k, nil); err != nil {
				return n, fmt.Errorf("fsm: delete prefix: %w", err)
			}
		}
		s.scratch, s.ends = buf[:0], ends[:0]
		n += int64(len(ends) / 2)
		if exhausted {
			s.releaseScratch()
			return n, nil
		}
		// Resume right after the last key instead of skipping over the
		// tombstones just written.
		lastKey := buf[:ends[0]]
		if len(ends) > 2 {
			lastKey = buf[ends[len(ends)-3]:ends[len(ends)-2]]
		}
		lower = append(append([]byte(nil), lastKey...), 0)
	}
}

// releaseScratch drops the scratch buffers when a large delete grew them:
// many groups each hold a StateMachine.
func (s *StateMachine) releaseScratch() {
	if cap(s.scratch) > maxScratch {
		s.scratch = nil
	}
	if cap(s.ends) > 2*deletePrefixChunk {
		s.ends = nil
	}
}

// maxSeqSessions bounds maxSeq; past it the cache starts over (it is only
// a cache of the dedup table).
const maxSeqSessions = 4096

// maybeStored reports whether the dedup table may hold (session, seq):
// false means it certainly does not, and the lookup can be skipped. Seqs of
// one session mostly arrive in increasing order, so most commands take the
// fast path; a retry or a reordered proposal takes the lookup.
func (s *StateMachine) maybeStored(b *pebble.Batch, session, seq uint64) bool {
	top, ok := s.maxSeq[session]
	if !ok {
		top = s.highestStoredSeq(b, session)
		if len(s.maxSeq) >= maxSeqSessions {
			clear(s.maxSeq)
		}
		s.maxSeq[session] = top
	}
	return seq <= top
}

func (s *StateMachine) noteStored(session, seq uint64) {
	if top, ok := s.maxSeq[session]; ok && seq > top {
		s.maxSeq[session] = seq
	}
}

// highestStoredSeq is the largest seq of session in the dedup table (read
// through b, so it includes this Update's writes), 0 if none. Trimmed ids
// count as absent, as they do for the lookup.
func (s *StateMachine) highestStoredSeq(b *pebble.Batch, session uint64) uint64 {
	var lo, hi [dedupIDKeyLen]byte
	dedupIDKey(&lo, session, 0)
	dedupIDKey(&hi, session, math.MaxUint64)
	it := b.NewIter(&pebble.IterOptions{LowerBound: lo[:], UpperBound: hi[:]})
	defer it.Close()
	top := uint64(0)
	if it.Last() {
		top = binary.BigEndian.Uint64(it.Key()[1+8:])
	}
	// The upper bound is exclusive: seq MaxUint64 itself is checked apart.
	if v, closer, err := b.Get(hi[:]); err == nil {
		_ = v
		_ = closer.Close()
		top = math.MaxUint64
	}
	return top
}
