package dister_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

type review4Tally struct {
	acked, unknown, refused int64
	lastAcked               string
	revs                    []int64
}

// Writers through a follower, each putting its own key over and over (so
// the key's Version counts the puts applied), with puts that fail at apply
// (a missing lease, a CAS on a wrong revision) mixed into the batches, while
// the leader is closed. Every acknowledged put is applied once, none that
// was refused is, and acknowledged revisions are unique.
func TestBatchLeaderChangeVersions(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	leader := c.Leader()
	var via *dister.Node
	for _, id := range c.IDs() {
		if id != leader {
			via = c.Node(id)
			break
		}
	}
	kv := via.KV()
	const writers = 48
	tallies := make([]review4Tally, writers)
	var count atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ta := &tallies[w]
			key := fmt.Sprintf("lv/%02d", w)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				val := fmt.Sprintf("%d", i)
				pctx, pcancel := context.WithTimeout(ctx, time.Duration(500+w*40)*time.Millisecond)
				var err error
				var rev int64
				switch i % 5 {
				case 3: // fails at apply: lease missing
					rev, err = kv.Put(pctx, key, []byte("lease-"+val), dister.WithLease(dister.LeaseID(987654321)))
					if err == nil {
						t.Errorf("put with a missing lease succeeded (rev %d)", rev)
					}
				case 4: // fails at apply: CAS on a revision the key never had
					rev, err = kv.Put(pctx, key, []byte("cas-"+val), dister.IfModRevision(1<<40))
					if err == nil {
						t.Errorf("CAS on a wrong revision succeeded (rev %d)", rev)
					}
				default:
					rev, err = kv.Put(pctx, key, []byte(val))
				}
				pcancel()
				count.Add(1)
				switch {
				case err == nil:
					ta.acked++
					ta.lastAcked = val
					ta.revs = append(ta.revs, rev)
				case errors.Is(err, dister.ErrUnknownOutcome):
					if i%5 < 3 {
						ta.unknown++
					}
				case errors.Is(err, dister.ErrLeaseNotFound), errors.Is(err, dister.ErrConflict):
				case errors.Is(err, dister.ErrNoQuorum), errors.Is(err, context.DeadlineExceeded):
					if i%5 < 3 {
						ta.refused++
					}
				default:
					t.Errorf("writer %d put %d: %v", w, i, err)
					return
				}
			}
		}()
	}
	waitFor(t, func() bool { return count.Load() > 600 })
	c.Stop(leader)
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()

	var all []int64
	for w := range writers {
		ta := &tallies[w]
		e, err := via.KV().Get(ctx, fmt.Sprintf("lv/%02d", w), dister.Linearizable())
		if err != nil {
			t.Fatalf("writer %d: %v", w, err)
		}
		if e.Version < ta.acked || e.Version > ta.acked+ta.unknown {
			t.Errorf("writer %d: version %d, acknowledged %d, unknown outcome %d, refused %d",
				w, e.Version, ta.acked, ta.unknown, ta.refused)
		}
		if string(e.Value) == "lease-" || len(e.Value) > 4 && (string(e.Value[:4]) == "cas-" || string(e.Value[:6]) == "lease-") {
			t.Errorf("writer %d: a refused put applied: %q", w, e.Value)
		}
		if ta.unknown == 0 && string(e.Value) != ta.lastAcked {
			t.Errorf("writer %d: value %q, last acknowledged %q", w, e.Value, ta.lastAcked)
		}
		all = append(all, ta.revs...)
	}
	slices.Sort(all)
	for i := 1; i < len(all); i++ {
		if all[i] == all[i-1] {
			t.Fatalf("revision %d acknowledged twice", all[i])
		}
	}
	var acked, unknown int64
	for _, ta := range tallies {
		acked += ta.acked
		unknown += ta.unknown
	}
	t.Logf("%d acknowledged, %d unknown, %d writes", acked, unknown, count.Load())
}

// Commands of one Node that fail at apply, mixed in batches with ones that
// succeed: revisions of the successes are consecutive, failures take none,
// and every successful put's key holds version 1.
func TestBatchMixedFailures(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	n := c.Node(c.Leader())
	kv := n.KV()
	start, err := kv.Put(ctx, "mf/start", nil)
	if err != nil {
		t.Fatal(err)
	}
	var submitted atomic.Int64
	dister.SetSubmitHook(n, func(uint64) { submitted.Add(1) })
	defer dister.SetSubmitHook(n, nil)
	const writers, each = 64, 20
	var mu sync.Mutex
	var revs []int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				key := fmt.Sprintf("mf/%02d/%02d", w, i)
				var err error
				var rev int64
				switch (w + i) % 4 {
				case 1:
					_, err = kv.Put(ctx, key, nil, dister.WithLease(dister.LeaseID(55555)))
					if !errors.Is(err, dister.ErrLeaseNotFound) {
						t.Errorf("missing lease: %v", err)
					}
					continue
				case 2:
					_, err = kv.Put(ctx, key, nil, dister.IfModRevision(12345678))
					if !errors.Is(err, dister.ErrConflict) {
						t.Errorf("bad CAS: %v", err)
					}
					continue
				}
				rev, err = kv.Put(ctx, key, nil)
				if err != nil {
					t.Errorf("put: %v", err)
					continue
				}
				mu.Lock()
				revs = append(revs, rev)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.Sort(revs)
	for i, r := range revs {
		if r != start+1+int64(i) {
			t.Fatalf("sorted revision %d is %d, want %d", i, r, start+1+int64(i))
		}
	}
	l, _, err := kv.List(ctx, "mf/", dister.Linearizable())
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != len(revs)+1 {
		t.Errorf("%d keys, %d successful puts", len(l), len(revs))
	}
	for _, e := range l {
		if e.Version != 1 {
			t.Errorf("%s version %d", e.Key, e.Version)
		}
	}
	t.Logf("%d puts in %d proposals", writers*each, submitted.Load())
}
