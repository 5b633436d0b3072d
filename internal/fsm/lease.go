package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/cockroachdb/pebble"

	"github.com/dister/dister/internal/errs"
)

// Leases. The state machine keeps which leases exist, their TTL and last
// checkpointed remaining time, and which keys are attached to each; it never
// reads a clock. The group leader counts TTLs down, proposes
// KindLeaseRevoke{Expired: true} when they run out and KindLeaseCheckpoint
// now and then; LeaseGeneration tells it when to reload with LeasesQuery.
// Each leader's lessor first commits a KindLeaseEpoch, and its expiries and
// checkpoints carry that epoch: those of an older epoch (a deposed leader
// that does not know it yet) change nothing.
//
// Lease record (the value of an 'l' key):
//
//	byte    format (1)
//	uvarint TTL (ms)
//	uvarint Remaining (ms; 0 = no checkpoint, or cleared by a renewal)
//
// Invariant: a key whose record has Lease L != 0 has the attachment
// 'a'+L+key and lease L exists; revoking L deletes exactly those keys.
const leaseFormat = 1

type leaseRecord struct {
	ttl, remaining int64
}

func appendLeaseRecord(dst []byte, l leaseRecord) []byte {
	dst = append(dst, leaseFormat)
	dst = binary.AppendUvarint(dst, uint64(l.ttl))
	return binary.AppendUvarint(dst, uint64(l.remaining))
}

var errCorruptLease = errors.New("corrupt stored lease")

func decodeLeaseRecord(v []byte) (leaseRecord, error) {
	d := decoder{b: v}
	if d.byte() != leaseFormat {
		return leaseRecord{}, errCorruptLease
	}
	ttl, rem := d.uvarint(), d.uvarint()
	if d.err != nil || len(d.b) != 0 || ttl > MaxLeaseTTL || rem > MaxLeaseTTL {
		return leaseRecord{}, errCorruptLease
	}
	return leaseRecord{ttl: int64(ttl), remaining: int64(rem)}, nil
}

// getLease reads lease id through b.
func getLease(b *batch, id int64) (leaseRecord, bool, error) {
	var kb [leaseKeyLen]byte
	v, closer, err := b.Get(leaseKey(&kb, id))
	if errors.Is(err, pebble.ErrNotFound) {
		return leaseRecord{}, false, nil
	}
	if err != nil {
		return leaseRecord{}, false, fmt.Errorf("read lease %d: %w", id, err)
	}
	l, err := decodeLeaseRecord(v)
	_ = closer.Close()
	if err != nil {
		return leaseRecord{}, false, fmt.Errorf("%w: lease %d", err, id)
	}
	return l, true, nil
}

func setLease(b *batch, id int64, l leaseRecord) error {
	var kb [leaseKeyLen]byte
	var vb [1 + 2*binary.MaxVarintLen64]byte
	if err := b.Set(leaseKey(&kb, id), appendLeaseRecord(vb[:0], l), nil); err != nil {
		return fmt.Errorf("write lease %d: %w", id, err)
	}
	return nil
}

// applyGrant creates a lease. fail is the command's deterministic error.
// LeaseIDFor is the id a grant in shard proposes: the shard above 32
// random bits. A group deleted and created again under its name is another
// shard, so it never hands out an id an earlier group of the name did:
// a Node still renewing, or revoking, the old group's lease must find no
// lease, not another program's (grants without an id take it from the
// Raft index, which starts again at 1 in the new group). A grant of an id
// the group holds fails with ErrConflict and is proposed again with
// another. 0 (the index decides) for a shard too large to fit.
func LeaseIDFor(shard uint64) int64 {
	if shard == 0 || shard >= 1<<29 {
		return 0
	}
	return int64(shard)<<32 | int64(rand.Uint32())
}

// leaseIDTries is how many grants with a fresh LeaseIDFor GrantLease makes
// before it reports ErrConflict.
const leaseIDTries = 4

// GrantLease proposes, through propose, a grant of a lease of ttl
// milliseconds in shard with a LeaseIDFor id, and draws the id again while
// the group holds it (ErrConflict). Each try is a command of its own (a new
// dedup id), as propose makes it.
func GrantLease(shard uint64, ttl int64, propose func(*Command) (*LeaseResult, error)) (*LeaseResult, error) {
	for try := 1; ; try++ {
		r, err := propose(&Command{Kind: KindLeaseGrant, Grant: &LeaseGrant{ID: LeaseIDFor(shard), TTL: ttl}})
		if errors.Is(err, errs.Conflict) && try < leaseIDTries {
			continue // the random id is taken
		}
		return r, err
	}
}

