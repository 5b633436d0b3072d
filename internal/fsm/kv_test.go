package fsm

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister/internal/errs"
)

func TestPutGetListDelete(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("a", "1"), putCmd("a/b", "2"), putCmd("a/c", "3"), putCmd("b", "4"))

	g := h.get("a/b")
	if !g.Found || string(g.KV.Value) != "2" || g.KV.Key != "a/b" || g.Revision != 4 {
		t.Fatalf("get a/b = %+v", g)
	}
	if g := h.get("zz"); g.Found || g.Revision != 4 {
		t.Fatalf("get zz = %+v", g)
	}
	if g := h.get(""); g.Found {
		t.Fatalf("get empty key = %+v", g)
	}

	for _, c := range []struct {
		q    ListQuery
		keys []string
		more bool
	}{
		{ListQuery{}, []string{"a", "a/b", "a/c", "b"}, false},
		{ListQuery{Prefix: "a"}, []string{"a", "a/b", "a/c"}, false},
		{ListQuery{Prefix: "a/"}, []string{"a/b", "a/c"}, false},
		{ListQuery{Prefix: "a", After: "a"}, []string{"a/b", "a/c"}, false},
		{ListQuery{Prefix: "a", After: "a/b"}, []string{"a/c"}, false},
		{ListQuery{Prefix: "a", After: "a/c"}, nil, false},
		{ListQuery{Prefix: "a", After: "0"}, []string{"a", "a/b", "a/c"}, false},
		{ListQuery{Prefix: "a", After: "zzz"}, nil, false},
		{ListQuery{Limit: 2}, []string{"a", "a/b"}, true},
		{ListQuery{Limit: 2, After: "a/b"}, []string{"a/c", "b"}, false},
		{ListQuery{Limit: 4}, []string{"a", "a/b", "a/c", "b"}, false},
		{ListQuery{Prefix: "c"}, nil, false},
	} {
		r := h.list(c.q)
		if got := listKeys(r); !reflect.DeepEqual(got, c.keys) || r.More != c.more || r.Revision != 4 {
			t.Errorf("list %+v = %v more=%v rev=%d, want %v more=%v", c.q, got, r.More, r.Revision, c.keys, c.more)
		}
	}
	if _, err := h.sm.Lookup(ListQuery{Limit: -1}); !errors.Is(err, errs.Invalid) {
		t.Fatalf("negative limit: %v", err)
	}

	res := h.apply(delCmd("a/b"), delCmd("nope"))
	if res[0].Ops[0].Deleted != 1 || res[1].Ops[0].Deleted != 0 {
		t.Fatalf("delete counts %+v %+v", res[0].Ops, res[1].Ops)
	}
	if h.get("a/b").Found {
		t.Fatal("a/b still there")
	}
	res = h.apply(delPrefixCmd("a"))
	if res[0].Ops[0].Deleted != 2 {
		t.Fatalf("delete prefix a: %d", res[0].Ops[0].Deleted)
	}
	h.apply(putCmd("x", "1"), putCmd("y", "2"))
	res = h.apply(delPrefixCmd(""))
	if res[0].Ops[0].Deleted != 3 {
		t.Fatalf("delete prefix \"\": %d", res[0].Ops[0].Deleted)
	}
	if r := h.list(ListQuery{}); len(r.KVs) != 0 {
		t.Fatalf("left after delete all: %v", listKeys(r))
	}
}

