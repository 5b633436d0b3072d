package client_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/client"
	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
	"github.com/dister/dister/internal/testcluster"
)

// netCtl sits between a client engine and the servers (gRPC interceptors):
// it can freeze the client's view of the cluster (topology answers are
// replayed from before the freeze), make topology calls hang, cut and
// refuse streams, and hold the answers of writes.
type netCtl struct {
	freeze    atomic.Bool
	hangTopo  atomic.Bool
	cut       atomic.Bool
	holdWrite atomic.Bool
	partition atomic.Bool  // every unary call fails too
	reads     atomic.Int64 // reads a server answered (an error too)

	mu      sync.Mutex
	saved   map[string][]byte
	cancels []context.CancelFunc
	opened  int

	applied chan struct{} // a held write was applied
	release chan struct{} // closed: held writes answer
}

func newNetCtl() *netCtl {
	return &netCtl{saved: map[string][]byte{}, applied: make(chan struct{}, 16), release: make(chan struct{})}
}

func (n *netCtl) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if n.partition.Load() {
		return status.Error(codes.Unavailable, "test: partitioned")
	}
	addr := cc.Target()
	in, _ := req.(*[]byte)
	if strings.HasSuffix(method, "/Call") && in != nil && bytes.Contains(*in, []byte(peer.OpTopology)) {
		if n.hangTopo.Load() {
			<-ctx.Done()
			return status.Error(codes.Canceled, ctx.Err().Error())
		}
		if n.freeze.Load() {
			n.mu.Lock()
			b, ok := n.saved[addr]
			n.mu.Unlock()
			if ok {
				*(reply.(*[]byte)) = append([]byte(nil), b...)
				return nil
			}
		}
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err == nil && !n.freeze.Load() {
			n.mu.Lock()
			n.saved[addr] = append([]byte(nil), *(reply.(*[]byte))...)
			n.mu.Unlock()
		}
		return err
	}
	if strings.HasSuffix(method, "/Propose") && n.holdWrite.Load() {
		err := invoker(ctx, method, req, reply, cc, opts...)
		n.applied <- struct{}{}
		<-n.release
		return err
	}
	err := invoker(ctx, method, req, reply, cc, opts...)
	if strings.HasSuffix(method, "/Read") {
		n.reads.Add(1)
	}
	return err
}

func (n *netCtl) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if n.cut.Load() {
		return nil, status.Error(codes.Unavailable, "test: streams cut")
	}
	sctx, cancel := context.WithCancel(ctx)
	n.mu.Lock()
	n.cancels = append(n.cancels, cancel)
	n.opened++
	n.mu.Unlock()
	cs, err := streamer(sctx, desc, cc, method, opts...)
	if err != nil {
		cancel()
	}
	return cs, err
}

// cutStreams breaks every open stream and refuses new ones.
func (n *netCtl) cutStreams() {
	n.cut.Store(true)
	n.mu.Lock()
	cs := n.cancels
	n.cancels = nil
	n.mu.Unlock()
	for _, c := range cs {
		c()
	}
}

func (n *netCtl) streamsOpened() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.opened
}

func (n *netCtl) dial() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(n.unary), grpc.WithChainStreamInterceptor(n.stream)}
}

