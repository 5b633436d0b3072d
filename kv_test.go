package dister_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestSingleServerKV(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	kv := c.Node(1).KV()

	rev1, err := kv.Put(ctx, "app/a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "app/a")
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Value) != "1" || e.CreateRevision != rev1 || e.ModRevision != rev1 || e.Version != 1 {
		t.Fatalf("after first put: %+v (rev %d)", e, rev1)
	}
	rev2, err := kv.Put(ctx, "app/a", []byte("2"))
	if err != nil || rev2 <= rev1 {
		t.Fatalf("second put: rev %d err %v", rev2, err)
	}
	e, _ = kv.Get(ctx, "app/a")
	if string(e.Value) != "2" || e.CreateRevision != rev1 || e.ModRevision != rev2 || e.Version != 2 {
		t.Fatalf("after second put: %+v", e)
	}

	for _, k := range []string{"app/b", "app/c", "other/x"} {
		if _, err := kv.Put(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	list, rev, err := kv.List(ctx, "app/")
	if err != nil {
		t.Fatal(err)
	}
	if got := keys(list); got != "app/a,app/b,app/c" {
		t.Fatalf("list app/ = %s", got)
	}
	if rev < rev2 {
		t.Fatalf("list revision %d below a write it shows (%d)", rev, rev2)
	}
	page, _, err := kv.List(ctx, "app/", dister.Limit(2))
	if err != nil || keys(page) != "app/a,app/b" {
		t.Fatalf("limit 2: %s %v", keys(page), err)
	}
	page, _, err = kv.List(ctx, "app/", dister.After("app/b"))
	if err != nil || keys(page) != "app/c" {
		t.Fatalf("after app/b: %s %v", keys(page), err)
	}
	all, _, err := kv.List(ctx, "")
	if err != nil || len(all) != 4 {
		t.Fatalf("list all: %d %v", len(all), err)
	}

	// CAS
	if _, err := kv.Put(ctx, "app/a", []byte("x"), dister.IfModRevision(rev1)); !errors.Is(err, dister.ErrConflict) {
		t.Fatalf("stale CAS: %v", err)
	}
	if _, err := kv.Put(ctx, "app/a", []byte("3"), dister.IfModRevision(rev2)); err != nil {
		t.Fatalf("good CAS: %v", err)
	}
	if _, err := kv.Put(ctx, "app/new", []byte("n"), dister.IfModRevision(0)); err != nil {
		t.Fatalf("create-only CAS on a new key: %v", err)
	}
	if _, err := kv.Put(ctx, "app/new", []byte("n"), dister.IfModRevision(0)); !errors.Is(err, dister.ErrConflict) {
		t.Fatalf("create-only CAS on an existing key: %v", err)
	}
	e, _ = kv.Get(ctx, "app/a")
	if string(e.Value) != "3" || e.Version != 3 {
		t.Fatalf("after CAS: %+v", e)
	}

	// Delete one, then a prefix.
	d, err := kv.Delete(ctx, "app/b")
	if err != nil || d.Deleted != 1 {
		t.Fatalf("delete app/b: %+v %v", d, err)
	}
	if _, err := kv.Get(ctx, "app/b"); !errors.Is(err, dister.ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	d, err = kv.Delete(ctx, "app/b")
	if err != nil || d.Deleted != 0 {
		t.Fatalf("delete missing: %+v %v", d, err)
	}
	d, err = kv.Delete(ctx, "app/", dister.WithPrefix())
	if err != nil || d.Deleted != 3 {
		t.Fatalf("delete prefix: %+v %v", d, err)
	}
	list, _, _ = kv.List(ctx, "")
	if keys(list) != "other/x" {
		t.Fatalf("after prefix delete: %s", keys(list))
	}
	// A recreated key starts a new life.
	rev3, _ := kv.Put(ctx, "app/a", []byte("again"))
	e, _ = kv.Get(ctx, "app/a", dister.Linearizable())
	if e.Version != 1 || e.CreateRevision != rev3 {
		t.Fatalf("recreated: %+v", e)
	}
	if _, err := kv.Get(ctx, "app/a", dister.Stale()); err != nil {
		t.Fatal(err)
	}
}

func TestTxnAtomic(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	kv := c.Node(1).KV()
	rev, _ := kv.Put(ctx, "acct/a", []byte("100"))
	kv.Put(ctx, "acct/b", []byte("0"))

	// Failing compare: Else runs, Then changes nothing.
	r, err := kv.Txn(ctx, dister.Txn{
		If:   []dister.Compare{{Key: "acct/a", Target: dister.CompareModRevision, Op: dister.Equal, Number: rev - 1}},
		Then: []dister.Op{dister.Put("acct/a", []byte("50")), dister.Put("acct/b", []byte("50"))},
		Else: []dister.Op{dister.Put("txn/failed", []byte("1"))},
	})
	if err != nil || r.Succeeded {
		t.Fatalf("txn with a false compare: %+v %v", r, err)
	}
	if e, _ := kv.Get(ctx, "acct/a"); string(e.Value) != "100" {
		t.Fatalf("then branch leaked: a=%s", e.Value)
	}
	if _, err := kv.Get(ctx, "txn/failed"); err != nil {
		t.Fatalf("else branch did not run: %v", err)
	}

	// Holding compares: every op at one revision.
	r, err = kv.Txn(ctx, dister.Txn{
		If: []dister.Compare{
			{Key: "acct/a", Target: dister.CompareValue, Op: dister.Equal, Value: []byte("100")},
			{Key: "acct/b", Target: dister.CompareVersion, Op: dister.Equal, Number: 1},
			{Key: "acct/none", Target: dister.CompareCreateRevision, Op: dister.Equal, Number: 0},
		},
		Then: []dister.Op{dister.Put("acct/a", []byte("50")), dister.Put("acct/b", []byte("50")), dister.Del("txn/failed")},
	})
	if err != nil || !r.Succeeded {
		t.Fatalf("txn: %+v %v", r, err)
	}
	if r.Deleted[2] != 1 {
		t.Fatalf("deleted counts %v", r.Deleted)
	}
	a, _ := kv.Get(ctx, "acct/a")
	b, _ := kv.Get(ctx, "acct/b")
	if string(a.Value) != "50" || string(b.Value) != "50" || a.ModRevision != r.Revision || b.ModRevision != r.Revision {
		t.Fatalf("a=%+v b=%+v txn rev %d", a, b, r.Revision)
	}

	// Too many ops: refused, nothing changes.
	var ops []dister.Op
	for i := range dister.MaxTxnOps + 1 {
		ops = append(ops, dister.Put(fmt.Sprintf("big/%d", i), nil))
	}
	if _, err := kv.Txn(ctx, dister.Txn{Then: ops}); !errors.Is(err, dister.ErrTooLarge) {
		t.Fatalf("129 ops: %v", err)
	}
	if l, _, _ := kv.List(ctx, "big/"); len(l) != 0 {
		t.Fatalf("a refused txn wrote %d keys", len(l))
	}
}

func TestLimits(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	kv := c.Node(1).KV()
	maxKey := strings.Repeat("k", dister.MaxKeySize)
	if _, err := kv.Put(ctx, maxKey, bytes.Repeat([]byte("v"), dister.MaxValueSize)); err != nil {
		t.Fatalf("largest key and value: %v", err)
	}
	cases := []struct {
		name  string
		key   string
		value []byte
		want  error
	}{
		{"empty key", "", nil, dister.ErrInvalid},
		{"key over 4 KiB", maxKey + "k", nil, dister.ErrTooLarge},
		{"NUL in key", "a\x00b", nil, dister.ErrInvalid},
		{"invalid UTF-8", "a\xffb", nil, dister.ErrInvalid},
		{"value over 1 MiB", "k", make([]byte, dister.MaxValueSize+1), dister.ErrTooLarge},
	}
	for _, tc := range cases {
		if _, err := kv.Put(ctx, tc.key, tc.value); !errors.Is(err, tc.want) {
			t.Errorf("%s: put err %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := kv.Get(ctx, ""); !errors.Is(err, dister.ErrInvalid) {
		t.Errorf("get empty key: %v", err)
	}
	if _, _, err := kv.List(ctx, "", dister.Limit(dister.MaxListLimit+1)); !errors.Is(err, dister.ErrInvalid) {
		t.Errorf("limit over max: %v", err)
	}
	if _, err := kv.Put(ctx, "x", nil, dister.WithPrefix()); !errors.Is(err, dister.ErrInvalid) {
		t.Errorf("put WithPrefix: %v", err)
	}
	if l, _, _ := kv.List(ctx, ""); len(l) != 1 {
		t.Fatalf("refused writes left %d keys, want only the largest one", len(l))
	}
}

func keys(es []dister.Entry) string {
	var ks []string
	for _, e := range es {
		ks = append(ks, e.Key)
	}
	return strings.Join(ks, ",")
}
