package dister

import (
	"context"
	"fmt"
	"time"

	"github.com/dister/dister/internal/errs"
)

// Lease limits.
const (
	MinLeaseTTL = time.Second // shorter would expire on an ordinary election
	MaxLeaseTTL = 24 * time.Hour * 365
)

// Leases grants and renews leases of one group. Keys written WithLease are
// deleted (with watch events) when their lease expires or is revoked.
//
// Expiry rule: the group's leader alone decides expiry and commits it
// through Raft; keepalives go to the leader and are not Raft writes. When
// the leader changes, the new leader restarts every lease's countdown at
// its full TTL (etcd's rule: a leader change never expires a lease early),
// or at the remaining TTL that the leader checkpoints through Raft every
// few minutes, so that under constant leader churn a lease without
// keepalives still expires.
type Leases struct {
	n     *Node
	group string
}

// Leases of group "default".
func (n *Node) Leases() *Leases { return n.def.Leases() }

// Leases of the group.
func (g *Group) Leases() *Leases { return &Leases{n: g.n, group: g.name} }

// LeaseOption tunes Grant.
type LeaseOption func(*leaseOptions)

type leaseOptions struct{ autoRenew bool }

// AutoRenew makes this Node keep the lease alive (every third of its TTL,
// batched with its other leases of the group) until Revoke or Close: keys
// tied to a process vanish soon after the process dies. A lease found
// expired (e.g. after a partition longer than its TTL) is not renewed
// again: its keys are gone.
func AutoRenew() LeaseOption { return func(o *leaseOptions) { o.autoRenew = true } }

func checkTTL(ttl time.Duration) error {
	if ttl < MinLeaseTTL || ttl > MaxLeaseTTL {
		return fmt.Errorf("TTL %v outside %v..%v: %w", ttl, MinLeaseTTL, MaxLeaseTTL, errs.Invalid)
	}
	return nil
}

// Grant creates a lease that expires ttl after its last keepalive.
func (l *Leases) Grant(ctx context.Context, ttl time.Duration, opts ...LeaseOption) (LeaseID, error) {
	ctx, cancel := l.n.bound(ctx)
	defer cancel()
	var o leaseOptions
	for _, f := range opts {
		f(&o)
	}
	if err := checkTTL(ttl); err != nil {
		return 0, fmt.Errorf("grant lease: %w", err)
	}
	id, err := l.n.e.GrantLease(ctx, l.group, ttl)
	if err != nil {
		return 0, fmt.Errorf("grant lease: %w", err)
	}
	if o.autoRenew {
		l.n.keep.add(l.group, id, ttl, nil)
	}
	return LeaseID(id), nil
}

// KeepAlive restarts the lease's countdown at its full TTL.
// ErrLeaseNotFound if it expired or was revoked.
func (l *Leases) KeepAlive(ctx context.Context, id LeaseID) error {
	_, err := l.Renew(ctx, id)
	return err
}

// Renew is KeepAlive that also returns the lease's TTL.
func (l *Leases) Renew(ctx context.Context, id LeaseID) (time.Duration, error) {
	ctx, cancel := l.n.bound(ctx)
	defer cancel()
	ttl, err := l.n.e.KeepAlive(ctx, l.group, int64(id))
	if err != nil {
		return 0, fmt.Errorf("keepalive lease %d: %w", id, err)
	}
	return ttl, nil
}

// Revoke ends the lease now and deletes its keys.
func (l *Leases) Revoke(ctx context.Context, id LeaseID) error {
	ctx, cancel := l.n.bound(ctx)
	defer cancel()
	l.n.keep.remove(l.group, int64(id))
	if err := l.n.e.RevokeLease(ctx, l.group, int64(id)); err != nil {
		return fmt.Errorf("revoke lease %d: %w", id, err)
	}
	return nil
}

// LeaseInfo describes a lease.
type LeaseInfo struct {
	ID   LeaseID
	TTL  time.Duration
	Keys []string
}

// Get describes a lease; ErrLeaseNotFound if it does not exist.
func (l *Leases) Get(ctx context.Context, id LeaseID) (*LeaseInfo, error) {
	ctx, cancel := l.n.bound(ctx)
	defer cancel()
	li, err := l.n.e.Lease(ctx, l.group, int64(id))
	if err != nil {
		return nil, fmt.Errorf("lease %d: %w", id, err)
	}
	return &LeaseInfo{ID: id, TTL: li.TTL, Keys: li.Keys}, nil
}