func openCtlClient(t *testing.T, c *testcluster.Cluster, cacheSize int, n *netCtl) *client.Engine {
	t.Helper()
	var seeds []string
	for _, id := range c.IDs() {
		seeds = append(seeds, c.Options(id).PeerAddr)
	}
	e, err := client.Open(client.Config{Servers: seeds, CacheSize: cacheSize, Dial: n.dial(), Logger: testcluster.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

func putTxn(key, value string) *fsm.Txn {
	return &fsm.Txn{Then: []fsm.Op{{Type: fsm.OpPut, Key: key, Value: []byte(value)}}}
}

// oldGroup creates group "again" on the servers with 31 revisions of k =
// "old".
func oldGroup(ctx context.Context, t *testing.T, c *testcluster.Cluster) *dister.Node {
	t.Helper()
	srv := c.Node(1)
	if err := srv.CreateGroup(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	for range 31 {
		if _, err := srv.Group("again").KV().Put(ctx, "k", []byte("old")); err != nil {
			t.Fatal(err)
		}
	}
	return srv
}

// recreate deletes "again" and creates it again with k = "new".
func recreate(ctx context.Context, t *testing.T, srv *dister.Node) int64 {
	t.Helper()
	if err := srv.DeleteGroup(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	if err := srv.CreateGroup(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	rev, err := srv.Group("again").KV().Put(ctx, "k", []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A client's cache feed whose stream breaks while its group is deleted and
// created again resumed, by name, on the NEW group at the old group's next
// revision (a watch from the future is accepted), and the cache kept the
// old group's entries, trusted: a linearizable Get answered the deleted
// group's value from the cache. A resumed stream now checks that its group
// is the one it followed; the feed ends and the cache with it.
func TestFeedResumesIntoRecreatedGroup(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := oldGroup(ctx, t, c)
	n := newNetCtl()
	e := openCtlClient(t, c, 100, n)
	waitFor(t, "a cache hit on the old group", func() bool {
		var hit bool
		r, err := e.Get(ctx, "again", "k", core.ReadOpts{CacheHit: &hit})
		if err != nil || string(r.KV.Value) != "old" {
			t.Fatalf("old group: %v, %v", r, err)
		}
		return hit
	})
	// The client does not run a discovery round that sees the new group
	// before the feed resumed (it runs one a second).
	n.freeze.Store(true)
	n.cutStreams()
	newRev := recreate(ctx, t, srv)
	before := n.streamsOpened()
	n.cut.Store(false)
	waitFor(t, "the feed to resume", func() bool { return n.streamsOpened() > before })
	time.Sleep(200 * time.Millisecond)
	for _, o := range []struct {
		name string
		o    core.Consistency
	}{{"linearizable", core.Linearizable}, {"session", core.Session}} {
		var hit bool
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := e.Get(rctx, "again", "k", core.ReadOpts{Consistency: o.o, CacheHit: &hit})
		rcancel()
		if err != nil || !r.Found || string(r.KV.Value) != "new" {
			var v string
			if r != nil && r.Found {
				v = string(r.KV.Value)
			}
			t.Errorf("%s get after the group was created again (new k at %d): %q, %v (revision %v, cache hit %v); want \"new\"",
				o.name, newRev, v, err, revOf(r), hit)
		}
	}
}

func partitionPause() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("DISTER_TEST_PARTITION_PAUSE")); err == nil {
		return d
	}
	return 300 * time.Millisecond
}

func revOf(r *fsm.GetResult) int64 {
	if r == nil {
		return -1
	}
	return r.Revision
}

// A write the client sent to the old group, answered after the client's
// discovery round replaced the group, raises the NEW group's session floor
// to the old group's revision (propose looks the group up by name after the
// write): every session read of the new group was ErrInvalid, as the
// discovery round the client runs on ErrInvalid finds the same group. The
// client now lowers such a floor to the group's committed revision.
func TestLateWriteAnswerPoisonsNewGroupFloor(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := oldGroup(ctx, t, c)
	n := newNetCtl()
	e := openCtlClient(t, c, 0, n)
	if _, err := e.Get(ctx, "again", "k", core.ReadOpts{}); err != nil {
		t.Fatal(err)
	}
	n.holdWrite.Store(true)
	type res struct {
		r   *fsm.TxnResult
		err error
	}
	done := make(chan res, 1)
	go func() {
		r, err := e.Txn(ctx, "again", putTxn("late", "x"))
		done <- res{r, err}
	}()
	select {
	case <-n.applied:
	case <-ctx.Done():
		t.Fatal("write not sent")
	}
	n.holdWrite.Store(false)
	newRev := recreate(ctx, t, srv)
	// The client learns of the new group (a discovery round).
	if _, err := e.Leader(ctx, "again"); err != nil {
		t.Fatal(err)
	}
	close(n.release)
	w := <-done
	if w.err != nil {
		t.Fatalf("late write: %v", w.err)
	}
	t.Logf("late write to the old group at revision %d; new group wrote k at %d", w.r.Revision, newRev)
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	r, err := e.Get(rctx, "again", "k", core.ReadOpts{Consistency: core.Session})
	if err != nil || string(r.KV.Value) != "new" {
		t.Errorf("session get of the new group: %v, %v; want \"new\"", r, err)
		// It lasts: later discovery rounds find the same group.
		time.Sleep(2500 * time.Millisecond)
		_, err := e.Get(rctx, "again", "k", core.ReadOpts{Consistency: core.Session})
		_, _, ierr := e.Instances(rctx, "again", "", core.ReadOpts{Consistency: core.Session})
		t.Errorf("2.5s later, session get: %v; instances: %v", err, ierr)
	}
}

// oldFloorClient has a client read the old group (raising its floor to
// 31), then recreates the group while the client's view of the cluster
// stays the old one.
func oldFloorClient(ctx context.Context, t *testing.T) (*client.Engine, *netCtl) {
	t.Helper()
	c := testcluster.New(t, 3)
	srv := oldGroup(ctx, t, c)
	n := newNetCtl()
	e := openCtlClient(t, c, 0, n)
	if _, err := e.Get(ctx, "again", "k", core.ReadOpts{}); err != nil {
		t.Fatal(err)
	}
	n.freeze.Store(true)
	recreate(ctx, t, srv)
	return e, n
}

// Close while the client runs the discovery round that follows a server's
// ErrInvalid: the read answers ErrClosed (it answered the server's
// ErrInvalid, about a floor the caller never asked for).
func TestCloseDuringFloorRediscoverIsNotClosed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, n := oldFloorClient(ctx, t)
	n.hangTopo.Store(true)
	answered := n.reads.Load()
	errc := make(chan error, 1)
	go func() {
		_, err := e.Get(ctx, "again", "k", core.ReadOpts{Consistency: core.Session})
		errc <- err
	}()
	// The server refuses the floor (after 250 ms); the discovery round
	// that follows hangs.
	waitFor(t, "the server's answer to the read", func() bool { return n.reads.Load() > answered })
	_ = e.Close()
	err := <-errc
	if !errors.Is(err, errs.Closed) {
		t.Fatalf("session get closed mid-read: %v; want ErrClosed", err)
	}
}

// The caller's deadline passes while the client runs that discovery round:
// the read answers the deadline (it answered ErrInvalid).
func TestDeadlineDuringFloorRediscover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e, n := oldFloorClient(ctx, t)
	n.hangTopo.Store(true)
	rctx, rcancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer rcancel()
	_, err := e.Get(rctx, "again", "k", core.ReadOpts{Consistency: core.Session})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("session get whose deadline passed: %v; want context.DeadlineExceeded", err)
	}
}

// The same without forcing the client's view of the cluster: the client
// loses every server for a moment (all its calls fail) while the group is
// deleted and created again, then gets them back. Its feed and its
// discovery rounds race; when the feed resumed first, the cache served the
// deleted group's value.
func TestFeedResumesIntoRecreatedGroupAfterPartition(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := c.Node(1)
	stale := 0
	const tries = 6
	for try := range tries {
		if err := srv.CreateGroup(ctx, "again"); err != nil {
			t.Fatal(err)
		}
		for range 31 {
			if _, err := srv.Group("again").KV().Put(ctx, "k", []byte("old")); err != nil {
				t.Fatal(err)
			}
		}
		n := newNetCtl()
		e := openCtlClient(t, c, 100, n)
		waitFor(t, "a cache hit on the old group", func() bool {
			var hit bool
			r, err := e.Get(ctx, "again", "k", core.ReadOpts{CacheHit: &hit})
			if err != nil || string(r.KV.Value) != "old" {
				t.Fatalf("old group: %v, %v", r, err)
			}
			return hit
		})
		n.partition.Store(true)
		n.cutStreams()
		recreate(ctx, t, srv)
		n.partition.Store(false)
		n.cut.Store(false)
		time.Sleep(partitionPause())
		var hit bool
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		r, err := e.Get(rctx, "again", "k", core.ReadOpts{Consistency: core.Linearizable, CacheHit: &hit})
		rcancel()
		if err == nil && r.Found && string(r.KV.Value) == "old" {
			stale++
			t.Logf("try %d: linearizable get answered the deleted group's value (revision %d, cache hit %v)", try, r.Revision, hit)
		} else if err != nil {
			t.Logf("try %d: %v", try, err)
		}
		_ = e.Close()
		if err := srv.DeleteGroup(ctx, "again"); err != nil {
			t.Fatal(err)
		}
	}
	if stale > 0 {
		t.Fatalf("%d of %d tries: a linearizable get after the group was created again answered the old group's value", stale, tries)
	}
}

// An app's watch of the group, whose stream breaks while the group is
// deleted and created again, resumed on the NEW group at the old group's
// next revision: it never heard of the deletion, skipped the new group's
// first revisions and went on with its later ones as if they followed the
// old group's. It must end with ErrGroupNotFound.
func TestWatchResumesIntoRecreatedGroup(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv := oldGroup(ctx, t, c)
	n := newNetCtl()
	e := openCtlClient(t, c, 0, n)
	var mu sync.Mutex
	var got []core.WatchBatch
	ended := make(chan error, 1)
	err := e.Watch(ctx, core.WatchRequest{Group: "again",
		Send: func(b core.WatchBatch, _ <-chan struct{}) bool {
			mu.Lock()
			got = append(got, b)
			mu.Unlock()
			return true
		},
		TryPush: func(b core.WatchBatch) bool {
			mu.Lock()
			got = append(got, b)
			mu.Unlock()
			return true
		},
		End: func(err error, _ int64) { ended <- err }})
	if err != nil {
		t.Fatal(err)
	}
	n.partition.Store(true)
	n.cutStreams()
	recreate(ctx, t, srv)
	n.partition.Store(false)
	n.cut.Store(false)
	for range 40 {
		if _, err := srv.Group("again").KV().Put(ctx, "k", []byte("new")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-ended:
		t.Logf("watch ended: %v", err)
		if !errors.Is(err, errs.GroupNotFound) {
			t.Errorf("watch ended with %v; want ErrGroupNotFound", err)
		}
	case <-time.After(3 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		var revs []int64
		for _, b := range got {
			if len(b.Events) > 0 {
				revs = append(revs, b.Revision)
			}
		}
		t.Errorf("the watch of the deleted group goes on (on the new group): event revisions %v", revs)
	}
}
