package dister_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// collect reads the non-progress events of w until n of them or d passes.
func collectEvents(w <-chan dister.WatchEvent, n int, d time.Duration) []dister.WatchEvent {
	var evs []dister.WatchEvent
	timeout := time.After(d)
	for len(evs) < n {
		select {
		case ev, ok := <-w:
			if !ok {
				return evs
			}
			if ev.Type != dister.EventProgress {
				evs = append(evs, ev)
			}
			if ev.Err != nil {
				return evs
			}
		case <-timeout:
			return evs
		}
	}
	return evs
}

func TestTxnSemanticsAgainstEtcd(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	kv := c.Node(1).KV()
	rev0, err := kv.Put(ctx, "t/base", []byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	watch := kv.Watch(ctx, "t/", dister.FromRevision(rev0+1), dister.WithPrevEntry())

	// 1. The same key twice in one txn, then a delete of it.
	r, err := kv.Txn(ctx, dister.Txn{Then: []dister.Op{
		dister.Put("t/dup", []byte("1")), dister.Put("t/dup", []byte("2")),
	}})
	if err != nil || !r.Succeeded || r.Revision != rev0+1 || len(r.Deleted) != 2 {
		t.Fatalf("txn put twice: %+v %v", r, err)
	}
	e, err := kv.Get(ctx, "t/dup")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("put twice in one txn: %+v", e)
	if string(e.Value) != "2" || e.CreateRevision != r.Revision || e.ModRevision != r.Revision {
		t.Errorf("put twice: %+v, want value 2 at revision %d", e, r.Revision)
	}
	evs := collectEvents(watch, 2, 5*time.Second)
	if len(evs) != 2 || evs[0].Revision != r.Revision || evs[1].Revision != r.Revision || evs[0].LastInRevision || !evs[1].LastInRevision {
		t.Errorf("events of a txn putting one key twice: %+v", evs)
	}
	if len(evs) == 2 && (evs[1].PrevEntry == nil || string(evs[1].PrevEntry.Value) != "1") {
		t.Errorf("second event's prev entry: %+v", evs[1].PrevEntry)
	}

	// 2. Delete then put the same key: a new key at the txn's revision.
	r2, err := kv.Txn(ctx, dister.Txn{Then: []dister.Op{dister.Del("t/dup"), dister.Put("t/dup", []byte("3"))}})
	if err != nil || r2.Revision != r.Revision+1 || r2.Deleted[0] != 1 || r2.Deleted[1] != 0 {
		t.Fatalf("del+put: %+v %v", r2, err)
	}
	e, _ = kv.Get(ctx, "t/dup")
	if e.CreateRevision != r2.Revision || e.Version != 1 {
		t.Errorf("del+put: %+v, want created at %d with version 1", e, r2.Revision)
	}
	collectEvents(watch, 2, 5*time.Second)

	// 3. Put then a prefix delete covering it: both count.
	r3, err := kv.Txn(ctx, dister.Txn{Then: []dister.Op{dister.Put("t/p/x", []byte("x")), dister.DelPrefix("t/p/")}})
	if err != nil || r3.Revision != r2.Revision+1 || r3.Deleted[1] != 1 {
		t.Fatalf("put+delprefix: %+v %v", r3, err)
	}
	if _, err := kv.Get(ctx, "t/p/x"); !errors.Is(err, dister.ErrNotFound) {
		t.Errorf("put+delprefix left the key: %v", err)
	}
	collectEvents(watch, 2, 5*time.Second)

	// 4. A txn that changes nothing takes no revision, succeeded or not.
	r4, err := kv.Txn(ctx, dister.Txn{Then: []dister.Op{dister.Del("t/missing"), dister.DelPrefix("t/none/")}})
	if err != nil || !r4.Succeeded || r4.Revision != r3.Revision || r4.Deleted[0] != 0 || r4.Deleted[1] != 0 {
		t.Errorf("no-op txn: %+v %v (last revision %d)", r4, err, r3.Revision)
	}
	r5, err := kv.Txn(ctx, dister.Txn{If: []dister.Compare{{Key: "t/base", Target: dister.CompareVersion, Op: dister.Equal, Number: 9}},
		Then: []dister.Op{dister.Put("t/then", nil)}})
	if err != nil || r5.Succeeded || r5.Revision != r3.Revision || len(r5.Deleted) != 0 {
		t.Errorf("failed txn without else: %+v %v", r5, err)
	}

	// 5. Compares on a missing key.
	miss := "t/missing"
	type cmpCase struct {
		c    dister.Compare
		want bool
	}
	for i, cc := range []cmpCase{
		{dister.Compare{Key: miss, Target: dister.CompareVersion, Op: dister.Equal, Number: 0}, true},
		{dister.Compare{Key: miss, Target: dister.CompareCreateRevision, Op: dister.Equal, Number: 0}, true},
		{dister.Compare{Key: miss, Target: dister.CompareModRevision, Op: dister.Less, Number: 1}, true},
		{dister.Compare{Key: miss, Target: dister.CompareModRevision, Op: dister.Greater, Number: 0}, false},
		{dister.Compare{Key: miss, Target: dister.CompareValue, Op: dister.Equal, Value: nil}, true}, // documented: empty value
		{dister.Compare{Key: miss, Target: dister.CompareValue, Op: dister.Less, Value: []byte("a")}, true},
	} {
		r, err := kv.Txn(ctx, dister.Txn{If: []dister.Compare{cc.c}})
		if err != nil || r.Succeeded != cc.want {
			t.Errorf("compare %d on a missing key %+v: %+v %v, want %v", i, cc.c, r, err, cc.want)
		}
	}

	// 6. Else branch: its results.
	r6, err := kv.Txn(ctx, dister.Txn{
		If:   []dister.Compare{{Key: "t/base", Target: dister.CompareValue, Op: dister.Equal, Value: []byte("nope")}},
		Then: []dister.Op{dister.Put("t/then", nil)},
		Else: []dister.Op{dister.Put("t/else", nil), dister.Del("t/base"), dister.Del("t/none")},
	})
	if err != nil || r6.Succeeded || len(r6.Deleted) != 3 || r6.Deleted[1] != 1 || r6.Deleted[2] != 0 || r6.Revision != r3.Revision+1 {
		t.Errorf("else: %+v %v", r6, err)
	}
	if _, err := kv.Get(ctx, "t/then"); !errors.Is(err, dister.ErrNotFound) {
		t.Errorf("then ran with else: %v", err)
	}

	// 7. A missing lease fails the whole txn; nothing applies.
	r7, err := kv.Txn(ctx, dister.Txn{Then: []dister.Op{dister.Put("t/l1", nil), {Type: dister.OpPut, Key: "t/l2", Lease: 424242}}})
	if !errors.Is(err, dister.ErrLeaseNotFound) {
		t.Errorf("txn with a missing lease: %+v %v", r7, err)
	}
	if _, err := kv.Get(ctx, "t/l1"); !errors.Is(err, dister.ErrNotFound) {
		t.Errorf("txn with a missing lease applied an op: %v", err)
	}
	if rv, _ := kv.Revision(ctx); rv != r6.Revision {
		t.Errorf("revision %d after a failed txn, want %d", rv, r6.Revision)
	}

	// 8. A lease attached then the key deleted within the txn: the lease
	// holds no key, and revoking it deletes nothing.
	lid, err := c.Node(1).Leases().Grant(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	r8, err := kv.Txn(ctx, dister.Txn{Then: []dister.Op{{Type: dister.OpPut, Key: "t/leased", Lease: lid}, dister.Del("t/leased"), dister.Put("t/leased2", nil)}})
	if err != nil {
		t.Fatal(err)
	}
	li, err := c.Node(1).Leases().Get(ctx, lid)
	if err != nil || len(li.Keys) != 0 {
		t.Errorf("lease after put+delete of its key: %+v %v", li, err)
	}
	// Put with lease, then put again without: detached.
	if _, err := kv.Txn(ctx, dister.Txn{Then: []dister.Op{{Type: dister.OpPut, Key: "t/leased3", Lease: lid}, dister.Put("t/leased3", []byte("free"))}}); err != nil {
		t.Fatal(err)
	}
	li, _ = c.Node(1).Leases().Get(ctx, lid)
	if li == nil || len(li.Keys) != 0 {
		t.Errorf("lease after put with it then without: %+v", li)
	}
	if err := c.Node(1).Leases().Revoke(ctx, lid); err != nil {
		t.Fatal(err)
	}
	if e, err := kv.Get(ctx, "t/leased3"); err != nil || e.Lease != 0 {
		t.Errorf("revoke deleted a detached key: %+v %v", e, err)
	}
	_ = r8

	// 9. Reserved keys and limits.
	if _, err := kv.Txn(ctx, dister.Txn{If: []dister.Compare{{Key: "\x00svc", Target: dister.CompareVersion}}}); !errors.Is(err, dister.ErrInvalid) {
		t.Errorf("compare on a reserved key: %v", err)
	}
	if _, err := kv.Txn(ctx, dister.Txn{Then: []dister.Op{dister.DelPrefix("\x00")}}); !errors.Is(err, dister.ErrInvalid) {
		t.Errorf("prefix delete of the reserved namespace: %v", err)
	}
	if _, err := kv.Txn(ctx, dister.Txn{If: []dister.Compare{{Key: "t/x", Target: 9}}}); !errors.Is(err, dister.ErrInvalid) {
		t.Errorf("unknown target: %v", err)
	}
	if _, err := kv.Txn(ctx, dister.Txn{If: []dister.Compare{{Key: "t/x", Op: 9}}}); !errors.Is(err, dister.ErrInvalid) {
		t.Errorf("unknown op: %v", err)
	}
	if _, err := kv.Txn(ctx, dister.Txn{Then: []dister.Op{{Type: 9, Key: "t/x"}}}); !errors.Is(err, dister.ErrInvalid) {
		t.Errorf("unknown op type: %v", err)
	}
	if _, err := kv.Txn(ctx, dister.Txn{Then: []dister.Op{dister.Put("", nil)}}); !errors.Is(err, dister.ErrInvalid) {
		t.Errorf("empty key: %v", err)
	}
	if _, err := kv.Txn(ctx, dister.Txn{If: []dister.Compare{{Key: "t/x", Target: dister.CompareValue, Op: dister.Equal, Value: make([]byte, dister.MaxValueSize+1)}}}); !errors.Is(err, dister.ErrTooLarge) {
		t.Errorf("compare value over the limit: %v", err)
	}
	var ops []dister.Op
	for i := range dister.MaxTxnOps {
		ops = append(ops, dister.Put(fmt.Sprintf("t/many/%03d", i), nil))
	}
	if r, err := kv.Txn(ctx, dister.Txn{Then: ops}); err != nil || len(r.Deleted) != dister.MaxTxnOps {
		t.Errorf("txn of exactly MaxTxnOps ops: %v", err)
	}
	if l, _, _ := kv.List(ctx, "t/many/"); len(l) != dister.MaxTxnOps {
		t.Errorf("%d keys of %d", len(l), dister.MaxTxnOps)
	}
	// 10. An empty prefix delete in a txn leaves the services' keys.
	if err := c.Node(1).Services().Register(ctx, dister.Instance{Service: "api", ID: "a1", Address: "127.0.0.1:9"}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Txn(ctx, dister.Txn{Then: []dister.Op{dister.DelPrefix("")}}); err != nil {
		t.Fatal(err)
	}
	if ins, err := c.Node(1).Services().Get(ctx, "api"); err != nil || len(ins) != 1 {
		t.Errorf("services after deleting every client key: %v %v", ins, err)
	}
	if l, _, _ := kv.List(ctx, ""); len(l) != 0 {
		t.Errorf("keys left: %s", keys(l))
	}
}