func TestDeletePrefixManyKeys(t *testing.T) {
	h := newHarness(t, Options{})
	const n = 2*deletePrefixChunk + 500
	for i := 0; i < n; i += 100 {
		var cmds []*Command
		for j := i; j < i+100 && j < n; j++ {
			cmds = append(cmds, putCmd(fmt.Sprintf("p/%05d", j), "v"))
		}
		h.apply(cmds...)
	}
	h.apply(putCmd("p", "outside"), putCmd("q", "outside"))
	// The prefix delete and a put after it in one txn, and a read of the
	// same range in the next entry of the same Update call.
	res := h.apply(
		txnCmd(0, 0, &Txn{Then: []Op{{Type: OpDeletePrefix, Key: "p/"}, {Type: OpPut, Key: "p/new", Value: []byte("x")}}}),
		delPrefixCmd("p/"),
	)
	if res[0].Ops[0].Deleted != n || res[1].Ops[0].Deleted != 1 {
		t.Fatalf("deleted %d then %d, want %d then 1", res[0].Ops[0].Deleted, res[1].Ops[0].Deleted, n)
	}
	if got := listKeys(h.list(ListQuery{})); !reflect.DeepEqual(got, []string{"p", "q"}) {
		t.Fatalf("left %v", got)
	}
}

func TestRevisionsAndVersions(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("k", "v1"))                                                                      // revision 1
	h.applyLease(grantCmd(7, 1000))                                                                 // no key changed: still 1
	h.apply(txnCmd(0, 0, &Txn{Then: []Op{{Type: OpPut, Key: "k", Value: []byte("v2"), Lease: 7}}})) // 2
	kv := h.get("k").KV
	want := Record{Value: []byte("v2"), CreateRevision: 1, ModRevision: 2, Version: 2, Lease: 7}
	if !reflect.DeepEqual(kv.Record, want) {
		t.Fatalf("k = %+v, want %+v", kv.Record, want)
	}
	h.apply(putCmd("k", "v3")) // 3: a put without lease clears it
	if kv := h.get("k").KV; kv.Lease != 0 || kv.Version != 3 || kv.ModRevision != 3 || kv.CreateRevision != 1 {
		t.Fatalf("k = %+v", kv)
	}
	h.apply(delCmd("k"))       // 4
	h.apply(putCmd("k", "v4")) // 5: a new life
	if kv := h.get("k").KV; kv.Version != 1 || kv.CreateRevision != 5 || kv.ModRevision != 5 {
		t.Fatalf("recreated k = %+v", kv)
	}
	// An empty value is a value.
	h.apply(putCmd("empty", ""))
	if g := h.get("empty"); !g.Found || len(g.KV.Value) != 0 {
		t.Fatalf("empty = %+v", g)
	}
}

func TestCompareAndSwap(t *testing.T) {
	h := newHarness(t, Options{})
	r := h.apply(casCmd(0, 0, "k", "first", 0))[0] // index 1: must not exist
	if !r.Succeeded || r.Revision != 1 {
		t.Fatalf("create = %+v", r)
	}
	r = h.apply(casCmd(0, 0, "k", "again", 0))[0]
	if r.Succeeded {
		t.Fatal("second create succeeded")
	}
	if string(h.get("k").KV.Value) != "first" {
		t.Fatal("failed CAS changed the value")
	}
	if r := h.apply(casCmd(0, 0, "k", "second", 1))[0]; !r.Succeeded {
		t.Fatal("CAS on mod 1 failed")
	}
	// Else branch runs when a compare fails.
	r = h.apply(txnCmd(0, 0, &Txn{
		Compares: []Compare{{Key: "k", Target: TargetValue, Op: OpEqual, Value: []byte("nope")}},
		Then:     []Op{{Type: OpPut, Key: "then", Value: []byte("1")}},
		Else:     []Op{{Type: OpPut, Key: "else", Value: []byte("1")}, {Type: OpDelete, Key: "k"}},
	}))[0]
	if r.Succeeded || len(r.Ops) != 2 || r.Ops[1].Deleted != 1 {
		t.Fatalf("else result %+v", r)
	}
	if h.get("then").Found || !h.get("else").Found || h.get("k").Found {
		t.Fatal("wrong branch applied")
	}

	h.apply(putCmd("n", "5")) // version 1
	h.apply(putCmd("n", "6")) // version 2
	for _, c := range []struct {
		cmp  Compare
		want bool
	}{
		{Compare{Key: "n", Target: TargetVersion, Op: OpEqual, Int: 2}, true},
		{Compare{Key: "n", Target: TargetVersion, Op: OpGreater, Int: 1}, true},
		{Compare{Key: "n", Target: TargetVersion, Op: OpLess, Int: 2}, false},
		{Compare{Key: "n", Target: TargetCreateRevision, Op: OpNotEqual, Int: 0}, true},
		{Compare{Key: "n", Target: TargetValue, Op: OpLess, Value: []byte("7")}, true},
		{Compare{Key: "n", Target: TargetValue, Op: OpGreater, Value: []byte("6")}, false},
		{Compare{Key: "missing", Target: TargetVersion, Op: OpEqual, Int: 0}, true},
		{Compare{Key: "missing", Target: TargetCreateRevision, Op: OpEqual, Int: 0}, true},
		{Compare{Key: "missing", Target: TargetValue, Op: OpEqual, Value: nil}, true},
		{Compare{Key: "missing", Target: TargetValue, Op: OpNotEqual, Value: []byte("x")}, true},
	} {
		if r := h.apply(txnCmd(0, 0, &Txn{Compares: []Compare{c.cmp}}))[0]; r.Succeeded != c.want {
			t.Errorf("compare %+v = %v, want %v", c.cmp, r.Succeeded, c.want)
		}
	}
}

