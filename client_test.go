package dister_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// openClient opens a client-role node on c's servers (every server a
// seed unless seeds are given).
func openClient(t testing.TB, c *testcluster.Cluster, cacheSize int, seeds ...string) *dister.Node {
	t.Helper()
	if len(seeds) == 0 {
		for _, id := range c.IDs() {
			seeds = append(seeds, c.Options(id).PeerAddr)
		}
	}
	n, err := dister.Open(context.Background(), dister.Options{Role: dister.RoleClient,
		Servers: seeds, CacheSize: cacheSize, Logger: testcluster.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatalf("client not ready: %v", err)
	}
	return n
}

func TestClientOptionsValidated(t *testing.T) {
	for name, o := range map[string]dister.Options{
		"no servers":   {Role: dister.RoleClient},
		"bad server":   {Role: dister.RoleClient, Servers: []string{"nohost"}},
		"data dir":     {Role: dister.RoleClient, Servers: []string{"127.0.0.1:1"}, DataDir: "/tmp/x"},
		"node id":      {Role: dister.RoleClient, Servers: []string{"127.0.0.1:1"}, NodeID: 3},
		"raft addr":    {Role: dister.RoleClient, Servers: []string{"127.0.0.1:1"}, RaftAddr: "127.0.0.1:2"},
		"join":         {Role: dister.RoleClient, Servers: []string{"127.0.0.1:1"}, Join: true},
		"unknown role": {Role: dister.Role(7), Servers: []string{"127.0.0.1:1"}},
		"stale bound":  {Role: dister.RoleClient, Servers: []string{"127.0.0.1:1"}, BalancerStaleAfter: 10 * time.Millisecond},
	} {
		if n, err := dister.Open(context.Background(), o); !errors.Is(err, dister.ErrInvalid) {
			if n != nil {
				n.Close()
			}
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// Every SDK call from a client node over 3 servers, with one seed: the
// client discovers the rest.
func TestClientEverySDKCall(t *testing.T) {
	t.Parallel() // waits on a lease's TTL: runs beside the others
	c := testcluster.New(t, 3)
	cl := openClient(t, c, 0, c.Options(2).PeerAddr)
	ctx := ctxT(t)

	st := cl.Status()
	if st.Role != dister.RoleClient || st.NodeID != 0 || cl.ID() != 0 {
		t.Fatalf("status %+v; want the client role and node id 0", st)
	}
	ms, err := cl.Members(ctx)
	if err != nil || len(ms) != 3 {
		t.Fatalf("members %v, %v; want the 3 servers", ms, err)
	}
	leader, err := cl.Group("").Leader(ctx)
	if err != nil || leader == 0 {
		t.Fatalf("leader %d, %v", leader, err)
	}

	// KV.
	kv := cl.KV()
	rev, err := kv.Put(ctx, "a", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, "a")
	if err != nil || string(e.Value) != "1" || e.ModRevision != rev {
		t.Fatalf("get a: %+v, %v (put at %d)", e, err, rev)
	}
	if _, err := kv.Put(ctx, "a", []byte("x"), dister.IfModRevision(rev-1)); !errors.Is(err, dister.ErrConflict) {
		t.Fatalf("CAS on a stale revision: %v", err)
	}
	if _, err := kv.Put(ctx, "b", []byte("2"), dister.IfModRevision(0)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []dister.ReadOption{dister.SessionRead(), dister.Linearizable(), dister.Stale()} {
		if _, err := kv.Get(ctx, "nope", c); !errors.Is(err, dister.ErrNotFound) {
			t.Fatalf("missing key: %v", err)
		}
	}
	list, _, err := kv.List(ctx, "")
	if err != nil || len(list) != 2 {
		t.Fatalf("list %v, %v", list, err)
	}
	tr, err := kv.Txn(ctx, dister.Txn{If: []dister.Compare{{Key: "a", Target: dister.CompareValue, Op: dister.Equal, Value: []byte("1")}},
		Then: []dister.Op{dister.Put("c", []byte("3"))}})
	if err != nil || !tr.Succeeded {
		t.Fatalf("txn %+v, %v", tr, err)
	}
	if r, err := kv.Revision(ctx, dister.Linearizable()); err != nil || r < tr.Revision {
		t.Fatalf("revision %d, %v; want >= %d", r, err, tr.Revision)
	}
	dr, err := kv.Delete(ctx, "", dister.WithPrefix())
	if err != nil || dr.Deleted != 3 {
		t.Fatalf("delete all: %+v, %v", dr, err)
	}
	if _, err := kv.Get(ctx, "a"); !errors.Is(err, dister.ErrNotFound) {
		t.Fatalf("deleted key read %v", err)
	}
	if _, err := kv.Put(ctx, "", nil); !errors.Is(err, dister.ErrInvalid) {
		t.Fatalf("empty key: %v", err)
	}

	// Watch: events from a server, then progress on request.
	wctx, wcancel := context.WithCancel(ctx)
	w := kv.Watch(wctx, "w/")
	wrev, _ := kv.Put(ctx, "w/1", []byte("v"))
	ev := nextEvent(t, w)
	if ev.Entry.Key != "w/1" || ev.Revision != wrev {
		t.Fatalf("watch event %+v; want w/1 at %d", ev, wrev)
	}
	wcancel()

	// Leases.
	ls := cl.Leases()
	id, err := ls.Grant(ctx, 2*time.Second, dister.AutoRenew())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "leased", []byte("v"), dister.WithLease(id)); err != nil {
		t.Fatal(err)
	}
	info, err := ls.Get(ctx, id)
	if err != nil || info.TTL != 2*time.Second || !slices.Equal(info.Keys, []string{"leased"}) {
		t.Fatalf("lease info %+v, %v", info, err)
	}
	if ttl, err := ls.Renew(ctx, id); err != nil || ttl != 2*time.Second {
		t.Fatalf("renew: %v, %v", ttl, err)
	}
	time.Sleep(3 * time.Second) // longer than the TTL: AutoRenew keeps it
	if _, err := kv.Get(ctx, "leased", dister.Linearizable()); err != nil {
		t.Fatalf("auto-renewed lease's key: %v", err)
	}
	if err := ls.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "leased"); !errors.Is(err, dister.ErrNotFound) {
		t.Fatalf("revoked lease's key: %v", err)
	}
	if err := ls.KeepAlive(ctx, id); !errors.Is(err, dister.ErrLeaseNotFound) {
		t.Fatalf("keepalive of a revoked lease: %v", err)
	}

	// Services.
	svcs := cl.Services()
	inst := dister.Instance{Service: "api", ID: "i1", Address: "127.0.0.1:8080",
		Check: dister.Check{Type: dister.CheckTTL, TTL: 2 * time.Second}}
	if err := svcs.Register(ctx, inst); err != nil {
		t.Fatal(err)
	}
	if err := svcs.Heartbeat(ctx, "api", "i1"); err != nil {
		t.Fatal(err)
	}
	got, err := svcs.Get(ctx, "api")
	if err != nil || len(got) != 1 || got[0].ID != "i1" {
		t.Fatalf("instances %+v, %v", got, err)
	}
	sw := svcs.Watch(ctx, "api")
	select {
	case ev := <-sw:
		if len(ev.Instances) != 1 {
			t.Fatalf("service watch: %+v", ev)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no service watch event")
	}
	if in, err := cl.Balancer().Pick(ctx, "api"); err != nil || in.ID != "i1" {
		t.Fatalf("balancer pick %+v, %v", in, err)
	}
	if err := svcs.Deregister(ctx, "api", "i1"); err != nil {
		t.Fatal(err)
	}
	if err := svcs.Deregister(ctx, "api", "i1"); !errors.Is(err, dister.ErrNotFound) {
		t.Fatalf("second deregister: %v", err)
	}

	// Groups and settings, forwarded.
	if err := cl.CreateGroup(ctx, "g2"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Group("g2").KV().Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if gs, err := cl.Groups(ctx); err != nil || !slices.Contains(gs, "g2") {
		t.Fatalf("groups %v, %v", gs, err)
	}
	if err := cl.DeleteGroup(ctx, "g2"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Group("g2").KV().Get(ctx, "k"); !errors.Is(err, dister.ErrGroupNotFound) {
		t.Fatalf("deleted group: %v", err)
	}
	if _, err := cl.Group("nope").KV().Put(ctx, "k", nil); !errors.Is(err, dister.ErrGroupNotFound) {
		t.Fatalf("missing group: %v", err)
	}
	if err := cl.SetSettings(ctx, dister.Settings{ScriptChecks: true}); err != nil {
		t.Fatal(err)
	}
	if s, err := cl.Settings(ctx); err != nil || !s.ScriptChecks {
		t.Fatalf("settings %+v, %v", s, err)
	}
	for _, g := range cl.Status().Groups {
		if g.Name == "default" && g.Revision == 0 {
			t.Fatalf("the default group's cache revision is 0 after reads: %+v", g)
		}
	}
}

// nextEvent is the watch's next change (progress notes skipped).
func nextEvent(t *testing.T, w <-chan dister.WatchEvent) dister.WatchEvent {
	t.Helper()
	for {
		select {
		case ev, ok := <-w:
			if !ok {
				t.Fatal("watch closed")
			}
			if ev.Err != nil {
				t.Fatalf("watch ended: %v", ev.Err)
			}
			if ev.Type == dister.EventProgress {
				continue
			}
			return ev
		case <-time.After(20 * time.Second):
			t.Fatal("no watch event")
		}
	}
}

var _ = fmt.Sprint

// A client node renews its auto-renewed leases of a group with one batched
// call per tick, not one call per lease: the servers' peer API counts the
// requests it gets by op.
func TestClientRenewsLeasesInBatches(t *testing.T) {
	t.Parallel() // waits on TTLs: runs beside the others
	regs := map[uint64]*prometheus.Registry{}
	var mu sync.Mutex
	c := testcluster.New(t, 3, func(o *dister.Options) {
		r := prometheus.NewRegistry()
		mu.Lock()
		regs[o.NodeID] = r
		mu.Unlock()
		o.Metrics = r
	})
	cl := openClient(t, c, 0)
	ctx := ctxT(t)
	const n, ttl = 30, 2 * time.Second
	for i := range n {
		id, err := cl.Leases().Grant(ctx, ttl, dister.AutoRenew())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cl.KV().Put(ctx, fmt.Sprintf("leased/%d", i), []byte("x"), dister.WithLease(id)); err != nil {
			t.Fatal(err)
		}
	}
	requests := func(op string) float64 {
		var sum float64
		mu.Lock()
		defer mu.Unlock()
		for _, r := range regs {
			sum += counterValue(t, r, "dister_peer_requests_total", op)
		}
		return sum
	}
	single, batches := requests("keepalive"), requests("keepalive.batch")
	const window = 3 * ttl // every lease is renewed several times
	time.Sleep(window)
	single, batches = requests("keepalive")-single, requests("keepalive.batch")-batches
	t.Logf("%d leases, TTL %v, %v: %v single keepalives, %v batches", n, ttl, window, single, batches)
	if single != 0 || batches == 0 || batches >= n {
		t.Fatalf("%v single keepalives and %v batches for %d leases in %v: not batched", single, batches, n, window)
	}
	// Renewed: every key outlived its lease's TTL several times over.
	entries, _, err := cl.KV().List(ctx, "leased/", dister.Linearizable())
	if err != nil || len(entries) != n {
		t.Fatalf("%d leased keys after %v, want %d (%v)", len(entries), window, n, err)
	}
}

// A client node saves a snapshot through a server: the file checks out,
// holds what the cluster holds, and the client's description matches the
// file's. With its first server stopped it takes the snapshot from
// another; a writer that fails mid-file ends the save with that error.
func TestClientSnapshot(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx := ctxT(t)
	seeds := []string{c.Options(1).PeerAddr, c.Options(2).PeerAddr, c.Options(3).PeerAddr}
	cl := openClient(t, c, 0, seeds...)
	if err := cl.CreateGroup(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		for _, g := range []string{"default", "g"} {
			if _, err := cl.Group(g).KV().Put(ctx, fmt.Sprintf("k%02d", i), bytes.Repeat([]byte("v"), 100)); err != nil {
				t.Fatal(err)
			}
		}
	}
	save := func() (dister.SnapshotInfo, []byte) {
		t.Helper()
		var buf bytes.Buffer
		info, err := cl.Snapshot(ctx, &buf)
		if err != nil {
			t.Fatalf("client snapshot: %v", err)
		}
		checked, err := dister.InspectSnapshot(ctx, bytes.NewReader(buf.Bytes()), nil)
		if err != nil {
			t.Fatalf("the client's file does not check out: %v", err)
		}
		if info.SHA256 != checked.SHA256 || info.Bytes != int64(buf.Len()) || len(checked.Groups) != 2 {
			t.Fatalf("client says %+v, the file says %+v (%d bytes)", info, checked, buf.Len())
		}
		for _, g := range checked.Groups {
			if g.Keys != 50 {
				t.Fatalf("group %q: %d keys in the file, want 50", g.Name, g.Keys)
			}
		}
		return info, buf.Bytes()
	}
	save()
	c.Stop(1)
	save()

	broken := &failingWriter{after: 100}
	if _, err := cl.Snapshot(ctx, broken); !errors.Is(err, errBrokenWriter) {
		t.Fatalf("snapshot into a writer that fails: %v", err)
	}
}

var errBrokenWriter = errors.New("disk full")

// failingWriter takes after bytes, then fails every write.
type failingWriter struct{ after, took int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.took+len(p) > w.after {
		n := w.after - w.took
		w.took = w.after
		return n, errBrokenWriter
	}
	w.took += len(p)
	return len(p), nil
}

// A closed client node is not ready: WaitReady says ErrClosed (it answered
// nil from what it knew before Close).
func TestClientClosedNotReady(t *testing.T) {
	c := testcluster.New(t, 1)
	cl := openClient(t, c, 0)
	if err := cl.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cl.WaitReady(ctxT(t)); !errors.Is(err, dister.ErrClosed) {
		t.Fatalf("WaitReady after Close: %v", err)
	}
}
