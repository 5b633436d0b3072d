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

// renewTick is how often the renewal loop looks for leases due.
const renewTick = 200 * time.Millisecond

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

type renewal struct {
	group string
	id    int64
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

// AutoRenew keeps a lease alive from this client until StopRenew or Close.
func (e *Engine) AutoRenew(group string, id int64, ttl time.Duration) {
	e.renewMu.Lock()
	defer e.renewMu.Unlock()
	e.renewals[renewal{groupName(group), id}] = ttl
}

// StopRenew ends AutoRenew for a lease.
func (e *Engine) StopRenew(group string, id int64) {
	e.renewMu.Lock()
	defer e.renewMu.Unlock()
	delete(e.renewals, renewal{groupName(group), id})
}

// renewLoop renews the AutoRenew leases every third of their TTL, those
// of one group in one call to its leader.
func (e *Engine) renewLoop() {
	next := map[renewal]time.Time{}
	t := time.NewTicker(renewTick)
	defer t.Stop()
	for {
		select {
		case <-e.life.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		due := map[string][]int64{}
		ttls := map[renewal]time.Duration{}
		e.renewMu.Lock()
		for r, ttl := range e.renewals {
			if at, ok := next[r]; !ok || now.After(at) {
				due[r.group] = append(due[r.group], r.id)
				ttls[r] = ttl
			}
		}
		for r := range next {
			if _, ok := e.renewals[r]; !ok {
				delete(next, r)
			}
		}
		e.renewMu.Unlock()
		for group, ids := range due {
			shortest := time.Duration(1<<63 - 1)
			for _, id := range ids {
				shortest = min(shortest, ttls[renewal{group, id}])
			}
			// Half the TTL: a slow leader (an election, a loaded machine)
			// still gets the renewal in before the lease runs out.
			ctx, cancel := context.WithTimeout(e.life, max(shortest/2, renewTick))
			_, errs2, err := e.keepAlives(ctx, group, ids)
			cancel()
			if err != nil {
				e.log.Debug("lease renewals failed", "group", group, "leases", len(ids), "err", err)
				continue // every lease of the group again at the next tick
			}
			for i, id := range ids {
				r := renewal{group, id}
				if errs2[i] != nil {
					e.log.Debug("lease renewal failed", "group", group, "lease", id, "err", errs2[i])
				}
				switch err := errs2[i]; {
				case err == nil:
					next[r] = time.Now().Add(ttls[r] / 3)
				case errors.Is(err, errs.LeaseNotFound), errors.Is(err, errs.GroupNotFound):
					e.log.Debug("lease renewal stops", "group", group, "lease", id, "err", err)
					e.StopRenew(group, id)
					delete(next, r)
				}
			}
		}
	}
}