func TestTxnAtomicity(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("a", "1"), putCmd("c", "1"))
	before := h.list(ListQuery{})
	// A failed compare (second of two) with no Else changes nothing.
	r := h.apply(txnCmd(0, 0, &Txn{
		Compares: []Compare{
			{Key: "a", Target: TargetVersion, Op: OpEqual, Int: 1},
			{Key: "c", Target: TargetVersion, Op: OpEqual, Int: 9},
		},
		Then: []Op{{Type: OpPut, Key: "a", Value: []byte("2")}, {Type: OpDelete, Key: "c"}},
	}))[0]
	if r.Succeeded || len(r.Ops) != 0 {
		t.Fatalf("result %+v", r)
	}
	after := h.list(ListQuery{})
	if !reflect.DeepEqual(before.KVs, after.KVs) {
		t.Fatalf("failed txn changed state: %+v -> %+v", before.KVs, after.KVs)
	}
	// Several ops at one revision; later ops see earlier ones.
	r = h.apply(txnCmd(0, 0, &Txn{Then: []Op{
		{Type: OpPut, Key: "a", Value: []byte("2")},
		{Type: OpPut, Key: "b", Value: []byte("2")},
		{Type: OpDelete, Key: "c"},
		{Type: OpPut, Key: "t", Value: []byte("x")},
		{Type: OpDelete, Key: "t"},
		{Type: OpPut, Key: "b", Value: []byte("3")},
	}}))[0]
	rev := r.Revision
	if want := []OpResult{{}, {}, {Deleted: 1}, {}, {Deleted: 1}, {}}; !r.Succeeded || !reflect.DeepEqual(r.Ops, want) {
		t.Fatalf("result %+v", r)
	}
	for _, k := range []string{"a", "b"} {
		if kv := h.get(k).KV; kv.ModRevision != rev {
			t.Fatalf("%s mod %d, want %d", k, kv.ModRevision, rev)
		}
	}
	if kv := h.get("b").KV; string(kv.Value) != "3" || kv.Version != 2 || kv.CreateRevision != rev {
		t.Fatalf("b = %+v", kv)
	}
	if h.get("c").Found || h.get("t").Found {
		t.Fatal("deleted keys present")
	}
}

