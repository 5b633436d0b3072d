package dister_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestWatchEveryEventOnceInOrder: 16 writers, 10,000 writes; a watcher on
// another server sees each exactly once, in revision order.
func TestWatchEveryEventOnceInOrder(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := c.Node(3).KV().Watch(wctx, "w/")
	const writers, per = 16, 625
	type got struct {
		seen map[string]int64
		err  error
	}
	result := make(chan got, 1)
	go func() { // the consumer reads as the writes happen, as a real one would
		seen := map[string]int64{}
		var last int64
		for len(seen) < writers*per {
			ev := <-events
			switch {
			case ev.Err != nil:
				result <- got{seen, fmt.Errorf("watch ended after %d events: %w", len(seen), ev.Err)}
				return
			case ev.Type == dister.EventProgress:
				continue
			case ev.Type != dister.EventPut || ev.Revision < last:
				result <- got{seen, fmt.Errorf("event %+v after revision %d", ev, last)}
				return
			}
			if _, dup := seen[ev.Entry.Key]; dup {
				result <- got{seen, fmt.Errorf("%s delivered twice", ev.Entry.Key)}
				return
			}
			seen[ev.Entry.Key] = ev.Revision
			last = ev.Revision
		}
		result <- got{seen, nil}
	}()
	acked := make(chan [2]any, writers*per)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				k := fmt.Sprintf("w/%02d/%04d", w, i)
				rev, err := c.Node(uint64(w%2+1)).KV().Put(ctx, k, []byte{byte(i)})
				if err != nil {
					t.Error(err)
					return
				}
				acked <- [2]any{k, rev}
			}
		}()
	}
	wg.Wait()
	close(acked)
	var r got
	select {
	case r = <-result:
	case <-time.After(30 * time.Second):
		t.Fatal("watcher did not get every event in 30s")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	for a := range acked {
		if r.seen[a[0].(string)] != a[1].(int64) {
			t.Fatalf("%s written at %d, event at %d", a[0], a[1], r.seen[a[0].(string)])
		}
	}
}

// TestWatchResume: cancel a watch mid-stream, resume FromRevision(last+1):
// nothing missed, nothing repeated.
func TestWatchResume(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	kv := c.Node(1).KV()
	first, _ := kv.Put(ctx, "r/0", nil)
	for i := 1; i < 100; i++ {
		kv.Put(ctx, fmt.Sprintf("r/%d", i), nil)
	}
	wctx, cancel := context.WithCancel(ctx)
	var got []string
	var last int64
	for ev := range kv.Watch(wctx, "r/", dister.FromRevision(first)) {
		if ev.Err != nil {
			break
		}
		got = append(got, ev.Entry.Key)
		last = ev.Revision
		if len(got) == 40 {
			cancel()
		}
	}
	cancel()
	for i := 100; i < 150; i++ {
		kv.Put(ctx, fmt.Sprintf("r/%d", i), nil)
	}
	wctx2, cancel2 := context.WithCancel(ctx)
	defer cancel2()
	for ev := range kv.Watch(wctx2, "r/", dister.FromRevision(last+1)) {
		if ev.Err != nil {
			t.Fatal(ev.Err)
		}
		got = append(got, ev.Entry.Key)
		if len(got) == 150 {
			break
		}
	}
	for i, k := range got {
		if k != fmt.Sprintf("r/%d", i) {
			t.Fatalf("event %d is %s", i, k)
		}
	}
}

