package client

import (
	"context"
	"errors"
	"time"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
)

// GrantLease creates a lease in group (a Raft write through the leader,
// with this client's dedup id).
func (e *Engine) GrantLease(ctx context.Context, group string, ttl time.Duration) (int64, error) {
	r, err := e.proposeLease(ctx, group, &fsm.Command{Kind: fsm.KindLeaseGrant,
		Grant: &fsm.LeaseGrant{TTL: ttl.Milliseconds()}})
	if err != nil {
		return 0, err
	}
	return r.ID, nil
}

// RevokeLease ends a lease and deletes its keys.
func (e *Engine) RevokeLease(ctx context.Context, group string, id int64) error {
	_, err := e.proposeLease(ctx, group, &fsm.Command{Kind: fsm.KindLeaseRevoke,
		Revoke: &fsm.LeaseRevoke{IDs: []int64{id}}})
	return err
}

// Lease describes a lease (linearizable, on any server).
func (e *Engine) Lease(ctx context.Context, group string, id int64) (core.LeaseDetail, error) {
	group = groupName(group)
	var d peer.LeaseDetail
	err := e.call(ctx, group, peer.OpLeaseGet, peer.KeepAliveRequest{Group: group, Lease: id}, &d)
	return core.LeaseDetail{TTL: d.TTL, Keys: d.Keys}, err
}

// KeepAlive renews a lease at its group's leader.
func (e *Engine) KeepAlive(ctx context.Context, group string, id int64) (time.Duration, error) {
	group = groupName(group)
	var resp peer.KeepAliveResponse
	err := e.retry(ctx, func(skip map[string]bool) (string, bool) { return e.leaderAddr(group, skip) },
		func(addr string) error {
			return e.peers.Call(ctx, addr, peer.OpKeepAlive, peer.KeepAliveRequest{Group: group, Lease: id}, &resp)
		})
	if err != nil {
		return 0, err
	}
	return time.Duration(resp.TTLMillis) * time.Millisecond, nil
}

// keepAlives renews leases of group, each at its leader: the TTL or error
// of each. (A batched peer op comes with the core.Engine's KeepAliveBatch;
// until then one call per lease.)
func (e *Engine) keepAlives(ctx context.Context, group string, ids []int64) ([]time.Duration, []error, error) {
	ttls := make([]time.Duration, len(ids))
	fails := make([]error, len(ids))
	for i, id := range ids {
		ttls[i], fails[i] = e.KeepAlive(ctx, group, id)
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
	}
	return ttls, fails, nil
}

// KeepAliveBatch renews leases of one group. For now one keepalive per
// lease (the servers' keepalive.batch op is not used yet).
func (e *Engine) KeepAliveBatch(ctx context.Context, group string, ids []int64) ([]core.KeepAliveResult, error) {
	out := make([]core.KeepAliveResult, len(ids))
	for i, id := range ids {
		ttl, err := e.KeepAlive(ctx, group, id)
		if err != nil && !errors.Is(err, errs.LeaseNotFound) {
			return nil, err
		}
		out[i] = core.KeepAliveResult{TTL: ttl, Err: err}
	}
	return out, nil
}