func TestInvalidCommandsAreDeterministicErrors(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("keep", "1"))
	forged := func(t *Txn) []byte { return encodeCommand(txnCmd(1, 1, t)) }
	cases := []struct {
		name string
		cmd  []byte
		want error
	}{
		{"empty", nil, errs.Invalid},
		{"garbage", []byte("garbage"), errs.Invalid},
		{"unknown version", []byte{9, 1, 0, 0, 0, 0, 0}, errs.Invalid},
		{"unknown kind", []byte{1, 9, 0, 0, 0, 0, 0}, errs.Invalid},
		{"truncated", encodeCommand(putCmd("k", "v"))[:6], errs.Invalid},
		{"trailing", append(encodeCommand(putCmd("k", "v")), 0), errs.Invalid},
		{"empty key", forged(&Txn{Then: []Op{{Type: OpPut, Key: ""}}}), errs.Invalid},
		{"nul key", forged(&Txn{Then: []Op{{Type: OpPut, Key: "a\x00b"}}}), errs.Invalid},
		{"bad op", forged(&Txn{Then: []Op{{Type: 9, Key: "k"}}}), errs.Invalid},
		{"bad target", forged(&Txn{Compares: []Compare{{Key: "k", Target: 9, Op: OpEqual}}}), errs.Invalid},
		{"huge length", []byte{1, 1, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f}, errs.Invalid},
	}
	for _, c := range cases {
		r := h.applyRaw(c.cmd)[0]
		if r.Value != 0 {
			t.Errorf("%s: Value %d", c.name, r.Value)
		}
		_, err := DecodeResult(r)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
		// The same command gives the same bytes on every replica.
		if r2 := h.applyRaw(c.cmd)[0]; !reflect.DeepEqual(r, r2) {
			t.Errorf("%s: results differ: %q vs %q", c.name, r.Data, r2.Data)
		}
	}
	// The message survives the round trip.
	_, err := DecodeResult(h.applyRaw(forged(&Txn{Then: []Op{{Type: OpPut, Key: "ok"}, {Type: OpDelete, Key: "a\x00"}}}))[0])
	if !errors.Is(err, errs.Invalid) || err.Error() != "then op 1: key contains NUL: dister: invalid argument" {
		t.Errorf("NUL key via Update: %v", err)
	}
	// A length over a limit is corrupt input: no encoder produces it.
	_, err = DecodeResult(h.applyRaw(forged(&Txn{Then: []Op{{Type: OpPut, Key: strings.Repeat("k", MaxKeySize+1)}}}))[0])
	if !errors.Is(err, errs.Invalid) {
		t.Errorf("too long key via Update: %v", err)
	}
	if got := listKeys(h.list(ListQuery{})); !reflect.DeepEqual(got, []string{"keep"}) {
		t.Fatalf("state changed: %v", got)
	}
	if h.sm.Applied() != h.idx {
		t.Fatalf("applied %d, want %d", h.sm.Applied(), h.idx)
	}
}

func TestPersistenceAcrossReopen(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("a", "1"), casCmd(5, 1, "b", "1", 0))
	h.apply(putCmd("a", "2"))
	if err := h.sm.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := h.sm.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.sm.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := h.sm.Lookup(GetQuery{Key: "a"}); !errors.Is(err, errs.Closed) {
		t.Fatalf("Lookup after Close: %v", err)
	}
	if _, err := h.sm.Update([]Entry{{Index: 9}}); !errors.Is(err, errs.Closed) {
		t.Fatalf("Update after Close: %v", err)
	}

	h.open(Options{})
	if h.idx != 3 || h.sm.Applied() != 3 {
		t.Fatalf("applied after reopen: %d / %d", h.idx, h.sm.Applied())
	}
	if kv := h.get("a").KV; string(kv.Value) != "2" || kv.Version != 2 {
		t.Fatalf("a = %+v", kv)
	}
	// Entries at or below the applied index are not applied again.
	old, _ := EncodeCommand(putCmd("a", "stale"))
	out, err := h.sm.Update([]Entry{{Index: 2, Cmd: old}, {Index: 3, Cmd: old}})
	if err != nil || out[0].Result.Value != 0 || out[1].Result.Value != 0 {
		t.Fatalf("replay: %v %+v", err, out)
	}
	if kv := h.get("a").KV; string(kv.Value) != "2" || kv.Version != 2 {
		t.Fatalf("replay changed a: %+v", kv)
	}
	// The dedup table survived too.
	if r := h.apply(casCmd(5, 1, "b", "1", 0))[0]; !r.Succeeded || r.Revision != 2 {
		t.Fatalf("dedup after reopen: %+v", r)
	}
}

