// Package testcluster runs dister servers in one process for tests and
// benchmarks: free loopback ports, data in t.TempDir(), everything closed
// by t.Cleanup.
package testcluster

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dister/dister"
)

// Cluster is a set of servers bootstrapped together.
type Cluster struct {
	tb    testing.TB
	base  string // every server's DataDir is below it; removed after CloseAll
	mu    sync.Mutex
	nodes map[uint64]*dister.Node
	opts  map[uint64]dister.Options
	tune  func(*dister.Options)
}

// Option adjusts every server's Options before Open.
type Option func(*dister.Options)

// New opens n servers (ids 1..n) bootstrapping one cluster and waits until
// they are ready.
func New(tb testing.TB, n int, opts ...Option) *Cluster {
	tb.Helper()
	return build(tb, n, nil, opts)
}

// Restore opens n servers (ids 1..n) of a new cluster, each seeded first
// from the snapshot in file (dister.Restore), and waits until they are
// ready.
func Restore(tb testing.TB, n int, file string, opts ...Option) *Cluster {
	tb.Helper()
	return build(tb, n, func(o dister.Options) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if _, err := dister.Restore(ctx, file, o); err != nil {
			tb.Fatalf("restore server %d: %v", o.NodeID, err)
		}
	}, opts)
}

func build(tb testing.TB, n int, prepare func(dister.Options), opts []Option) *Cluster {
	tb.Helper()
	// TempDir first: cleanups run last-in first-out, so the servers are
	// closed before their data is removed.
	c := &Cluster{tb: tb, base: tb.TempDir(), nodes: map[uint64]*dister.Node{}, opts: map[uint64]dister.Options{}}
	c.tune = func(o *dister.Options) {
		for _, f := range opts {
			f(o)
		}
	}
	members := map[uint64]dister.Peer{}
	for id := uint64(1); id <= uint64(n); id++ {
		members[id] = dister.Peer{RaftAddr: FreeAddr(tb), PeerAddr: FreeAddr(tb)}
	}
	tb.Cleanup(c.CloseAll)
	for id := uint64(1); id <= uint64(n); id++ {
		o := dister.Options{
			NodeID:         id,
			DataDir:        c.dataDir(),
			RaftAddr:       members[id].RaftAddr,
			PeerAddr:       members[id].PeerAddr,
			InitialMembers: members,
			Logger:         Logger(),
		}
		c.tune(&o)
		if prepare != nil {
			prepare(o)
		}
		c.open(id, o)
	}
	c.WaitReady()
	return c
}

