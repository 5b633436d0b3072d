package dister_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// TestLeaseConcurrentRefreshLosesFreshLease: renewals refresh the
// leader's lessor from a stale read of the lease set, concurrently; a
// refresh that read an older view and applies it after a newer one drops
// the leases granted in between, and a keepalive of such a lease (granted
// and acknowledged before the keepalive was sent) answers
// ErrLeaseNotFound. Likewise a revoked lease may be renewed.
func TestLeaseConcurrentRefreshLosesFreshLease(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ln := c.Node(c.Leader())
	const workers, per = 12, 150
	var lost, resurrected, other atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	fixed, err := ln.Leases().Grant(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	hctx, hcancel := context.WithCancel(ctx)
	var hwg sync.WaitGroup
	for h := 0; h < 6; h++ {
		hwg.Add(1)
		go func() {
			defer hwg.Done()
			for hctx.Err() == nil {
				_ = ln.Leases().KeepAlive(hctx, fixed)
			}
		}()
	}
	defer func() { hcancel(); hwg.Wait() }()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per && ctx.Err() == nil; i++ {
				id, err := ln.Leases().Grant(ctx, 30*time.Second)
				if err != nil {
					other.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				if err := ln.Leases().KeepAlive(ctx, id); err != nil {
					if errors.Is(err, dister.ErrLeaseNotFound) {
						lost.Add(1)
						t.Logf("lease %d granted, then: %v", id, err)
					} else {
						other.Add(1)
					}
				}
				if err := ln.Leases().Revoke(ctx, id); err != nil {
					other.Add(1)
					continue
				}
				if err := ln.Leases().KeepAlive(ctx, id); err == nil {
					resurrected.Add(1)
					t.Logf("lease %d revoked, then renewed", id)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("lost %d, renewed after revoke %d, other errors %d (%v)", lost.Load(), resurrected.Load(), other.Load(), firstErr.Load())
	if lost.Load() > 0 || resurrected.Load() > 0 {
		t.Fatalf("%d fresh leases answered ErrLeaseNotFound, %d revoked leases were renewed", lost.Load(), resurrected.Load())
	}
}

// TestLeaseCloseWhileKeeperRenews: a follower keeps many AutoRenew leases
// and ttl instances (renewed through the leader every third of 1 s) and
// is closed while renewals, grants and revokes are in flight through it.
// Close must return promptly, calls after it must fail with ErrClosed, and
// its leases must then expire (nothing renews them after Close returns).
func TestLeaseCloseWhileKeeperRenews(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	followers, leader := c.Followers()
	f := c.Node(followers[0])
	var ids []dister.LeaseID
	for i := 0; i < 50; i++ {
		id, err := f.Leases().Grant(ctx, time.Second, dister.AutoRenew())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.KV().Put(ctx, "close/"+string(rune('a'+i%26))+string(rune('a'+i/26)), []byte("x"), dister.WithLease(id)); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for i := 0; i < 10; i++ {
		if err := f.Services().Register(ctx, dister.Instance{Service: "closesvc", ID: "i" + string(rune('a'+i)),
			Address: "127.0.0.1:9", Check: dister.Check{Type: "ttl", TTL: time.Second}}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(1500 * time.Millisecond) // renewals under way
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var afterClose atomic.Int64
	var closed atomic.Bool
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// A grant sent after Close returned must fail; one sent
				// before may have committed and answer success a moment
				// after (it was once counted after its KeepAlive and
				// Revoke had run, which a loaded CI run made long).
				sentClosed := closed.Load()
				id, err := f.Leases().Grant(ctx, time.Second, dister.AutoRenew())
				if sentClosed && err == nil {
					afterClose.Add(1)
				}
				if err == nil {
					_ = f.Leases().KeepAlive(ctx, id)
					_ = f.Leases().Revoke(ctx, id)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	done := make(chan struct{})
	go func() { c.Stop(followers[0]); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return in 20 s")
	}
	closed.Store(true)
	closedAt := time.Now()
	t.Logf("Close took %v", closedAt.Sub(start))
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if n := afterClose.Load(); n > 0 {
		t.Errorf("%d grants succeeded through the node after its Close returned", n)
	}
	if _, err := f.Leases().Grant(ctx, time.Second); !errors.Is(err, dister.ErrClosed) {
		t.Errorf("grant after Close: %v, want ErrClosed", err)
	}
	// Every lease of the closed node expires within its TTL (+ slack).
	l := c.Node(leader)
	deadline := closedAt.Add(5 * time.Second)
	for _, id := range ids {
		for {
			_, err := l.Leases().Get(ctx, id)
			if errors.Is(err, dister.ErrLeaseNotFound) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("lease %d of the closed node still alive %v after Close", id, time.Since(closedAt))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestLeaseAutoRenewMinTTLSurvivesFailover: an AutoRenew lease of the
// minimum TTL, kept by a follower, must survive the leader's Close (the
// doc: "shorter would expire on an ordinary election").
func TestLeaseAutoRenewMinTTLSurvivesFailover(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	followers, _ := c.Followers()
	keeperID := followers[0]
	k := c.Node(keeperID)
	id, err := k.Leases().Grant(ctx, dister.MinLeaseTTL, dister.AutoRenew())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.KV().Put(ctx, "minttl", []byte("x"), dister.WithLease(id)); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 4; round++ {
		leader := c.Leader()
		if leader == keeperID {
			t.Logf("round %d: the keeper's node leads; skip", round)
		} else {
			c.Stop(leader)
			time.Sleep(3 * time.Second)
			if _, err := k.KV().Get(ctx, "minttl", dister.Linearizable()); err != nil {
				t.Fatalf("round %d: leader %d closed; key of the AutoRenew lease: %v", round, leader, err)
			}
			c.Restart(leader)
		}
		c.WaitReady()
		time.Sleep(2 * time.Second)
	}
}

// TestLeaseInputs: bounds and foreign ids. Each call must fail
// cleanly with the documented error, or succeed where valid.
func TestLeaseInputs(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	followers, leader := c.Followers()
	for _, n := range []*dister.Node{c.Node(leader), c.Node(followers[0])} {
		ls := n.Leases()
		for _, ttl := range []time.Duration{-time.Second, 0, time.Millisecond, 999 * time.Millisecond, dister.MaxLeaseTTL + time.Millisecond, 1<<63 - 1} {
			if _, err := ls.Grant(ctx, ttl); !errors.Is(err, dister.ErrInvalid) {
				t.Errorf("grant %v: %v, want ErrInvalid", ttl, err)
			}
		}
		big, err := ls.Grant(ctx, dister.MaxLeaseTTL)
		if err != nil {
			t.Fatalf("grant MaxLeaseTTL: %v", err)
		}
		if ttl, err := ls.Renew(ctx, big); err != nil || ttl != dister.MaxLeaseTTL {
			t.Errorf("renew MaxLeaseTTL lease: %v %v", ttl, err)
		}
		if info, err := ls.Get(ctx, big); err != nil || info.TTL != dister.MaxLeaseTTL {
			t.Errorf("get MaxLeaseTTL lease: %+v %v", info, err)
		}
		odd, err := ls.Grant(ctx, time.Second+1500*time.Microsecond)
		if err != nil {
			t.Fatal(err)
		}
		if ttl, err := ls.Renew(ctx, odd); err != nil || ttl < time.Second {
			t.Errorf("renew odd TTL lease: %v %v", ttl, err)
		}
		for _, id := range []dister.LeaseID{-1, 0, 1 << 62, -1 << 63} {
			err := ls.KeepAlive(ctx, id)
			if !errors.Is(err, dister.ErrLeaseNotFound) && !errors.Is(err, dister.ErrInvalid) {
				t.Errorf("keepalive %d: %v", id, err)
			}
			err = ls.Revoke(ctx, id)
			if !errors.Is(err, dister.ErrLeaseNotFound) && !errors.Is(err, dister.ErrInvalid) {
				t.Errorf("revoke %d: %v", id, err)
			}
			_, err = ls.Get(ctx, id)
			if !errors.Is(err, dister.ErrLeaseNotFound) && !errors.Is(err, dister.ErrInvalid) {
				t.Errorf("get %d: %v", id, err)
			}
			_, err = n.KV().Put(ctx, "inputs/k", []byte("v"), dister.WithLease(id))
			if id == 0 {
				if err != nil {
					t.Errorf("put with lease 0 (none): %v", err)
				}
			} else if !errors.Is(err, dister.ErrLeaseNotFound) && !errors.Is(err, dister.ErrInvalid) {
				t.Errorf("put with lease %d: %v", id, err)
			}
		}
		if err := ls.Revoke(ctx, big); err != nil {
			t.Error(err)
		}
		if err := ls.KeepAlive(ctx, big); !errors.Is(err, dister.ErrLeaseNotFound) {
			t.Errorf("keepalive after revoke: %v", err)
		}
		if err := ls.Revoke(ctx, big); !errors.Is(err, dister.ErrLeaseNotFound) {
			t.Errorf("revoke twice: %v", err)
		}
	}
	// A lease of another group.
	ln := c.Node(leader)
	if err := ln.CreateGroup(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	id, err := ln.Leases().Grant(ctx, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	og := ln.Group("other")
	err = og.Leases().KeepAlive(ctx, id)
	t.Logf("keepalive of default's lease %d in group other: %v", id, err)
	_, err = og.KV().Put(ctx, "x", []byte("v"), dister.WithLease(id))
	t.Logf("put in group other with default's lease %d: %v", id, err)
	if _, err := ln.Group("nosuch").Leases().Grant(ctx, time.Minute); !errors.Is(err, dister.ErrGroupNotFound) {
		t.Errorf("grant in a missing group: %v", err)
	}
	if err := ln.Group("nosuch").Leases().KeepAlive(ctx, id); !errors.Is(err, dister.ErrGroupNotFound) {
		t.Errorf("keepalive in a missing group: %v", err)
	}
}

// TestLeasePutRacesExpiry: puts attaching new keys to a lease race its
// expiry (and a revoke of a second lease). Afterwards no key may remain
// that names a lease that no longer exists.
func TestLeasePutRacesExpiry(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	followers, leader := c.Followers()
	nodes := []*dister.Node{c.Node(leader), c.Node(followers[0]), c.Node(followers[1])}
	for round := 0; round < 3; round++ {
		exp, err := nodes[0].Leases().Grant(ctx, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		rev, err := nodes[0].Leases().Grant(ctx, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var seq atomic.Int64
		for w, n := range nodes {
			for _, id := range []dister.LeaseID{exp, rev} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for ctx.Err() == nil {
						k := "race/" + string(rune('a'+w)) + "/" + time.Now().Format("150405.000000000") + string(rune('a'+seq.Add(1)%26))
						if _, err := n.KV().Put(ctx, k, []byte("v"), dister.WithLease(id)); err != nil {
							if !errors.Is(err, dister.ErrLeaseNotFound) {
								t.Errorf("put: %v", err)
							}
							return
						}
					}
				}()
			}
		}
		time.Sleep(500 * time.Millisecond)
		if err := nodes[1].Leases().Revoke(ctx, rev); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		time.Sleep(200 * time.Millisecond)
		for _, n := range nodes {
			es, _, err := n.KV().List(ctx, "race/", dister.Linearizable())
			if err != nil {
				t.Fatal(err)
			}
			if len(es) != 0 {
				t.Fatalf("round %d: %d keys left after their leases ended, first %q lease %d", round, len(es), es[0].Key, es[0].Lease)
			}
		}
	}
}

// TestLeaseLeaderClosingAnswersLeaseNotFound (held up: the closing
// leader answers NoQuorum, "lessor starting", for as long as its Close
// takes, never ErrLeaseNotFound, and the lease survives): while the leader's Close
// is under way (its lessor loop and life already stopped, its peer server
// and Raft replica still serving), a lease granted through a follower is
// renewed through that follower. The closing leader confirms its
// leadership, fails to reload its lease set (the reload runs under its
// cancelled life) and answers ErrLeaseNotFound for a lease that exists.
// The follower's keeper then drops the AutoRenew lease for good and its
// key vanishes although the follower's Node never closed.
//
// The window is held open by blocking the leader's watch hub, which
// Close waits for after stopping the lessor.
func TestLeaseLeaderClosingAnswersLeaseNotFound(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	followers, leader := c.Followers()
	ln, f := c.Node(leader), c.Node(followers[0])

	// A watch on the leader, and a hub hook that blocks once armed.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	_ = ln.KV().Watch(wctx, "hub/")
	var armed atomic.Bool
	release := make(chan struct{})
	blocked := make(chan struct{}, 1)
	dister.SetHubHook(ln, func(uint64) {
		if armed.CompareAndSwap(true, false) {
			blocked <- struct{}{}
			<-release
		}
	})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	armed.Store(true)
	if _, err := f.KV().Put(ctx, "hub/x", []byte("x")); err != nil {
		t.Fatal(err)
	}
	<-blocked

	closeDone := make(chan struct{})
	go func() { c.Stop(leader); close(closeDone) }()
	time.Sleep(300 * time.Millisecond) // Close stops the lessor, then waits for the hub
	select {
	case <-closeDone:
		t.Fatal("Close returned while the hub was blocked")
	default:
	}

	id, err := f.Leases().Grant(ctx, 3*time.Second, dister.AutoRenew())
	if err != nil {
		t.Fatalf("grant through the follower while the leader closes: %v", err)
	}
	if _, err := f.KV().Put(ctx, "closing/k", []byte("v"), dister.WithLease(id)); err != nil {
		t.Fatal(err)
	}
	kctx, kcancel := context.WithTimeout(ctx, 2*time.Second)
	kerr := f.Leases().KeepAlive(kctx, id)
	kcancel()
	t.Logf("keepalive of lease %d (granted just before) through follower %d while leader %d closes: %v", id, followers[0], leader, kerr)
	time.Sleep(1500 * time.Millisecond) // the follower's keeper renews (ttl/3 = 1 s)

	close(release)
	released = true
	<-closeDone
	nl := c.Leader()
	t.Logf("leader %d closed; new leader %d", leader, nl)
	if _, err := f.Leases().Get(ctx, id); err != nil {
		t.Logf("lease %d after the failover: %v", id, err)
	} else {
		t.Logf("lease %d still exists after the failover", id)
	}
	// The follower's Node is open and its keeper should renew the lease.
	time.Sleep(6 * time.Second)
	_, gerr := f.KV().Get(ctx, "closing/k", dister.Linearizable())
	if kerr != nil && errors.Is(kerr, dister.ErrLeaseNotFound) {
		t.Errorf("KeepAlive of an existing lease through an open follower: %v", kerr)
	}
	if gerr != nil {
		t.Errorf("key of AutoRenew lease %d kept by open follower %d: %v", id, followers[0], gerr)
	}
}