func TestWaitApplied(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("a", "1"))
	if err := h.sm.WaitApplied(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := h.sm.WaitApplied(ctx, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout: %v", err)
	}

	var wg sync.WaitGroup
	errc := make(chan error, 3)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- h.sm.WaitApplied(context.Background(), 4)
		}()
	}
	time.Sleep(10 * time.Millisecond)
	h.apply(putCmd("a", "2")) // 2: not enough
	h.apply(putCmd("a", "3"), putCmd("a", "4"))
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}

	done := make(chan error, 1)
	go func() { done <- h.sm.WaitApplied(context.Background(), 100) }()
	time.Sleep(10 * time.Millisecond)
	if err := h.sm.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, errs.Closed) {
		t.Fatalf("wait across Close: %v", err)
	}
}

func TestLookupQueries(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("a", "1"), putCmd("b", "2"))
	if v, err := h.sm.Lookup(RevisionQuery{}); err != nil || v.(int64) != 2 {
		t.Fatalf("revision: %v %v", v, err)
	}
	if v, err := h.sm.Lookup(&RevisionQuery{}); err != nil || v.(int64) != 2 {
		t.Fatalf("*revision: %v %v", v, err)
	}
	if v, err := h.sm.Lookup(&GetQuery{Key: "a"}); err != nil || !v.(*GetResult).Found {
		t.Fatalf("*get: %v %v", v, err)
	}
	for _, q := range []any{nil, "a", 42, (*GetQuery)(nil), (*ListQuery)(nil)} {
		if _, err := h.sm.Lookup(q); !errors.Is(err, errs.Invalid) {
			t.Errorf("Lookup(%#v): %v", q, err)
		}
	}
	// Results do not alias pebble memory: mutate and re-read.
	g := h.get("a")
	g.KV.Value[0] = 'X'
	if string(h.get("a").KV.Value) != "1" {
		t.Fatal("result aliases the store")
	}
}