func TestWatchCompacted(t *testing.T) {
	c := testcluster.New(t, 1, func(o *dister.Options) { o.EventHistory = 100 })
	ctx := ctxT(t)
	kv := c.Node(1).KV()
	for i := range 2100 { // trimming runs every 1024 revisions
		if _, err := kv.Put(ctx, "c", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var ev dister.WatchEvent
	select { // reported before Watch returns, so a server can answer it with a status
	case ev = <-kv.Watch(ctx, "", dister.FromRevision(1)):
	default:
		t.Fatal("a compacted start was not reported at once")
	}
	if !errors.Is(ev.Err, dister.ErrCompacted) || ev.CompactRevision <= 1 {
		t.Fatalf("watch from 1: %+v", ev)
	}
	// From the compact revision on, the watch works.
	ev = <-kv.Watch(ctx, "", dister.FromRevision(ev.CompactRevision))
	if ev.Err != nil || ev.Type != dister.EventPut {
		t.Fatalf("watch from the compact revision: %+v", ev)
	}
}

// TestWatchOnFollowerAcrossFailover: a follower's watch keeps going, with
// no gap, when the leader is closed.
func TestWatchOnFollowerAcrossFailover(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	fs, leader := c.Followers()
	follower, other := fs[0], fs[1]
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := c.Node(follower).KV().Watch(wctx, "f/")
	for i := range 50 {
		c.Node(other).KV().Put(ctx, fmt.Sprintf("f/%03d", i), nil)
	}
	c.Stop(leader)
	for i := 50; i < 100; i++ {
		if _, err := c.Node(other).KV().Put(ctx, fmt.Sprintf("f/%03d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		ev := <-events
		if ev.Err != nil || ev.Entry.Key != fmt.Sprintf("f/%03d", i) {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
}

func TestWatchPrevEntryAndDeletes(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	kv := c.Node(1).KV()
	kv.Put(ctx, "p/a", []byte("1"))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := kv.Watch(wctx, "p/", dister.WithPrevEntry())
	kv.Put(ctx, "p/a", []byte("2"))
	kv.Put(ctx, "p/b", []byte("x"))
	d, _ := kv.Delete(ctx, "p/", dister.WithPrefix())
	ev := <-events
	if ev.Type != dister.EventPut || string(ev.Entry.Value) != "2" || ev.PrevEntry == nil || string(ev.PrevEntry.Value) != "1" {
		t.Fatalf("overwrite: %+v", ev)
	}
	ev = <-events
	if ev.Type != dister.EventPut || ev.PrevEntry != nil {
		t.Fatalf("create: %+v", ev)
	}
	a, b := <-events, <-events
	if a.Type != dister.EventDelete || b.Type != dister.EventDelete || a.Revision != d.Revision || b.Revision != d.Revision ||
		a.LastInRevision || !b.LastInRevision || a.PrevEntry == nil {
		t.Fatalf("prefix delete: %+v %+v (rev %d)", a, b, d.Revision)
	}
	if err := kv.RequestProgress(ctx); err != nil {
		t.Fatal(err)
	}
	if ev := <-events; ev.Type != dister.EventProgress || ev.Revision < d.Revision {
		t.Fatalf("progress: %+v", ev)
	}
}

func TestLeaseExpiryDeletesKeys(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	n := c.Node(1)
	id, err := n.Leases().Grant(ctx, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	putRev, err := n.KV().Put(ctx, "l/a", []byte("x"), dister.WithLease(id))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.KV().Put(ctx, "l/b", nil, dister.WithLease(id+1000)); !errors.Is(err, dister.ErrLeaseNotFound) {
		t.Fatalf("put with an unknown lease: %v", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// From after the put: a watch "from now" on server 2, whose replica
	// may not have applied the put yet, would start before it (seen in
	// CI: the first event was the put).
	events := c.Node(2).KV().Watch(wctx, "l/", dister.FromRevision(putRev+1))
	for range 4 { // kept alive past its TTL
		time.Sleep(400 * time.Millisecond)
		if err := c.Node(3).Leases().KeepAlive(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.KV().Get(ctx, "l/a", dister.Linearizable()); err != nil {
		t.Fatalf("kept-alive key gone: %v", err)
	}
	start := time.Now()
	ev := <-events
	if ev.Type != dister.EventDelete || ev.Entry.Key != "l/a" {
		t.Fatalf("expiry event: %+v", ev)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("expired after %v", d)
	}
	if err := n.Leases().KeepAlive(ctx, id); !errors.Is(err, dister.ErrLeaseNotFound) {
		t.Fatalf("keepalive of an expired lease: %v", err)
	}
	// Revoke deletes at once.
	id2, _ := n.Leases().Grant(ctx, time.Hour)
	n.KV().Put(ctx, "l/c", nil, dister.WithLease(id2))
	if err := c.Node(2).Leases().Revoke(ctx, id2); err != nil {
		t.Fatal(err)
	}
	if _, err := n.KV().Get(ctx, "l/c", dister.Linearizable()); !errors.Is(err, dister.ErrNotFound) {
		t.Fatalf("revoked lease's key: %v", err)
	}
}

// TestAutoRenewedLeaseDiesWithItsNode: keys of a Node's AutoRenew lease
// vanish within TTL plus an election after the Node closes, and not before.
func TestAutoRenewedLeaseDiesWithItsNode(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	leader := c.Leader()
	n := c.Node(leader) // the worst case: the renewing Node is the leader
	const ttl = 2 * time.Second
	id, err := n.Leases().Grant(ctx, ttl, dister.AutoRenew())
	if err != nil {
		t.Fatal(err)
	}
	n.KV().Put(ctx, "svc/me", []byte("up"), dister.WithLease(id))
	time.Sleep(2 * ttl) // renewed meanwhile
	var survivor uint64
	for _, sid := range c.IDs() {
		if sid != leader {
			survivor = sid
		}
	}
	if _, err := c.Node(survivor).KV().Get(ctx, "svc/me", dister.Linearizable()); err != nil {
		t.Fatalf("auto-renewed key gone while its Node lives: %v", err)
	}
	closed := time.Now()
	c.Stop(leader)
	for {
		_, err := c.Node(survivor).KV().Get(ctx, "svc/me", dister.Linearizable())
		if errors.Is(err, dister.ErrNotFound) {
			break
		}
		if time.Since(closed) > ttl+3*time.Second {
			t.Fatalf("key still there %v after its Node closed", time.Since(closed))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("key gone %v after its Node closed (TTL %v)", time.Since(closed), ttl)
}

func TestWatchEndsWhenGroupDeleted(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx := ctxT(t)
	n := c.Node(1)
	if err := n.CreateGroup(ctx, "tmp"); err != nil {
		t.Fatal(err)
	}
	events := n.Group("tmp").KV().Watch(ctx, "")
	n.Group("tmp").KV().Put(ctx, "k", nil)
	if ev := <-events; ev.Type != dister.EventPut {
		t.Fatalf("first event: %+v", ev)
	}
	if err := n.DeleteGroup(ctx, "tmp"); err != nil {
		t.Fatal(err)
	}
	ev := <-events
	if !errors.Is(ev.Err, dister.ErrGroupNotFound) {
		t.Fatalf("after the group was deleted: %+v", ev)
	}
	if _, open := <-events; open {
		t.Fatal("channel not closed after the final event")
	}
	if ev := <-n.Group("nope").KV().Watch(ctx, ""); !errors.Is(ev.Err, dister.ErrGroupNotFound) {
		t.Fatalf("watch of an unknown group: %+v", ev)
	}
}
