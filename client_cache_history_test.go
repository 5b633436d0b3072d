package dister_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// rvState is a key's state from a revision on.
type rvState struct {
	rev    int64
	found  bool
	value  string
	modRev int64
}

// rvHistory is every event of a group's user keys, from a watch from
// revision 1: the truth the reads are checked against.
type rvHistory struct {
	mu    sync.Mutex
	keys  map[string][]rvState
	seen  int64
	moved chan struct{}
}

func newRVHistory() *rvHistory {
	return &rvHistory{keys: map[string][]rvState{}, moved: make(chan struct{})}
}

func (h *rvHistory) record(t *testing.T, ctx context.Context, w <-chan dister.WatchEvent) {
	for ev := range w {
		if ev.Err != nil {
			if ctx.Err() == nil {
				t.Errorf("history watch ended: %v", ev.Err)
			}
			return
		}
		h.mu.Lock()
		if ev.Type != dister.EventProgress {
			st := rvState{rev: ev.Revision, found: ev.Type == dister.EventPut}
			if st.found {
				st.value, st.modRev = string(ev.Entry.Value), ev.Entry.ModRevision
			}
			h.keys[ev.Entry.Key] = append(h.keys[ev.Entry.Key], st)
		}
		if ev.Revision > h.seen {
			h.seen = ev.Revision
			close(h.moved)
			h.moved = make(chan struct{})
		}
		h.mu.Unlock()
	}
}

func (h *rvHistory) wait(t *testing.T, rev int64) {
	deadline := time.After(60 * time.Second)
	for {
		h.mu.Lock()
		seen, moved := h.seen, h.moved
		h.mu.Unlock()
		if seen >= rev {
			return
		}
		select {
		case <-moved:
		case <-deadline:
			t.Fatalf("history watch at %d, want %d", seen, rev)
		}
	}
}

// at is key's state at revision rev.
func (h *rvHistory) at(key string, rev int64) rvState {
	h.mu.Lock()
	defer h.mu.Unlock()
	sts := h.keys[key]
	i := sort.Search(len(sts), func(i int) bool { return sts[i].rev > rev })
	if i == 0 {
		return rvState{}
	}
	return sts[i-1]
}

func (h *rvHistory) around(key string, from, to int64) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, s := range h.keys[key] {
		if s.rev >= from && s.rev <= to {
			out = append(out, fmt.Sprintf("%d:%v/%s(%s)", s.rev, s.found, s.value, rvOps.get(s.rev)))
		}
	}
	return out
}

// rvOps names the write of each revision the test acknowledged.
var rvOps = &rvOpLog{m: map[int64]string{}}

type rvOpLog struct {
	mu sync.Mutex
	m  map[int64]string
}

func (l *rvOpLog) set(rev int64, s string) {
	l.mu.Lock()
	l.m[rev] = s
	l.mu.Unlock()
}

func (l *rvOpLog) get(rev int64) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.m[rev]; ok {
		return s
	}
	return "not acked by the test: lease expiry?"
}

type rvRead struct {
	node, mode string
	key        string
	got        rvState // rev: the revision the read claims
	bound      int64   // the revision the read must not be older than
	hit        bool
	startedAt  time.Duration
}

func (r rvRead) String() string {
	return fmt.Sprintf("%s %s read of %s (hit %v, at %v): found %v value %q mod %d at revision %d, bound %d",
		r.node, r.mode, r.key, r.hit, r.startedAt.Round(time.Millisecond), r.got.found, r.got.value, r.got.modRev, r.got.rev, r.bound)
}

// check compares a read with the history: what it returned must be the
// key's state at the revision it claims, and (for a bounded read) the
// key must not have changed between that revision and the bound.
func (h *rvHistory) check(r rvRead) error {
	truth := h.at(r.key, r.got.rev)
	same := func(s rvState) bool {
		if s.found != r.got.found {
			return false
		}
		return !s.found || (s.value == r.got.value && s.modRev == r.got.modRev)
	}
	if !same(truth) {
		return fmt.Errorf("%v: the key at revision %d was found %v %q mod %d (since %d; key history %v)", r, r.got.rev, truth.found, truth.value, truth.modRev, truth.rev, h.around(r.key, r.got.modRev, r.got.rev))
	}
	if r.bound > r.got.rev {
		if b := h.at(r.key, r.bound); !same(b) {
			return fmt.Errorf("%v: older than the bound: the key at %d was found %v %q mod %d", r, r.bound, b.found, b.value, b.modRev)
		}
	}
	return nil
}