func (s *StateMachine) applyGrant(b *batch, g *LeaseGrant, index uint64) (res LeaseResult, fail, err error) {
	id := g.ID
	if id == 0 {
		id = int64(index) + s.leaseBase
		if id <= 0 {
			return res, fmt.Errorf("lease grant: index %d is no lease id: %w", index, errs.Invalid), nil
		}
	}
	_, found, err := getLease(b, id)
	if err != nil {
		return res, nil, err
	}
	if found {
		return res, fmt.Errorf("lease grant: lease %d already exists: %w", id, errs.Conflict), nil
	}
	if err := setLease(b, id, leaseRecord{ttl: g.TTL}); err != nil {
		return res, nil, err
	}
	s.leasesChanged = true
	res.ID, res.TTL = id, g.TTL
	return res, nil, nil
}

// staleEpoch fails an expiry or checkpoint decided by a lessor of another
// epoch than the current one: its leader was deposed (or never led).
func (s *StateMachine) staleEpoch(epoch uint64) error {
	if epoch == s.epochNow {
		return nil
	}
	return fmt.Errorf("lessor epoch %d is not the current %d: %w", epoch, s.epochNow, errs.NoQuorum)
}

// applyRevoke removes leases and deletes their keys.
func (s *StateMachine) applyRevoke(b *batch, r *LeaseRevoke) (res LeaseResult, fail, err error) {
	if r.Expired {
		if fail := s.staleEpoch(r.Epoch); fail != nil {
			return res, fmt.Errorf("lease expiry: %w", fail), nil
		}
	} else {
		// All or nothing: check every id before deleting anything.
		for _, id := range r.IDs {
			_, found, err := getLease(b, id)
			if err != nil {
				return res, nil, err
			}
			if !found {
				return res, fmt.Errorf("lease revoke: lease %d: %w", id, errs.LeaseNotFound), nil
			}
		}
	}
	for _, id := range r.IDs {
		// Expired ids may be gone already, and an id listed twice is gone
		// the second time.
		_, found, err := getLease(b, id)
		if err != nil {
			return res, nil, err
		}
		if !found {
			continue
		}
		n, err := s.revokeLease(b, id)
		if err != nil {
			return res, nil, err
		}
		res.Deleted += n
		s.leasesChanged = true
	}
	return res, nil, nil
}

// revokeLease deletes every key attached to lease id (with a delete event
// each, in key order), the attachments and the lease.
func (s *StateMachine) revokeLease(b *batch, id int64) (int64, error) {
	lower := appendAttachKey(nil, id, nil)
	upper := prefixEnd(lower)
	var n int64
	for {
		it := b.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
		// Collect, then write once the iterator is closed: it reads the
		// batch being written.
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
			return n, fmt.Errorf("revoke lease %d: %w", id, err)
		}
		start := 0
		for _, end := range ends {
			ak := buf[start:end]
			start = end
			key := ak[attachHeaderLen:]
			s.kbuf = append(append(s.kbuf[:0], prefixKey), key...)
			old, oldValue, closer, found, err := getRecord(b, s.kbuf)
			if err != nil {
				return n, err
			}
			if found {
				attached := old.lease == id
				if attached {
					err = s.writeEvent(b, EventDelete, key, recordHeader{}, nil, true, old, oldValue)
				}
				_ = closer.Close()
				if err != nil {
					return n, err
				}
				if attached {
					if err := b.Delete(s.kbuf, nil); err != nil {
						return n, fmt.Errorf("revoke lease %d: %w", id, err)
					}
					n++
				}
			}
			if err := b.Delete(ak, nil); err != nil {
				return n, fmt.Errorf("revoke lease %d: %w", id, err)
			}
		}
		s.scratch, s.ends = buf[:0], ends[:0]
		if exhausted {
			break
		}
		// Resume right after the last key instead of skipping over the
		// tombstones just written.
		lower = append(append([]byte(nil), lastOf(buf, ends)...), 0)
	}
	s.releaseScratch()
	var kb [leaseKeyLen]byte
	if err := b.Delete(leaseKey(&kb, id), nil); err != nil {
		return n, fmt.Errorf("revoke lease %d: %w", id, err)
	}
	return n, nil
}

