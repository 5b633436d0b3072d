package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/cockroachdb/pebble"

	"github.com/dister/dister/internal/errs"
)

// Lookup answers a query: GetQuery -> *GetResult, ListQuery -> *ListResult,
// RevisionQuery -> int64, EventsQuery -> *EventsResult (or a
// *CompactedError), LeasesQuery -> *LeasesResult, LeaseQuery -> *LeaseInfo
// EpochQuery -> uint64, DumpQuery -> *Dump (values or pointers). Each answer is read from one
// point-in-time view, and its Revision is the revision of that view.
// Results never alias pebble memory.
func (s *StateMachine) Lookup(q any) (any, error) {
	switch q := q.(type) {
	case GetQuery:
		return s.get(q.Key)
	case *GetQuery:
		if q != nil {
			return s.get(q.Key)
		}
	case ListQuery:
		return s.list(&q)
	case *ListQuery:
		if q != nil {
			return s.list(q)
		}
	case EventsQuery:
		return s.events(&q)
	case *EventsQuery:
		if q != nil {
			return s.events(q)
		}
	case LeasesQuery, *LeasesQuery:
		if q, ok := q.(*LeasesQuery); ok && q == nil {
			break
		}
		return s.leases()
	case LeaseQuery:
		return s.lease(q.ID)
	case *LeaseQuery:
		if q != nil {
			return s.lease(q.ID)
		}
	case RevisionQuery, *RevisionQuery:
		s.mu.RLock()
		defer s.mu.RUnlock()
		if s.db == nil {
			return nil, fmt.Errorf("lookup: %w", errs.Closed)
		}
		return s.revision.Load(), nil
	case DumpQuery, *DumpQuery:
		return s.dump()
	case EpochQuery, *EpochQuery:
		s.mu.RLock()
		defer s.mu.RUnlock()
		if s.db == nil {
			return nil, fmt.Errorf("lookup: %w", errs.Closed)
		}
		return s.epoch.Load(), nil
	}
	return nil, fmt.Errorf("unknown query %T: %w", q, errs.Invalid)
}

// readView opens an iterator (a point-in-time view: it reads at the
// sequence number current when created, whatever Update commits later) and
// returns it with the revision it sees. The caller holds s.mu.RLock and
// sets the iterator's bounds before using it.
//
// Its revision is the one Update stored in memory when no commit ran
// while the iterator was opened (Update runs one at a time, and Open and
// RecoverFromSnapshot hold s.mu): reading the stored revision through the
// view instead cost a seek in the memtable, a fifth of a Get's CPU.
func (s *StateMachine) readView() (*iter, int64, error) {
	if s.db == nil {
		return nil, 0, fmt.Errorf("lookup: %w", errs.Closed)
	}
	before := s.commits.Load()
	rev := s.revision.Load()
	it := s.db.NewIter(&pebble.IterOptions{
		LowerBound: []byte{prefixMeta},
		UpperBound: []byte{prefixMeta + 1},
	})
	if before%2 == 0 && s.commits.Load() == before {
		return it, rev, nil
	}
	// A data dir from before revisions were a counter has no revision
	// key: its revision is the applied index (see loadState).
	stored, found, err := viewUint64(it, metaRevisionKey)
	if err == nil && !found {
		stored, _, err = viewUint64(it, metaAppliedKey)
	}
	if err != nil {
		_ = it.Close()
		return nil, 0, err
	}
	return it, int64(stored), nil
}

// viewUint64 reads an 8-byte meta value through it.
func viewUint64(it *iter, key []byte) (uint64, bool, error) {
	if !it.SeekGE(key) || !bytes.Equal(it.Key(), key) {
		if err := it.Error(); err != nil {
			return 0, false, fmt.Errorf("lookup: %w", err)
		}
		return 0, false, nil
	}
	if len(it.Value()) != 8 {
		return 0, false, fmt.Errorf("corrupt meta value %q (%d bytes)", key[1:], len(it.Value()))
	}
	return binary.BigEndian.Uint64(it.Value()), true, nil
}

func (s *StateMachine) get(key string) (*GetResult, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	it, rev, err := s.readView()
	if err != nil {
		return nil, err
	}
	defer it.Close()
	res := &GetResult{Revision: rev}
	k := appendUserKey(make([]byte, 0, 1+len(key)+1), key)
	// Bounds [k, k+"\x00") hold exactly k; both share one allocation.
	it.SetBounds(k, append(k, 0))
	if it.First() {
		h, v, err := decodeRecord(it.Value())
		if err != nil {
			return nil, fmt.Errorf("%w: key %q", err, key)
		}
		res.Found = true
		res.KV = makeKV(key, h, v)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("get: %w", err)
	}
	return res, nil
}

func makeKV(key string, h recordHeader, v []byte) KV {
	return KV{Key: key, Record: Record{
		Value:          append(make([]byte, 0, len(v)), v...),
		CreateRevision: h.create,
		ModRevision:    h.mod,
		Version:        h.version,
		Lease:          h.lease,
	}}
}

func (s *StateMachine) list(q *ListQuery) (*ListResult, error) {
	if q.Limit < 0 {
		return nil, fmt.Errorf("list: negative limit %d: %w", q.Limit, errs.Invalid)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	it, rev, err := s.readView()
	if err != nil {
		return nil, err
	}
	defer it.Close()
	res := &ListResult{Revision: rev}
	lower := appendUserKey(nil, q.Prefix)
	upper := prefixEnd(lower)
	if q.Prefix == "" {
		lower = userKeysStart
	}
	start := lower
	if q.After != "" {
		// The smallest key after After is After+"\x00".
		if a := append(appendUserKey(nil, q.After), 0); bytes.Compare(a, start) > 0 {
			start = a
		}
	}
	if upper != nil && bytes.Compare(start, upper) >= 0 {
		return res, nil
	}
	it.SetBounds(start, upper)
	if q.Limit > 0 && q.Limit <= 1024 {
		res.KVs = make([]KV, 0, q.Limit)
	}
	for valid := it.First(); valid; valid = it.Next() {
		if q.Limit > 0 && len(res.KVs) == q.Limit {
			res.More = true
			break
		}
		h, v, err := decodeRecord(it.Value())
		if err != nil {
			return nil, fmt.Errorf("%w: key %q", err, it.Key()[1:])
		}
		res.KVs = append(res.KVs, makeKV(string(it.Key()[1:]), h, v))
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("list: %w", err)
	}
	return res, nil
}
