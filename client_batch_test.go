package dister_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/peer"
	"github.com/dister/dister/internal/testcluster"
)

// writeGate holds the client Propose calls that reach any server of c
// until open is called; held counts the calls waiting at it, manys the
// ProposeMany calls and their commands that came in. With unimplemented
// set the servers answer ProposeMany as servers without it.
type writeGate struct {
	gate      chan struct{}
	openOnce  sync.Once
	held      atomic.Int64
	manyCalls atomic.Int64
	manyCmds  atomic.Int64
}

func newWriteGate(t *testing.T, c *testcluster.Cluster, unimplemented bool) *writeGate {
	g := &writeGate{gate: make(chan struct{})}
	for _, id := range c.IDs() {
		dister.SetPeerProposeHook(c.Node(id), func(ctx context.Context, n int, many bool) error {
			if many {
				g.manyCalls.Add(1)
				g.manyCmds.Add(int64(n))
				if unimplemented {
					return fmt.Errorf("no such method here: %w", peer.ErrUnimplemented)
				}
			}
			g.held.Add(1)
			defer g.held.Add(-1)
			select {
			case <-g.gate:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}
	t.Cleanup(g.open)
	return g
}

// gatedClient is a client node over 3 servers whose client Propose calls
// wait at a writeGate, once a first write has taught the client the
// leader.
func gatedClient(t *testing.T, unimplemented bool) (*testcluster.Cluster, *dister.Node, context.Context, *writeGate) {
	c := testcluster.New(t, 3)
	cl := openClient(t, c, 0)
	ctx := ctxT(t)
	if _, err := cl.KV().Put(ctx, "warm", []byte("v")); err != nil {
		t.Fatal(err)
	}
	return c, cl, ctx, newWriteGate(t, c, unimplemented)
}

// fillCalls starts two writes (keys first/0 and first/1) on wg and waits
// until both are held: all that may be in flight to the leader.
func (g *writeGate) fillCalls(t *testing.T, ctx context.Context, kv *dister.KV, wg *sync.WaitGroup) {
	for i := range 2 {
		wg.Go(func() {
			if _, err := kv.Put(ctx, fmt.Sprintf("first/%d", i), []byte("v")); err != nil {
				t.Error(err)
			}
		})
	}
	g.waitHeld(t, 2)
}

func (g *writeGate) open() { g.openOnce.Do(func() { close(g.gate) }) }

// waitHeld waits until n calls wait at the gate.
func (g *writeGate) waitHeld(t *testing.T, n int64) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d calls held at the servers", n), func() bool { return g.held.Load() >= n })
}

// Writes that a client node's callers make while its calls to the leader
// are in flight travel together in ProposeMany calls, and each keeps its
// own outcome: of 20 callers racing to create one key in the same batch
// exactly one succeeds, and each of 40 puts to keys of their own is
// applied once (version 1) at a revision of its own.
func TestClientCoalescesWrites(t *testing.T) {
	_, cl, ctx, g := gatedClient(t, false)
	kv := cl.KV()
	var wg sync.WaitGroup
	g.fillCalls(t, ctx, kv, &wg)
	revs := make([]int64, 40)
	won := make([]bool, 20)
	errc := make(chan error, 60)
	for i := range 40 {
		wg.Go(func() {
			var err error
			revs[i], err = kv.Put(ctx, fmt.Sprintf("own/%02d", i), []byte("v"))
			errc <- err
		})
	}
	for i := range 20 {
		wg.Go(func() {
			r, err := kv.Txn(ctx, dister.Txn{
				If:   []dister.Compare{{Key: "once", Target: dister.CompareVersion, Op: dister.Equal, Number: 0}},
				Then: []dister.Op{dister.Put("once", fmt.Appendf(nil, "%d", i))}})
			if err == nil {
				won[i] = r.Succeeded
			}
			errc <- err
		})
	}
	// Every caller is queued at the client or in a batch the gate holds;
	// then the calls go.
	waitUntil(t, "all 60 writes queued or held", func() bool {
		return int64(dister.ClientQueuedWrites(cl))+g.manyCmds.Load() == 60
	})
	g.open()
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	winners := 0
	for _, w := range won {
		if w {
			winners++
		}
	}
	if winners != 1 {
		t.Fatalf("%d callers created the key, want exactly 1", winners)
	}
	seen := map[int64]bool{}
	for i, rev := range revs {
		if rev == 0 || seen[rev] {
			t.Fatalf("put %d got revision %d (seen before: %v)", i, rev, seen[rev])
		}
		seen[rev] = true
		e, err := kv.Get(ctx, fmt.Sprintf("own/%02d", i), dister.Linearizable())
		if err != nil || e.Version != 1 || e.ModRevision != rev {
			t.Fatalf("own/%02d: %+v, %v; want version 1 at revision %d", i, e, err, rev)
		}
	}
	_, manys, carried := dister.ClientWriteCalls(cl)
	if manys == 0 || carried < 2*manys || g.manyCalls.Load() != manys || g.manyCmds.Load() != carried {
		t.Fatalf("client made %d ProposeMany calls carrying %d commands; servers saw %d carrying %d: want batches",
			manys, carried, g.manyCalls.Load(), g.manyCmds.Load())
	}
}

// Against servers without ProposeMany (an earlier version) the client
// proposes each queued write alone, and stops trying ProposeMany there.
func TestClientWritesWithoutProposeMany(t *testing.T) {
	_, cl, ctx, g := gatedClient(t, true)
	kv := cl.KV()
	var wg sync.WaitGroup
	errc := make(chan error, 40)
	for i := range 2 {
		wg.Go(func() { _, err := kv.Put(ctx, fmt.Sprintf("k/%02d", i), []byte("v")); errc <- err })
	}
	g.waitHeld(t, 2)
	for i := 2; i < 40; i++ {
		wg.Go(func() { _, err := kv.Put(ctx, fmt.Sprintf("k/%02d", i), []byte("v")); errc <- err })
	}
	// Each of the 38 is queued, or sent alone (held) after a refusal.
	waitUntil(t, "all 38 writes queued or held", func() bool {
		return int64(dister.ClientQueuedWrites(cl))+g.held.Load()-2 == 38
	})
	g.open()
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 40 {
		e, err := kv.Get(ctx, fmt.Sprintf("k/%02d", i), dister.Linearizable())
		if err != nil || e.Version != 1 {
			t.Fatalf("k/%02d: %+v, %v; want version 1", i, e, err)
		}
	}
	// The batches of 16 that left before the first refusal came back.
	tried := g.manyCalls.Load()
	if tried < 1 || tried > 2 {
		t.Fatalf("servers saw %d ProposeMany calls, want the 1 or 2 sent before the first refusal", tried)
	}
	// Later bursts go one by one at once.
	for i := range 20 {
		wg.Go(func() {
			if _, err := kv.Put(ctx, fmt.Sprintf("later/%02d", i), []byte("v")); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := g.manyCalls.Load(); n != tried {
		t.Fatalf("servers saw %d ProposeMany calls after the first refusals, want no more than the %d", n, tried)
	}
}

// A write whose ctx ends while it waits in the client's queue was never
// sent: its caller gets the ctx error alone (surely not applied), and the
// key is never written. One whose ctx ends while its batch call is at the
// server gets ErrUnknownOutcome.
func TestClientQueuedWriteGivesUp(t *testing.T) {
	c, cl, ctx, g := gatedClient(t, false)
	kv := cl.KV()
	var wg sync.WaitGroup
	g.fillCalls(t, ctx, kv, &wg)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err := kv.Put(short, "queued", []byte("v"))
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, dister.ErrUnknownOutcome) {
		t.Fatalf("queued write past its deadline: %v; want the deadline alone", err)
	}
	g.open()
	wg.Wait()
	if _, err := kv.Get(ctx, "queued", dister.Linearizable()); !errors.Is(err, dister.ErrNotFound) {
		t.Fatalf("the write that never left was applied: %v", err)
	}

	// A batch call held at the server past its callers' deadline: they
	// get ErrUnknownOutcome (the call had left).
	singles := make(chan struct{})
	var heldSingles, manys atomic.Int64
	for _, id := range c.IDs() {
		dister.SetPeerProposeHook(c.Node(id), func(ctx context.Context, n int, many bool) error {
			if many {
				manys.Add(1)
				<-ctx.Done()
				return ctx.Err()
			}
			heldSingles.Add(1)
			select {
			case <-singles:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}
	for i := range 2 {
		wg.Go(func() {
			if _, err := kv.Put(ctx, fmt.Sprintf("second/%d", i), []byte("v")); err != nil {
				t.Error(err)
			}
		})
	}
	waitUntil(t, "the first two writes held at the server", func() bool { return heldSingles.Load() == 2 })
	short2, cancel2 := context.WithTimeout(ctx, time.Second)
	defer cancel2()
	errc := make(chan error, 3)
	for i := range 3 {
		go func() { _, err := kv.Put(short2, fmt.Sprintf("held/%d", i), []byte("v")); errc <- err }()
	}
	waitUntil(t, "the three queued behind the two", func() bool { return dister.ClientQueuedWrites(cl) == 3 })
	close(singles)
	wg.Wait()
	for range 3 {
		if err := <-errc; !errors.Is(err, dister.ErrUnknownOutcome) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("write whose batch call outlived its deadline: %v; want ErrUnknownOutcome and the deadline", err)
		}
	}
	if manys.Load() != 1 {
		t.Fatalf("%d ProposeMany calls, want the one batch", manys.Load())
	}
}

// Sixteen writes queued behind the calls in flight go in a ProposeMany at
// once, without waiting for a call to return: the client does not hold
// writes back for a whole commit round when there are enough for a batch.
func TestClientFullBatchGoesAtOnce(t *testing.T) {
	_, cl, ctx, g := gatedClient(t, false)
	kv := cl.KV()
	var wg sync.WaitGroup
	errc := make(chan error, 18)
	for i := range 18 {
		wg.Go(func() { _, err := kv.Put(ctx, fmt.Sprintf("k/%02d", i), []byte("v")); errc <- err })
		if i == 1 {
			g.waitHeld(t, 2) // the first two fill the calls in flight
		}
	}
	g.waitHeld(t, 3) // the batch of the other 16, while the two are held
	if calls, cmds := g.manyCalls.Load(), g.manyCmds.Load(); calls != 1 || cmds != 16 {
		t.Fatalf("servers saw %d ProposeMany calls with %d commands, want 1 with 16", calls, cmds)
	}
	g.open()
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
}
