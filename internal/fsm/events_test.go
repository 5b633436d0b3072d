package fsm

import (
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"testing"

	"github.com/dister/dister/internal/errs"
)

func rec(value string, create, mod, version, lease int64) Record {
	return Record{Value: []byte(value), CreateRevision: create, ModRevision: mod, Version: version, Lease: lease}
}

func putEv(rev int64, key string, r Record, prev *KV) Event {
	return Event{Type: EventPut, Revision: rev, KV: KV{Key: key, Record: r}, Prev: prev}
}

func delEv(rev int64, key string, prev *KV) Event {
	return Event{Type: EventDelete, Revision: rev, KV: KV{Key: key, Record: Record{ModRevision: rev, Value: []byte{}}}, Prev: prev}
}

func kvp(key string, r Record) *KV { return &KV{Key: key, Record: r} }

// normalize makes nil and empty values compare equal.
func normalize(evs []Event) []Event {
	out := make([]Event, len(evs))
	for i, e := range evs {
		if e.KV.Value == nil {
			e.KV.Value = []byte{}
		}
		if e.Prev != nil {
			p := *e.Prev
			if p.Value == nil {
				p.Value = []byte{}
			}
			e.Prev = &p
		}
		out[i] = e
	}
	return out
}

func wantEvents(t *testing.T, got, want []Event) {
	t.Helper()
	got, want = normalize(got), normalize(want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events:\n got %s\nwant %s", fmtEvents(got), fmtEvents(want))
	}
}

func fmtEvents(evs []Event) string {
	s := ""
	for _, e := range evs {
		s += fmt.Sprintf("\n  {%d %d %q %+v prev=", e.Type, e.Revision, e.KV.Key, e.KV.Record)
		if e.Prev != nil {
			s += fmt.Sprintf("%+v", *e.Prev)
		} else {
			s += "nil"
		}
		s += "}"
	}
	return s
}

func TestEventsPutOverwriteDelete(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("a", "1"))      // 1
	h.apply(putCmd("a", "2"))      // 2
	h.apply(delCmd("a"))           // 3
	h.apply(delCmd("a"))           // deletes nothing: no event, no revision
	h.apply(putCmd("a", ""))       // 4: a new life, empty value
	h.apply(txnCmd(0, 0, &Txn{}))  // nothing
	h.apply(delPrefixCmd("none/")) // nothing
	wantEvents(t, h.allEvents(1), []Event{
		putEv(1, "a", rec("1", 1, 1, 1, 0), nil),
		putEv(2, "a", rec("2", 1, 2, 2, 0), kvp("a", rec("1", 1, 1, 1, 0))),
		delEv(3, "a", kvp("a", rec("2", 1, 2, 2, 0))),
		putEv(4, "a", rec("", 4, 4, 1, 0), nil),
	})
	// From in the middle, and past the end.
	if r, err := h.events(3, 0); err != nil || len(r.Events) != 2 || r.Events[0].Revision != 3 || r.Revision != 4 || r.CompactRevision != 1 || r.More {
		t.Fatalf("from 3: %+v %v", r, err)
	}
	if r, err := h.events(100, 0); err != nil || len(r.Events) != 0 || r.Revision != 4 || r.More {
		t.Fatalf("from 100: %+v %v", r, err)
	}
	for _, q := range []EventsQuery{{From: 0}, {From: -1}, {From: 1, Limit: -1}} {
		if _, err := h.sm.Lookup(q); !errors.Is(err, errs.Invalid) {
			t.Errorf("%+v: %v", q, err)
		}
	}
	if _, err := h.sm.Lookup((*EventsQuery)(nil)); !errors.Is(err, errs.Invalid) {
		t.Fatal(err)
	}
	// Results do not alias pebble memory.
	r, _ := h.events(1, 0)
	r.Events[0].KV.Value[0] = 'X'
	r.Events[1].Prev.Value[0] = 'X'
	if r2, _ := h.events(1, 0); string(r2.Events[0].KV.Value) != "1" || string(r2.Events[1].Prev.Value) != "1" {
		t.Fatal("events alias the store")
	}
}

