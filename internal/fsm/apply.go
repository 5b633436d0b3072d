package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

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

var errCorruptRecord = errors.New("corrupt stored record")

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

// applyCounted applies one command of the current codec at index: its
// changes, if any, are revision *rev+1, which it then becomes.
func (s *StateMachine) applyCounted(b *batch, cmd []byte, index uint64, rev *int64, epoch *uint64, compact *int64) (Result, error) {
	s.evRev, s.evSeq, s.epochNow = uint64(*rev)+1, 0, *epoch
	r, err := s.applyCommand(b, cmd, index)
	if err != nil {
		return r, err
	}
	*epoch = s.epochNow
	if s.evSeq > 0 {
		*rev++
		return r, s.trimEvents(b, uint64(*rev), compact)
	}
	return r, nil
}

// applyBatch applies the commands of a batch entry in order, each as if
// it were an entry of its own (its own revision, dedup id and result).
// A malformed batch changes nothing and answers an error.
func (s *StateMachine) applyBatch(b *batch, e *Entry, rev *int64, epoch *uint64, compact *int64) (Result, error) {
	cmds, err := splitBatch(e.Cmd)
	if err != nil {
		return Result{Data: encodeError(err)}, nil
	}
	rs := make([]Result, len(cmds))
	for i, c := range cmds {
		if rs[i], err = s.applyCounted(b, c, e.Index, rev, epoch, compact); err != nil {
			return Result{}, err
		}
	}
	return Result{Value: e.Index, Data: encodeBatchResult(rs)}, nil
}

// applyCommand applies one encoded command, that of the entry at index or
// one of its batch, into b and returns its result. Only storage failures
// are returned:
// a bad command, or one that fails deterministically (missing lease,
// duplicate grant, stale lessor epoch), becomes an error Result with Value 0
// and changes nothing but the session table.
//
// The command's changes, if any, are at revision s.evRev; a command whose
// result reports a revision reports s.evRev when it wrote an event, else
// the revision before it (it changed no key).
func (s *StateMachine) applyCommand(b *batch, raw []byte, index uint64) (Result, error) {
	cmd, err := decodeCommand(raw, true)
	if err != nil {
		return Result{Data: encodeError(err)}, nil
	}
	if cmd.Session != 0 {
		if r, done, err := s.dedup(b, cmd); err != nil || done {
			return r, err
		}
	}
	var (
		txnRes   TxnResult
		leaseRes LeaseResult
		fail     error
	)
	switch cmd.Kind {
	case KindTxn:
		txnRes, fail, err = s.applyTxn(b, cmd.Txn, int64(s.evRev))
	case KindLeaseGrant:
		leaseRes, fail, err = s.applyGrant(b, cmd.Grant, index)
	case KindLeaseRevoke:
		leaseRes, fail, err = s.applyRevoke(b, cmd.Revoke)
	case KindLeaseCheckpoint:
		fail, err = s.applyCheckpoint(b, cmd.Checkpoint)
	case KindLeaseEpoch:
		s.epochNow++
		leaseRes.Epoch = s.epochNow
	}
	if err != nil {
		return Result{}, err
	}
	rev := int64(s.evRev)
	if s.evSeq == 0 {
		rev--
	}
	txnRes.Revision, leaseRes.Revision = rev, rev
	value := index
	if fail != nil {
		value = 0
	}
	if cmd.Session == 0 {
		return Result{Value: value, Data: encodeOutcome(nil, cmd.Kind, &txnRes, &leaseRes, fail)}, nil
	}
	data := encodeOutcome(make([]byte, 0, 8+len(txnRes.Ops)*4+4*binary.MaxVarintLen64), cmd.Kind, &txnRes, &leaseRes, fail)
	return Result{Value: value, Data: data}, s.storeResult(b, cmd, index, data)
}

// encodeOutcome appends the encoded result of a command of kind to dst:
// fail when set, else the result of that kind.
func encodeOutcome(dst []byte, kind CmdKind, txn *TxnResult, lease *LeaseResult, fail error) []byte {
	switch {
	case fail != nil:
		return append(dst, encodeError(fail)...)
	case kind == KindTxn:
		return encodeTxnResult(dst, txn)
	case kind == KindLeaseEpoch:
		return encodeEpochResult(dst, lease)
	default:
		return encodeLeaseResult(dst, lease)
	}
}

// getRecord reads key (already 'k'-prefixed) through b. The caller must
// close closer when found; value aliases pebble memory until then.
func getRecord(b *batch, key []byte) (h recordHeader, value []byte, closer io.Closer, found bool, err error) {
	v, closer, err := b.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return h, nil, nil, false, nil
	}
	if err != nil {
		return h, nil, nil, false, fmt.Errorf("read %q: %w", key[1:], err)
	}
	h, value, err = decodeRecord(v)
	if err != nil {
		_ = closer.Close()
		return h, nil, nil, false, fmt.Errorf("%w: key %q", err, key[1:])
	}
	return h, value, closer, true, nil
}

// applyTxn evaluates t against the state in b and writes the ops of the
// branch taken, all at revision rev (the caller fills res.Revision). fail is the command's deterministic
// error (a put's lease does not exist); nothing is written then.
func (s *StateMachine) applyTxn(b *batch, t *Txn, rev int64) (res TxnResult, fail, err error) {
	res = TxnResult{Succeeded: true}
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
				return res, fmt.Errorf("%s op %d: lease %d: %w", branch, i, l, errs.LeaseNotFound), nil
			}
			checked = l
		}
	}
	res.Ops = make([]OpResult, len(ops))
	for i := range ops {
		n, err := s.applyOp(b, &ops[i], rev)
		if err != nil {
			return res, nil, err
		}
		res.Ops[i].Deleted = n
	}
	return res, nil, nil
}

func (s *StateMachine) evalCompare(b *batch, c *Compare) (bool, error) {
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
func (s *StateMachine) applyOp(b *batch, op *Op, rev int64) (int64, error) {
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
			return 0, fmt.Errorf("put: %w", err)
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
			return 0, fmt.Errorf("delete: %w", err)
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

func (s *StateMachine) deletePrefix(b *batch, prefix string) (int64, error) {
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
			return n, fmt.Errorf("delete prefix: %w", err)
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
				return n, fmt.Errorf("delete prefix: %w", err)
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