// applyCheckpoint stores (or, with RemainingMs 0, clears) the remaining
// TTL of the leases that exist.
func (s *StateMachine) applyCheckpoint(b *batch, c *LeaseCheckpoint) (fail, err error) {
	if fail := s.staleEpoch(c.Epoch); fail != nil {
		return fmt.Errorf("lease checkpoint: %w", fail), nil
	}
	for _, cp := range c.Checkpoints {
		l, found, err := getLease(b, cp.ID)
		if err != nil {
			return nil, err
		}
		if !found {
			continue
		}
		rem := min(cp.RemainingMs, l.ttl)
		if rem == l.remaining {
			continue
		}
		l.remaining = rem
		if err := setLease(b, cp.ID, l); err != nil {
			return nil, err
		}
		s.leasesChanged = true
	}
	return nil, nil
}

// attach moves key (a user key) from lease from to lease to (0 = none) in
// the attachment index.
func (s *StateMachine) attach(b *batch, key []byte, from, to int64) error {
	if from != 0 {
		s.abuf = appendAttachKey(s.abuf, from, key)
		if err := b.Delete(s.abuf, nil); err != nil {
			return fmt.Errorf("detach from lease %d: %w", from, err)
		}
	}
	if to != 0 {
		s.abuf = appendAttachKey(s.abuf, to, key)
		if err := b.Set(s.abuf, nil, nil); err != nil {
			return fmt.Errorf("attach to lease %d: %w", to, err)
		}
	}
	return nil
}

// LeaseGeneration returns a counter that changes whenever the set of leases
// or a checkpoint changes (after the Update that changed it commits), and on
// Open and RecoverFromSnapshot. It is not replicated state: compare it only
// with values from the same StateMachine.
func (s *StateMachine) LeaseGeneration() uint64 { return s.leaseGen.Load() }

func (s *StateMachine) leases() (*LeasesResult, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	it, rev, err := s.readView()
	if err != nil {
		return nil, err
	}
	defer it.Close()
	res := &LeasesResult{Revision: rev}
	it.SetBounds([]byte{prefixLease}, []byte{prefixLease + 1})
	for valid := it.First(); valid; valid = it.Next() {
		info, err := leaseInfo(it.Key(), it.Value())
		if err != nil {
			return nil, err
		}
		res.Leases = append(res.Leases, info)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("leases: %w", err)
	}
	return res, nil
}

func leaseInfo(k, v []byte) (LeaseInfo, error) {
	if len(k) != leaseKeyLen {
		return LeaseInfo{}, fmt.Errorf("%w: key %x", errCorruptLease, k)
	}
	l, err := decodeLeaseRecord(v)
	if err != nil {
		return LeaseInfo{}, fmt.Errorf("%w: key %x", err, k)
	}
	return LeaseInfo{ID: int64(binary.BigEndian.Uint64(k[1:])), TTL: l.ttl, Remaining: l.remaining}, nil
}

func (s *StateMachine) lease(id int64) (*LeaseInfo, error) {
	if id <= 0 {
		return nil, fmt.Errorf("lease: id %d is not positive: %w", id, errs.Invalid)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	it, rev, err := s.readView()
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var kb [leaseKeyLen]byte
	k := leaseKey(&kb, id)
	it.SetBounds(k, append(k[:leaseKeyLen:leaseKeyLen], 0))
	if !it.First() {
		if err := it.Error(); err != nil {
			return nil, fmt.Errorf("lease: %w", err)
		}
		return nil, fmt.Errorf("lease %d: %w", id, errs.LeaseNotFound)
	}
	info, err := leaseInfo(it.Key(), it.Value())
	if err != nil {
		return nil, err
	}
	info.Revision = rev
	lower := appendAttachKey(nil, id, nil)
	it.SetBounds(lower, prefixEnd(lower))
	info.Keys = []string{}
	for valid := it.First(); valid; valid = it.Next() {
		info.Keys = append(info.Keys, string(it.Key()[attachHeaderLen:]))
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	return &info, nil
}