// TestConcurrentReadsAreConsistent runs Lookups and snapshots during
// Updates; every txn writes a and b at its revision, so a consistent read
// sees both with one ModRevision no newer than its Revision.
func TestConcurrentReadsAreConsistent(t *testing.T) {
	h := newHarness(t, Options{})
	pair := func(v string) *Command {
		return txnCmd(0, 0, &Txn{Then: []Op{
			{Type: OpPut, Key: "a", Value: []byte(v)},
			{Type: OpPut, Key: "b", Value: []byte(v)},
		}})
	}
	h.apply(pair("0"))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if i == 4 {
					// Events: two per revision (a, b), none past the view's
					// revision, and without More the last is at it.
					v, err := h.sm.Lookup(EventsQuery{From: 1, Limit: 100})
					if err != nil {
						errc <- err
						return
					}
					r := v.(*EventsResult)
					for j, e := range r.Events {
						if e.Revision > r.Revision || e.KV.Key != []string{"a", "b"}[j%2] || j%2 == 1 && e.Revision != r.Events[j-1].Revision {
							errc <- fmt.Errorf("inconsistent events %+v", r)
							return
						}
					}
					if !r.More && (len(r.Events) == 0 || r.Events[len(r.Events)-1].Revision != r.Revision) {
						errc <- fmt.Errorf("events end at %d, view at %d", r.Events[len(r.Events)-1].Revision, r.Revision)
						return
					}
					if _, err := h.sm.Lookup(LeasesQuery{}); err != nil {
						errc <- err
						return
					}
					_ = h.sm.CompactRevision()
					_ = h.sm.LeaseGeneration()
					continue
				}
				if i == 3 {
					sc, err := h.sm.PrepareSnapshot()
					if err == nil {
						err = h.sm.SaveSnapshot(sc, discard{}, nil)
					}
					if err != nil {
						errc <- err
						return
					}
					continue
				}
				v, err := h.sm.Lookup(ListQuery{})
				if err != nil {
					errc <- err
					return
				}
				r := v.(*ListResult)
				if len(r.KVs) != 2 || r.KVs[0].ModRevision != r.KVs[1].ModRevision || r.KVs[0].ModRevision > r.Revision {
					errc <- fmt.Errorf("inconsistent read %+v", r)
					return
				}
				g, err := h.sm.Lookup(GetQuery{Key: "a"})
				if err != nil {
					errc <- err
					return
				}
				if gr := g.(*GetResult); gr.KV.ModRevision > gr.Revision {
					errc <- fmt.Errorf("get sees the future: %+v", gr)
					return
				}
			}
		}(i)
	}
	for i := 1; i <= 200; i++ {
		h.apply(pair(fmt.Sprint(i)), pair(fmt.Sprint(i)))
	}
	// Keep the readers going through a few lease changes too (each Update
	// ends with a pair, which the events check relies on).
	for i := 0; i < 20; i++ {
		h.applyRaw(encodeAll(t, grantCmd(int64(1000+i), 10), pair(fmt.Sprint(i)))...)
	}
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Reads report the revision of the state they read while Updates commit:
// every revision writes "k", so a Get of it, and a List, must answer the
// key's ModRevision as the read's revision (a revision taken from memory
// while the view came from another commit would differ).
func TestReadRevisionMatchesViewUnderUpdates(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("k", "0"))
	reads, stop := readConsistently(t, h.sm)
	// Several entries per Update, one a batch of two commands.
	batch, err := EncodeBatch([][]byte{mustEncode(t, putCmd("k", "b1")), mustEncode(t, putCmd("k", "b2"))})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3000 && !t.Failed(); i++ {
		h.applyRaw(mustEncode(t, putCmd("k", fmt.Sprint(i))), batch)
	}
	stop()
	t.Logf("%d reads beside 3,000 updates", reads.Load())
}

// readConsistently starts readers that Get and List "k" on sm, each read
// checking the key's ModRevision is the read's revision ("k" is written at
// every revision); a read after Close fails with errs.Closed and ends its
// reader. stop ends them, waits, and fails the test if no read ran (it
// also runs at the test's cleanup, so a test that fails early leaves no
// reader behind).
func readConsistently(t *testing.T, sm *StateMachine) (reads *atomic.Int64, stop func()) {
	reads = new(atomic.Int64)
	done := make(chan struct{})
	// lookup answers q; false ends the reader (closed, or failed).
	lookup := func(q any) (any, bool) {
		v, err := sm.Lookup(q)
		if err != nil && !errors.Is(err, errs.Closed) {
			t.Error(err)
		}
		return v, err == nil
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				v, ok := lookup(GetQuery{Key: "k"})
				if !ok {
					return
				}
				if g := v.(*GetResult); !g.Found || g.KV.ModRevision != g.Revision {
					t.Errorf("get: key at mod revision %d, read reported at revision %d", g.KV.ModRevision, g.Revision)
					return
				}
				if v, ok = lookup(&ListQuery{Prefix: "k"}); !ok {
					return
				}
				if l := v.(*ListResult); len(l.KVs) != 1 || l.KVs[0].ModRevision != l.Revision {
					t.Errorf("list: %d keys, reported at revision %d", len(l.KVs), l.Revision)
					return
				}
				reads.Add(2)
			}
		})
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			if reads.Load() == 0 && !t.Failed() {
				t.Error("no read ran beside the updates: the test checked nothing")
			}
		})
	}
	t.Cleanup(stop)
	return reads, stop
}