// Logger is what test servers log to: nothing by default (dragonboat warns
// on every election and logs closed connections as errors, which tests
// cause on purpose), or stderr from the level DISTER_TEST_LOG names
// (debug, info, warn, error).
func Logger() *slog.Logger {
	level := slog.LevelError + 4
	if v := os.Getenv("DISTER_TEST_LOG"); v != "" {
		_ = level.UnmarshalText([]byte(v))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func (c *Cluster) open(id uint64, o dister.Options) *dister.Node {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := dister.Open(ctx, o)
	if err != nil {
		c.tb.Fatalf("open server %d: %v", id, err)
	}
	c.mu.Lock()
	c.nodes[n.ID()] = n
	c.opts[n.ID()] = o
	c.mu.Unlock()
	return n
}

// Node returns server id (nil if stopped).
func (c *Cluster) Node(id uint64) *dister.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// IDs lists the running servers' ids.
func (c *Cluster) IDs() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []uint64
	for id := range c.nodes {
		ids = append(ids, id)
	}
	return ids
}

// Options returns the options server id was opened with.
func (c *Cluster) Options(id uint64) dister.Options {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.opts[id]
}

// WaitReady waits until every running server is ready.
func (c *Cluster) WaitReady() {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range c.IDs() {
		if err := c.Node(id).WaitReady(ctx); err != nil {
			c.tb.Fatalf("server %d not ready: %v", id, err)
		}
	}
}

// Leader returns the id of the default group's leader, waiting for one that
// a running server reports.
func (c *Cluster) Leader() uint64 {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		for _, id := range c.IDs() {
			l, err := c.Node(id).Group("default").Leader(ctx)
			if err == nil && l != 0 && c.Node(l) != nil {
				return l
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.tb.Fatalf("no leader among running servers")
	return 0
}

// Stop closes server id, keeping its data for Restart.
func (c *Cluster) Stop(id uint64) {
	c.tb.Helper()
	c.mu.Lock()
	n := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	if n == nil {
		c.tb.Fatalf("server %d is not running", id)
	}
	if err := n.Close(); err != nil {
		c.tb.Errorf("close server %d: %v", id, err)
	}
}

// Restart opens a stopped server again from its DataDir alone.
func (c *Cluster) Restart(id uint64) *dister.Node {
	c.tb.Helper()
	o := c.Options(id)
	o.InitialMembers, o.Join, o.Servers = nil, false, nil
	return c.open(id, o)
}

// RestartWith opens a stopped server again from its DataDir with its
// options changed by tune (kept for later restarts).
func (c *Cluster) RestartWith(id uint64, tune Option) *dister.Node {
	c.tb.Helper()
	o := c.Options(id)
	o.InitialMembers, o.Join, o.Servers = nil, false, nil
	tune(&o)
	return c.open(id, o)
}

// Join opens a new server that joins through the running servers' peer
// addresses with the given id (0 = let the cluster choose).
func (c *Cluster) Join(id uint64) *dister.Node {
	c.tb.Helper()
	var seeds []string
	for _, sid := range c.IDs() {
		seeds = append(seeds, c.Options(sid).PeerAddr)
	}
	o := dister.Options{
		NodeID:   id,
		DataDir:  c.dataDir(),
		RaftAddr: FreeAddr(c.tb),
		PeerAddr: FreeAddr(c.tb),
		Join:     true,
		Servers:  seeds,
		Logger:   Logger(),
	}
	c.tune(&o)
	return c.open(id, o)
}

// Adopt records a server opened by the test itself, so that CloseAll
// closes it.
func (c *Cluster) Adopt(n *dister.Node, o dister.Options) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[n.ID()] = n
	c.opts[n.ID()] = o
}

// CloseAll closes every running server.
func (c *Cluster) CloseAll() {
	c.mu.Lock()
	nodes := c.nodes
	c.nodes = map[uint64]*dister.Node{}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for id, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := n.Close(); err != nil {
				c.tb.Errorf("close server %d: %v", id, err)
			}
		}()
	}
	wg.Wait()
}

// dataDir makes a fresh directory for one server.
func (c *Cluster) dataDir() string {
	c.tb.Helper()
	d, err := os.MkdirTemp(c.base, "server-")
	if err != nil {
		c.tb.Fatal(err)
	}
	return d
}

// DataDir returns a fresh directory below the cluster's, for a server the
// test opens itself and hands to Adopt.
func (c *Cluster) DataDir() string { return c.dataDir() }

// FreeAddr returns a loopback host:port that no other test process of this
// machine holds and that no earlier call in this process returned.
//
// Ports come from 20000-32767, below Linux's ephemeral range (32768-60999):
// a port from there could be taken at any moment by the kernel for the
// local end of an outgoing connection or for another process's ":0"
// listener. Test packages run in parallel processes, so each port is
// claimed with an exclusive lock on a file in the temp dir, held until the
// process exits (the kernel drops it then, also after a crash).
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	addr, err := claimPort()
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	return addr
}

const (
	portLow  = 20000
	portHigh = 32768 // exclusive
)

var (
	portMu    sync.Mutex
	portLocks []*os.File // held open for the life of the process
)

func claimPort() (string, error) {
	dir := filepath.Join(os.TempDir(), "dister-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return "", err
	}
	portMu.Lock()
	defer portMu.Unlock()
	for range 1000 {
		port := portLow + rand.IntN(portHigh-portLow)
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return "", err
		}
		// flock locks belong to the open file, so a second claim of the same
		// port fails in this process as in any other.
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil { // used by something that does not take our locks
			f.Close()
			continue
		}
		ln.Close()
		portLocks = append(portLocks, f)
		return addr, nil
	}
	return "", fmt.Errorf("no free port in %d-%d after 1000 tries", portLow, portHigh-1)
}

// Followers returns the running servers other than the default group's
// leader, sorted by id, and that leader.
func (c *Cluster) Followers() (followers []uint64, leader uint64) {
	c.tb.Helper()
	leader = c.Leader()
	for _, id := range c.IDs() {
		if id != leader {
			followers = append(followers, id)
		}
	}
	slices.Sort(followers)
	return followers, leader
}
