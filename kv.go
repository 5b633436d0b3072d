package dister

import (
	"context"
	"errors"
	"fmt"

	"github.com/dister/dister/internal/cluster"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// Limits on what the KV accepts.
const (
	MaxKeySize   = fsm.MaxKeySize   // bytes; keys are UTF-8 without NUL, at least 1 byte
	MaxValueSize = fsm.MaxValueSize // bytes
	MaxTxnOps    = fsm.MaxTxnOps    // compares + then + else
	MaxTxnBytes  = fsm.MaxTxnBytes  // the keys and values of one Txn's compares and ops together
	MaxListLimit = fsm.MaxListLimit // entries one List call returns
)

// LeaseID identifies a lease (0 = none).
type LeaseID int64

// Entry is one key with its value and history counters.
type Entry struct {
	Key            string
	Value          []byte
	CreateRevision int64 // revision of the write that created the key
	ModRevision    int64 // revision of the last write
	Version        int64 // writes since creation (1 after the first)
	Lease          LeaseID
}

// DeleteResult tells what a Delete did.
type DeleteResult struct {
	Revision int64 // the revision of the delete
	Deleted  int64 // keys removed
}

// KV is the key-value store of one group.
type KV struct {
	n     *Node
	group string
}

func readOpts(opts []ReadOption) readOptions {
	var o readOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

func (o readOptions) cluster() cluster.ReadOpts {
	if o.cacheHit != nil {
		*o.cacheHit = false
	}
	return cluster.ReadOpts{Consistency: o.consistency, MinRevision: o.minRevision, CacheHit: o.cacheHit}
}

// Get reads one key; ErrNotFound if it does not exist.
func (kv *KV) Get(ctx context.Context, key string, opts ...ReadOption) (*Entry, error) {
	e, _, err := kv.GetWithRevision(ctx, key, opts...)
	return e, err
}

// GetWithRevision is Get that also returns the group revision the read was
// served at (also with ErrNotFound), for a client to carry its session to
// another server with MinRevision.
func (kv *KV) GetWithRevision(ctx context.Context, key string, opts ...ReadOption) (*Entry, int64, error) {
	ctx, cancel := kv.n.bound(ctx)
	defer cancel()
	if err := checkKey(key); err != nil {
		return nil, 0, fmt.Errorf("get %s: %w", quoteKey(key), err)
	}
	o := readOpts(opts)
	r, err := kv.n.e.Get(ctx, kv.group, key, o.cluster())
	kv.n.shareCPU(o.consistency)
	if err != nil {
		return nil, 0, fmt.Errorf("get %s: %w", quoteKey(key), err)
	}
	if !r.Found {
		return nil, r.Revision, fmt.Errorf("get %s: %w", quoteKey(key), errs.NotFound)
	}
	e := toEntry(r.KV)
	return &e, r.Revision, nil
}

// Put writes key and returns the revision of the write. With
// IfModRevision it is a compare-and-swap (ErrConflict when it fails).
func (kv *KV) Put(ctx context.Context, key string, value []byte, opts ...WriteOption) (int64, error) {
	ctx, cancel := kv.n.bound(ctx)
	defer cancel()
	var o writeOptions
	for _, f := range opts {
		f(&o)
	}
	if o.prefix {
		return 0, fmt.Errorf("put %s: WithPrefix is for Delete: %w", quoteKey(key), errs.Invalid)
	}
	// A put is a one-op transaction inside; its errors name no "then op 0".
	if len(value) > fsm.MaxValueSize {
		return 0, fmt.Errorf("put %s: value of %d bytes, more than %d: %w", quoteKey(key), len(value), fsm.MaxValueSize, errs.TooLarge)
	}
	if o.lease < 0 {
		return 0, fmt.Errorf("put %s: lease %d: want a lease id > 0: %w", quoteKey(key), o.lease, errs.Invalid)
	}
	t := &fsm.Txn{Then: []fsm.Op{{Type: fsm.OpPut, Key: key, Value: value, Lease: int64(o.lease)}}}
	if o.cas {
		t.Compares = []fsm.Compare{modRevisionIs(key, o.modRev)}
	}
	r, err := kv.n.e.Txn(ctx, kv.group, t)
	if errors.Is(err, errs.LeaseNotFound) {
		return 0, fmt.Errorf("put %s: lease %d: %w", quoteKey(key), o.lease, errs.LeaseNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("put %s: %w", quoteKey(key), err)
	}
	if !r.Succeeded {
		return 0, fmt.Errorf("put %s: mod revision is not %d: %w", quoteKey(key), o.modRev, errs.Conflict)
	}
	return r.Revision, nil
}

// Delete removes key, or with WithPrefix every key starting with it ("" =
// all keys of the group). Deleting a missing key is not an error: Deleted
// is 0. With IfModRevision it is conditional (ErrConflict when it fails).
func (kv *KV) Delete(ctx context.Context, key string, opts ...WriteOption) (DeleteResult, error) {
	ctx, cancel := kv.n.bound(ctx)
	defer cancel()
	var o writeOptions
	for _, f := range opts {
		f(&o)
	}
	if o.lease != 0 {
		return DeleteResult{}, fmt.Errorf("delete %s: WithLease is for Put: %w", quoteKey(key), errs.Invalid)
	}
	op := fsm.Op{Type: fsm.OpDelete, Key: key}
	if o.prefix {
		if o.cas {
			return DeleteResult{}, fmt.Errorf("delete %s: IfModRevision does not go with WithPrefix: %w", quoteKey(key), errs.Invalid)
		}
		op.Type = fsm.OpDeletePrefix
	}
	t := &fsm.Txn{Then: []fsm.Op{op}}
	if o.cas {
		t.Compares = []fsm.Compare{modRevisionIs(key, o.modRev)}
	}
	r, err := kv.n.e.Txn(ctx, kv.group, t)
	if err != nil {
		return DeleteResult{}, fmt.Errorf("delete %s: %w", quoteKey(key), err)
	}
	if !r.Succeeded {
		return DeleteResult{}, fmt.Errorf("delete %s: mod revision is not %d: %w", quoteKey(key), o.modRev, errs.Conflict)
	}
	return DeleteResult{Revision: r.Revision, Deleted: r.Ops[0].Deleted}, nil
}

// Page is one page of a List.
type Page struct {
	Entries  []Entry
	Revision int64 // the group revision the page was read at
	More     bool  // keys remain after the last entry (continue with After)
}

// List returns the keys under prefix ("" = all), sorted, and the group
// revision they were read at. Without Limit it returns them all, or
// ErrTooLarge if there are more than MaxListLimit: page with Limit and
// After (or ListPage) instead.
func (kv *KV) List(ctx context.Context, prefix string, opts ...ReadOption) ([]Entry, int64, error) {
	o := readOpts(opts)
	p, err := kv.ListPage(ctx, prefix, opts...)
	if err != nil {
		return nil, 0, err
	}
	if p.More && o.limit == 0 {
		return nil, 0, fmt.Errorf("list %s: more than %d keys; page with Limit and After: %w", quoteKey(prefix), MaxListLimit, errs.TooLarge)
	}
	return p.Entries, p.Revision, nil
}

// ListPage returns one page of the keys under prefix: at most Limit (default
// and maximum MaxListLimit), after After.
func (kv *KV) ListPage(ctx context.Context, prefix string, opts ...ReadOption) (*Page, error) {
	ctx, cancel := kv.n.bound(ctx)
	defer cancel()
	o := readOpts(opts)
	if o.limit < 0 || o.limit > MaxListLimit {
		return nil, fmt.Errorf("list %s: Limit %d is outside 1..%d: %w", quoteKey(prefix), o.limit, MaxListLimit, errs.Invalid)
	}
	if len(prefix) > MaxKeySize || len(o.after) > MaxKeySize {
		return nil, fmt.Errorf("list %s: prefix or After over %d bytes: %w", quoteKey(prefix), MaxKeySize, errs.TooLarge)
	}
	if fsm.IsReserved(prefix) {
		return nil, fmt.Errorf("list %s: prefix contains NUL: %w", quoteKey(prefix), errs.Invalid)
	}
	limit := o.limit
	if limit == 0 {
		limit = MaxListLimit
	}
	r, err := kv.n.e.List(ctx, kv.group, fsm.ListQuery{Prefix: prefix, After: o.after, Limit: limit}, o.cluster())
	kv.n.shareCPU(o.consistency)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", quoteKey(prefix), err)
	}
	p := &Page{Entries: make([]Entry, len(r.KVs)), Revision: r.Revision, More: r.More}
	for i, e := range r.KVs {
		p.Entries[i] = toEntry(e)
	}
	return p, nil
}

// Revision is the group's current revision: the Raft index of its last
// applied change, under the read rules of opts.
func (kv *KV) Revision(ctx context.Context, opts ...ReadOption) (int64, error) {
	ctx, cancel := kv.n.bound(ctx)
	defer cancel()
	r, err := kv.n.e.Revision(ctx, kv.group, readOpts(opts).cluster())
	if err != nil {
		return 0, fmt.Errorf("revision: %w", err)
	}
	return r, nil
}

func toEntry(e fsm.KV) Entry {
	return Entry{Key: e.Key, Value: e.Value, CreateRevision: e.CreateRevision,
		ModRevision: e.ModRevision, Version: e.Version, Lease: LeaseID(e.Lease)}
}

func modRevisionIs(key string, rev int64) fsm.Compare {
	return fsm.Compare{Key: key, Target: fsm.TargetModRevision, Op: fsm.OpEqual, Int: rev}
}

// checkKey validates a key for reads, as the state machine does for writes.
func checkKey(key string) error {
	return fsm.ValidateUserKey(key, false)
}

// quoteKey is a key (or a service name) as error messages show it: quoted,
// and cut to 200 bytes (a 4 KiB key would drown the message and every log
// line repeating it).
func quoteKey(k string) string { return errs.Quote(k) }