func TestEventsPrefixDeleteAndTxn(t *testing.T) {
	h := newHarness(t, Options{})
	h.apply(putCmd("p/1", "a"), putCmd("p/2", "b"), putCmd("p/3", "c"), putCmd("q", "d")) // 1..4
	r := h.apply(delPrefixCmd("p/"))[0]                                                   // 5
	if r.Ops[0].Deleted != 3 {
		t.Fatalf("deleted %d", r.Ops[0].Deleted)
	}
	wantEvents(t, h.allEvents(5), []Event{
		delEv(5, "p/1", kvp("p/1", rec("a", 1, 1, 1, 0))),
		delEv(5, "p/2", kvp("p/2", rec("b", 2, 2, 1, 0))),
		delEv(5, "p/3", kvp("p/3", rec("c", 3, 3, 1, 0))),
	})

	// A txn: events in op order, one revision; an op that changes nothing
	// has none.
	h.apply(txnCmd(0, 0, &Txn{Then: []Op{ // 6
		{Type: OpPut, Key: "y", Value: []byte("1")},
		{Type: OpPut, Key: "x", Value: []byte("1")},
		{Type: OpDelete, Key: "missing"},
		{Type: OpDelete, Key: "y"},
		{Type: OpPut, Key: "x", Value: []byte("2")},
		{Type: OpDeletePrefix, Key: "q"},
	}}))
	wantEvents(t, h.allEvents(6), []Event{
		putEv(6, "y", rec("1", 6, 6, 1, 0), nil),
		putEv(6, "x", rec("1", 6, 6, 1, 0), nil),
		delEv(6, "y", kvp("y", rec("1", 6, 6, 1, 0))),
		putEv(6, "x", rec("2", 6, 6, 2, 0), kvp("x", rec("1", 6, 6, 1, 0))),
		delEv(6, "q", kvp("q", rec("d", 4, 4, 1, 0))),
	})
	// The sequence numbers in the keys count from 0 per revision.
	if n := countPrefix(t, h.sm, prefixEvent); n != 4+3+5 {
		t.Fatalf("%d event keys", n)
	}

	// Failed compares with no Else: no event. With an Else: its events.
	fail := Compare{Key: "x", Target: TargetVersion, Op: OpEqual, Int: 99}
	if r := h.apply(txnCmd(0, 0, &Txn{Compares: []Compare{fail}, Then: []Op{{Type: OpPut, Key: "t", Value: []byte("1")}}}))[0]; r.Succeeded || r.Revision != 6 { // no change: still 6
		t.Fatalf("compare held, or the revision moved: %+v", r)
	}
	h.apply(txnCmd(0, 0, &Txn{Compares: []Compare{fail}, Else: []Op{{Type: OpDelete, Key: "x"}}})) // 7
	wantEvents(t, h.allEvents(7), []Event{
		delEv(7, "x", kvp("x", rec("2", 6, 6, 2, 0))),
	})

	// A repeated command (dedup) yields nothing the second time; neither do
	// a corrupt command and a put to a missing lease.
	put := encodeAll(t, txnCmd(4, 1, &Txn{Then: []Op{{Type: OpPut, Key: "d", Value: []byte("1")}}}))[0]
	h.applyRaw(put)                                        // 8
	h.applyRaw(put, []byte("junk"))                        // nothing
	h.applyRaw(put)                                        // nothing
	h.applyRaw(encodeAll(t, putLeaseCmd("l", "v", 77))...) // nothing
	wantEvents(t, h.allEvents(8), []Event{
		putEv(8, "d", rec("1", 8, 8, 1, 0), nil),
	})
	if r, _ := h.events(8, 0); r.Revision != 8 {
		t.Fatalf("revision %d", r.Revision)
	}
}

