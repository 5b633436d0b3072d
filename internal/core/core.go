// Package core holds what both engines behind a dister.Node share: the
// server engine (internal/cluster), which runs Raft replicas, and the
// client engine (internal/client), which runs none and calls servers. The
// root package talks to either through the same methods with these types.
package core

import (
	"context"
	"io"
	"time"

	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/svc"
)

// Consistency is how fresh a read must be.
type Consistency int

const (
	// Session (the default): the read reflects every revision this node
	// wrote or returned before in the group, and MinRevision.
	Session Consistency = iota
	// Linearizable: a ReadIndex round through the leader.
	Linearizable
	// Stale: a replica as it is (MinRevision still waits).
	Stale
)

// ReadOpts are the per-read settings.
type ReadOpts struct {
	Consistency Consistency
	MinRevision int64
	// CacheHit, when set, is told whether a client node answered the read
	// from its cache (servers have none: always false).
	CacheHit *bool
}

// WatchBatch is what a watcher receives at once: the events of one
// revision, or a progress note (no events) saying that every event up to
// Revision was delivered.
type WatchBatch struct {
	Revision int64
	Events   []fsm.Event
}

// WatchRequest describes one watch.
type WatchRequest struct {
	Group  string
	Prefix string
	From   int64 // first revision wanted; 0 = from the next one
	// Send delivers one batch in order; it may block, and returns false
	// (stopping the watch) when the consumer is gone or stop is closed.
	Send func(b WatchBatch, stop <-chan struct{}) bool
	// TryPush delivers one whole batch if the consumer has room for it
	// right now, without blocking; false = no room (nothing delivered).
	TryPush func(b WatchBatch) bool
	// End is called once, last, with why the watch ended (never nil) and,
	// for errs.Compacted, the lowest revision a watch can start from.
	End func(err error, compactRevision int64)
}

// Peer is a server's two addresses.
type Peer struct {
	RaftAddr string `json:"raft_addr"`
	PeerAddr string `json:"peer_addr"`
}

// Member is one server as the catalog and the engine see it.
type Member struct {
	ID     uint64
	Peer   Peer
	Leader bool // leads the default group
	Alive  bool // answered a status call just now
	Voter  bool // votes in the system shard and the default group
}

// Settings are the cluster-wide settings, kept in the catalog.
type Settings struct {
	// ScriptChecks lets instances use script and custom checks, which run
	// a command on the group leader. Off by default: whoever can register
	// an instance could otherwise run code on the servers.
	ScriptChecks bool `json:"script_checks"`
}

// GroupState is what a node knows of one group.
type GroupState struct {
	Name     string
	Leader   uint64 // 0 = none known
	Revision int64  // last applied here (a client node: what its cache reached)
	Shard    uint64 // the group's shard (0 on a client node)
}

// LeaseDetail describes a lease.
type LeaseDetail struct {
	TTL  time.Duration
	Keys []string
}

// KeepAliveResult is the outcome of renewing one lease of a batch.
type KeepAliveResult struct {
	TTL time.Duration // the lease's TTL, the time it now has
	Err error         // nil, or an error wrapping errs.LeaseNotFound
}

// MaxKeepAliveBatch bounds the leases of one KeepAliveBatch call.
const MaxKeepAliveBatch = 4096

// Engine is what a dister.Node runs on. Both engines implement it with the
// same meaning: the root package calls nothing else.
type Engine interface {
	NodeID() uint64
	WaitReady(ctx context.Context) error
	Close() error

	// Data of one group.
	Txn(ctx context.Context, group string, t *fsm.Txn) (*fsm.TxnResult, error)
	Get(ctx context.Context, group, key string, o ReadOpts) (*fsm.GetResult, error)
	List(ctx context.Context, group string, q fsm.ListQuery, o ReadOpts) (*fsm.ListResult, error)
	Revision(ctx context.Context, group string, o ReadOpts) (int64, error)
	// Watch starts a watch, or fails to start it with an error (End is not
	// called then); a started watch ends with End.
	Watch(ctx context.Context, req WatchRequest) error
	RequestProgress(ctx context.Context, group string) error

	// Leases of one group. The root package keeps leases alive itself
	// (its keeper), with KeepAliveBatch.
	GrantLease(ctx context.Context, group string, ttl time.Duration) (int64, error)
	RevokeLease(ctx context.Context, group string, id int64) error
	Lease(ctx context.Context, group string, id int64) (LeaseDetail, error)
	KeepAlive(ctx context.Context, group string, id int64) (time.Duration, error)
	// KeepAliveBatch renews up to MaxKeepAliveBatch leases of one group at
	// its leader with one leadership confirmation for them all: one result
	// per id, in order. The error is for the whole batch (no leader, ctx,
	// closed); a lease that does not exist is its own result's Err.
	KeepAliveBatch(ctx context.Context, group string, ids []int64) ([]KeepAliveResult, error)

	// Services of one group (records of internal/svc). Register sets
	// r.Lease to the new lease of a ttl instance; keeping it alive is the
	// caller's business.
	Register(ctx context.Context, group string, r *svc.Record) error
	Deregister(ctx context.Context, group, service, id string) (bool, error)
	Heartbeat(ctx context.Context, group, service, id string) error
	Instances(ctx context.Context, group, service string, o ReadOpts) ([]svc.Stored, int64, error)
	ReplaceServices(ctx context.Context, group string, names []string, recs []*svc.Record) error

	// The cluster.
	CreateGroup(ctx context.Context, name string) error
	DeleteGroup(ctx context.Context, name string) error
	Groups(ctx context.Context) ([]string, error)
	AddServer(ctx context.Context, id uint64, p Peer) (uint64, error)
	RemoveServer(ctx context.Context, id uint64) error
	Members(ctx context.Context) ([]Member, error)
	Settings(ctx context.Context) (Settings, error)
	SetSettings(ctx context.Context, s Settings) error
	Leader(ctx context.Context, group string) (uint64, error)
	// GroupStates is this node's view of its groups, without a network
	// round trip.
	GroupStates() []GroupState
	// Snapshot streams a backup of the whole cluster to w.
	Snapshot(ctx context.Context, w io.Writer) (SnapshotInfo, error)
}

// SnapshotInfo describes a backup of a cluster (a snapshot file).
type SnapshotInfo struct {
	Format  int
	Created time.Time
	Groups  []SnapshotGroup
	// EstimatedBytes is what the writer expected the file to weigh.
	EstimatedBytes int64
	Bytes          int64  // the whole file
	SHA256         string // hex, of everything before it
}

// SnapshotGroup is one group of a backup.
type SnapshotGroup struct {
	Name      string
	Revision  int64 // the group's records are at this revision
	Keys      int64 // client keys
	Instances int64 // service instances
	Leases    int64
	Bytes     int64 // its records' bytes in the file
}