// Several client nodes (filtered caches of 20 and 1,000 keys, an
// unfiltered one of 15) under puts, deletes, prefix deletes, txn deletes
// and keys of leases that expire, written by the same nodes, while the
// feed's server restarts and the leader changes. Every read is checked
// against the group's history: it returns the key's state at the
// revision it claims, a linearizable read nothing older than a write
// acknowledged before it began, a session read nothing older than its
// node's own writes and reads.
func TestClientCacheAgainstHistory(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	rec := openClient(t, c, -1)
	hist := newRVHistory()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	hw := rec.KV().Watch(wctx, "", dister.FromRevision(1))
	var recWG sync.WaitGroup
	recWG.Add(1)
	go func() { defer recWG.Done(); hist.record(t, wctx, hw) }()
	defer recWG.Wait()
	defer wcancel()

	type node struct {
		name  string
		n     *dister.Node
		floor atomic.Int64
	}
	raise := func(a *atomic.Int64, v int64) {
		for {
			cur := a.Load()
			if v <= cur || a.CompareAndSwap(cur, v) {
				return
			}
		}
	}
	var nodes []*node
	for i, size := range []int{20, 1000, 15} {
		var n *dister.Node
		if i == 2 {
			n = openClientUnfiltered(t, c, size)
		} else {
			n = openClient(t, c, size)
		}
		nodes = append(nodes, &node{name: fmt.Sprintf("client%d(size %d)", i, size), n: n})
	}
	var acked atomic.Int64 // the highest revision of a write acknowledged
	start := time.Now()
	key := func() string { return fmt.Sprintf("p%d/k%d", rand.IntN(4), rand.IntN(10)) }

	var readsMu sync.Mutex
	var reads []rvRead
	var readErrs, writeErrs, hits atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for ni, nd := range nodes {
		kv := nd.n.KV()
		// A writer.
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				val := fmt.Sprintf("n%d-%d", ni, seq)
				var rev int64
				var err error
				var what string
				switch p := rand.IntN(100); {
				case p < 55:
					k := key()
					what = "put " + k
					rev, err = kv.Put(cctx, k, []byte(val))
				case p < 65:
					k := key()
					what = "delete " + k
					var r dister.DeleteResult
					r, err = kv.Delete(cctx, k)
					rev = r.Revision
				case p < 70:
					k := fmt.Sprintf("p%d/", rand.IntN(4))
					what = "delete prefix " + k
					var r dister.DeleteResult
					r, err = kv.Delete(cctx, k, dister.WithPrefix())
					rev = r.Revision
				case p < 85:
					// Keys may repeat: a txn that changes a key twice leaves
					// it as its last op says (TestClientCacheTxnChangesKeyTwice).
					k1, k2, k3 := key(), key(), key()
					what = fmt.Sprintf("txn put %s del %s delprefix %s", k1, k2, k3)
					var r *dister.TxnResult
					r, err = kv.Txn(cctx, dister.Txn{Then: []dister.Op{
						dister.Put(k1, []byte(val)), dister.Del(k2), dister.DelPrefix(k3)}})
					if err == nil {
						rev = r.Revision
					}
				default:
					k := key()
					what = "leased put " + k
					var id dister.LeaseID
					id, err = nd.n.Leases().Grant(cctx, time.Second)
					if err == nil {
						rev, err = kv.Put(cctx, k, []byte(val), dister.WithLease(id))
					}
				}
				if err == nil && rev > 0 {
					rvOps.set(rev, fmt.Sprintf("%s by %s", what, nd.name))
				}
				ccancel()
				if err != nil {
					writeErrs.Add(1)
					continue
				}
				if rev > 0 {
					raise(&acked, rev)
					raise(&nd.floor, rev)
				}
			}
		}()
		// Readers.
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					k := key()
					var mode string
					var opt dister.ReadOption
					var bound int64
					switch rand.IntN(3) {
					case 0:
						mode, opt, bound = "linearizable", dister.Linearizable(), acked.Load()
					case 1:
						mode, opt, bound = "session", dister.SessionRead(), nd.floor.Load()
					default:
						mode, opt = "stale", dister.Stale()
					}
					at := time.Since(start)
					var hit bool
					cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
					e, rev, err := kv.GetWithRevision(cctx, k, opt, dister.CacheInfo(&hit))
					ccancel()
					r := rvRead{node: nd.name, mode: mode, key: k, bound: bound, hit: hit, startedAt: at}
					switch {
					case err == nil:
						r.got = rvState{rev: rev, found: true, value: string(e.Value), modRev: e.ModRevision}
					case errors.Is(err, dister.ErrNotFound):
						r.got = rvState{rev: rev}
					default:
						readErrs.Add(1)
						continue
					}
					if hit {
						hits.Add(1)
					}
					if mode != "stale" {
						raise(&nd.floor, rev)
					}
					readsMu.Lock()
					reads = append(reads, r)
					readsMu.Unlock()
				}
			}()
		}
	}

	// Faults: the feed's server of the first client restarts (same data
	// dir), then the leader closes and comes back.
	time.Sleep(3 * time.Second)
	feed := dister.ClientFeedServer(nodes[0].n, "default")
	var feedID uint64
	for _, id := range c.IDs() {
		if c.Options(id).PeerAddr == feed {
			feedID = id
		}
	}
	if feedID != 0 {
		t.Logf("%v: stopping server %d (client0's feed)", time.Since(start).Round(time.Millisecond), feedID)
		c.Stop(feedID)
		time.Sleep(2 * time.Second)
		c.Restart(feedID)
		t.Logf("%v: server %d restarted", time.Since(start).Round(time.Millisecond), feedID)
	}
	time.Sleep(3 * time.Second)
	leader := c.Leader()
	t.Logf("%v: stopping leader %d", time.Since(start).Round(time.Millisecond), leader)
	c.Stop(leader)
	time.Sleep(2 * time.Second)
	c.Restart(leader)
	t.Logf("%v: leader %d restarted", time.Since(start).Round(time.Millisecond), leader)
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()

	end, err := nodes[0].n.KV().Put(ctx, "zz/end", []byte("end"))
	if err != nil {
		t.Fatal(err)
	}
	hist.wait(t, end)
	bad := 0
	for _, r := range reads {
		if err := hist.check(r); err != nil {
			if bad++; bad <= 15 {
				t.Error(err)
			}
		}
	}
	t.Logf("%d reads (%d from cache, %d failed), %d bad; write errors %d; last revision %d",
		len(reads), hits.Load(), readErrs.Load(), bad, writeErrs.Load(), end)
}

// openClientUnfiltered opens a client node whose caches follow their
// groups unfiltered.
func openClientUnfiltered(t *testing.T, c *testcluster.Cluster, size int) *dister.Node {
	n := openClient(t, c, size)
	dister.ClientFeedsUnfiltered(n)
	return n
}