// TestEventsPaging: a page holds at most Limit events unless it must
// finish a revision; pages never split a revision and together hold
// everything once.
func TestEventsPaging(t *testing.T) {
	h := newHarness(t, Options{})
	sizes := []int{1, 3, 1, 1, 5, 2, 1, 7, 1, 1, 2}
	for i, n := range sizes {
		var ops []Op
		for j := 0; j < n; j++ {
			ops = append(ops, Op{Type: OpPut, Key: fmt.Sprintf("k%02d/%02d", i, j), Value: []byte("v")})
		}
		h.apply(txnCmd(0, 0, &Txn{Then: ops}))
	}
	h.apply(delPrefixCmd("k04/")) // 12: 5 events
	all := h.allEvents(1)
	if len(all) != 30 {
		t.Fatalf("%d events", len(all))
	}
	for limit := 1; limit <= 12; limit++ {
		var got []Event
		from := int64(1)
		for pages := 0; ; pages++ {
			if pages > 40 {
				t.Fatal("no end")
			}
			r, err := h.events(from, limit)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Events) == 0 {
				if r.More {
					t.Fatal("empty page with More")
				}
				break
			}
			// At most limit, unless the page is a single revision (or ends
			// with the revision that crossed the limit).
			last := r.Events[len(r.Events)-1].Revision
			before := 0
			for _, e := range r.Events {
				if e.Revision != last {
					before++
				}
			}
			if before >= limit {
				t.Fatalf("limit %d: %d events before the last revision", limit, before)
			}
			// Never split: the next page starts at a new revision.
			if r.More {
				nx, err := h.events(last+1, 1)
				if err != nil || len(nx.Events) == 0 {
					t.Fatalf("More but nothing after %d", last)
				}
			}
			for _, e := range all {
				if e.Revision == last && !containsEvent(r.Events, e) {
					t.Fatalf("limit %d: revision %d split", limit, last)
				}
			}
			got = append(got, r.Events...)
			if !r.More {
				break
			}
			from = last + 1
		}
		wantEvents(t, got, all)
	}
	// The default limit (1000) and a page exceeding it to finish a revision.
	big := make([]Op, 0, 100)
	for i := 0; i < 100; i++ {
		big = append(big, Op{Type: OpPut, Key: fmt.Sprintf("big/%03d", i), Value: []byte("v")})
	}
	for i := 0; i < 12; i++ {
		h.apply(txnCmd(0, 0, &Txn{Then: big}))
	}
	r, err := h.events(13, 0)
	if err != nil || len(r.Events) != 1000 || !r.More {
		t.Fatalf("default page: %d events more=%v %v", len(r.Events), r.More, err)
	}
	r, err = h.events(13, 950)
	if err != nil || len(r.Events) != 1000 || !r.More {
		t.Fatalf("page finishing a revision: %d events more=%v %v", len(r.Events), r.More, err)
	}
}

func containsEvent(evs []Event, e Event) bool {
	for _, x := range evs {
		if x.Revision == e.Revision && x.KV.Key == e.KV.Key && x.Type == e.Type {
			return true
		}
	}
	return false
}

// TestEventRetention: trims happen at multiples of 1024 and move the
// compact revision; older starts fail with a CompactedError.
func TestEventRetention(t *testing.T) {
	const retention = 100
	h := newHarness(t, Options{EventRetention: retention})
	put := func(n int) {
		var cmds []*Command
		for i := 0; i < n; i++ {
			cmds = append(cmds, putCmd(fmt.Sprintf("k%d", (h.idx+uint64(i))%7), "v"))
		}
		h.apply(cmds...)
	}
	put(1023)
	if h.sm.CompactRevision() != 1 || countPrefix(t, h.sm, prefixEvent) != 1023 {
		t.Fatalf("before the first trim point: compact %d, %d events", h.sm.CompactRevision(), countPrefix(t, h.sm, prefixEvent))
	}
	put(10) // crosses 1024
	const c1 = 1024 - retention + 1
	if got := h.sm.CompactRevision(); got != c1 {
		t.Fatalf("compact %d, want %d", got, c1)
	}
	if n := countPrefix(t, h.sm, prefixEvent); n != 1033-c1+1 {
		t.Fatalf("%d events kept, want %d", n, 1033-c1+1)
	}
	_, err := h.events(c1-1, 0)
	var ce *CompactedError
	if !errors.Is(err, errs.Compacted) || !errors.As(err, &ce) || ce.CompactRevision != c1 || ce.From != c1-1 || ce.Revision != 1033 {
		t.Fatalf("from below compact: %v", err)
	}
	r, err := h.events(c1, 0)
	if err != nil || r.CompactRevision != c1 || r.Events[0].Revision != c1 || len(r.Events) != 1033-c1+1 {
		t.Fatalf("from compact: %+v %v", r, err)
	}
	put(2048 - 1033) // reaches 2048 exactly
	const c2 = 2048 - retention + 1
	if got := h.sm.CompactRevision(); got != c2 {
		t.Fatalf("compact %d, want %d", got, c2)
	}
	if _, err := h.events(c1, 0); !errors.As(err, &ce) || ce.CompactRevision != c2 {
		t.Fatalf("from old compact: %v", err)
	}
	if evs := h.allEvents(c2); len(evs) != retention || evs[0].Revision != c2 {
		t.Fatalf("%d events from %d", len(evs), c2)
	}
	// The compact revision survives Close/Open.
	if err := h.sm.Close(); err != nil {
		t.Fatal(err)
	}
	h.open(Options{EventRetention: retention})
	if got := h.sm.CompactRevision(); got != c2 {
		t.Fatalf("compact after reopen %d", got)
	}
	if evs := h.allEvents(c2); len(evs) != retention {
		t.Fatalf("%d events after reopen", len(evs))
	}
	// A retention at least the index: nothing trimmed.
	h2 := newHarness(t, Options{EventRetention: 5000})
	var cmds []*Command
	for i := 0; i < 2048; i++ {
		cmds = append(cmds, putCmd("k", "v"))
	}
	h2.apply(cmds...)
	if h2.sm.CompactRevision() != 1 || len(h2.allEvents(1)) != 2048 {
		t.Fatal("trimmed inside the retention")
	}
}

// TestEventsSurviveSnapshotAndReopen: events, compact revision and leases
// come along in a snapshot and across Close/Open.
func TestEventsSurviveSnapshotAndReopen(t *testing.T) {
	src := newHarness(t, Options{EventRetention: 200})
	fillForSnapshot(src)
	for i := 0; i < 800; i++ {
		src.apply(putLeaseCmd(fmt.Sprintf("t/%d", i%50), "x", int64(1+i%2)))
	}
	src.applyLease(revokeCmd(false, 1))
	wantEv := src.allEvents(src.sm.CompactRevision())
	wantLeases := src.leases()
	wantL2, err := src.leaseInfo(2)
	if err != nil {
		t.Fatal(err)
	}
	if src.sm.CompactRevision() == 1 || len(wantEv) == 0 || len(wantLeases.Leases) != 1 || len(wantL2.Keys) == 0 {
		t.Fatalf("fill: compact %d, %d events, %d leases", src.sm.CompactRevision(), len(wantEv), len(wantLeases.Leases))
	}
	snap := saveSnapshot(t, src.sm)

	dst := newHarness(t, Options{EventRetention: 200})
	dst.apply(putCmd("mine", "1"))
	dst.applyLease(grantCmd(99, 10))
	gen := dst.sm.LeaseGeneration()
	if err := dst.sm.RecoverFromSnapshot(readerOf(snap), nil); err != nil {
		t.Fatal(err)
	}
	if dst.sm.LeaseGeneration() == gen {
		t.Fatal("lease generation not bumped by recovery")
	}
	check := func(h *harness, what string) {
		t.Helper()
		if h.sm.CompactRevision() != src.sm.CompactRevision() {
			t.Fatalf("%s: compact %d, want %d", what, h.sm.CompactRevision(), src.sm.CompactRevision())
		}
		wantEvents(t, h.allEvents(src.sm.CompactRevision()), wantEv)
		if got := h.leases(); !reflect.DeepEqual(got, wantLeases) {
			t.Fatalf("%s: leases %+v, want %+v", what, got, wantLeases)
		}
		if got, err := h.leaseInfo(2); err != nil || !reflect.DeepEqual(got, wantL2) {
			t.Fatalf("%s: lease 2 %+v %v", what, got, err)
		}
		if _, err := h.leaseInfo(99); !errors.Is(err, errs.LeaseNotFound) {
			t.Fatalf("%s: lease 99: %v", what, err)
		}
		checkLeaseIndex(t, h.sm)
	}
	check(dst, "recovered")
	if err := dst.sm.Close(); err != nil {
		t.Fatal(err)
	}
	dst.open(Options{EventRetention: 200})
	check(dst, "reopened")
	// And they keep working: revoking lease 2 deletes its keys with events.
	dst.idx = dst.sm.Applied()
	r := dst.applyLease(revokeCmd(false, 2))[0]
	if r.Deleted != int64(len(wantL2.Keys)) {
		t.Fatalf("revoke after recovery deleted %d, want %d", r.Deleted, len(wantL2.Keys))
	}
	if evs := dst.allEvents(r.Revision); len(evs) != len(wantL2.Keys) {
		t.Fatalf("%d events for the revoke", len(evs))
	}
}

// A watch hub reads the events of each applied batch, usually a few
// revisions: the page must not allocate room for a whole limit of events
// (it took 96 KB per read, a third of what a watched put path allocated).
// A multi-event revision still comes whole.
func TestEventsPageSizedByRevisions(t *testing.T) {
	h := newHarness(t, Options{})
	for i := range 20 {
		h.apply(putCmd(fmt.Sprintf("k%02d", i), "v"))
	}
	h.apply(txnCmd(0, 0, &Txn{Then: []Op{
		{Type: OpPut, Key: "a", Value: []byte("1")},
		{Type: OpPut, Key: "b", Value: []byte("2")},
		{Type: OpPut, Key: "c", Value: []byte("3")},
	}}))
	last := h.get("a").Revision
	r, err := h.events(last, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Events) != 3 || r.More {
		t.Fatalf("events of the last revision: %d (more %v), want its 3", len(r.Events), r.More)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const reads = 50
	for range reads {
		if _, err := h.events(last-1, 0); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / reads; per > 16<<10 {
		t.Fatalf("a read of 2 revisions' events allocated %d bytes", per)
	}
}
