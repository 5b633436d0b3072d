package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
)

// grantTries bounds the tries of one grant that are refused with
// ErrConflict: an id the group holds (32 random bits: rare), or an id
// drawn for a shard the group is not (a server asked for the shard had
// not caught up with the group's re-creation).
const grantTries = 16

// GrantLease creates a lease in group (a Raft write through the leader,
// with this client's dedup id).
//
// A lease id carries its group's shard, so that a group created again
// under the name never hands out an id of the old one's (a Node's keeper
// renewing the old lease would renew the new one, a revoke of it would end
// the new one). What this client discovered may predate the group
// (created since its last discovery round) or name the old one (created
// again since), so the servers are asked for the shard, the group's leader
// first. The server that takes the grant refuses an id of another shard
// than the group's there (ErrConflict); the next try asks another server
// than the one that answered, and once every server was asked, all of
// them again after a pause.
func (e *Engine) GrantLease(ctx context.Context, group string, ttl time.Duration) (int64, error) {
	name := groupName(group)
	answered := map[string]bool{} // servers whose shard was refused
	pause := 10 * time.Millisecond
	var last error
	for try := 1; try <= grantTries; try++ {
		shard, from, err := e.groupShard(ctx, name, answered)
		if err != nil {
			return 0, err
		}
		if from == "" && len(answered) > 0 {
			// The servers not asked yet do not list the group (yet):
			// ask them all again, after a pause.
			clear(answered)
			if err := e.pause(ctx, &pause, last); err != nil {
				return 0, err
			}
			continue
		}
		r, err := e.proposeLease(ctx, group, &fsm.Command{Kind: fsm.KindLeaseGrant,
			Grant: &fsm.LeaseGrant{ID: fsm.LeaseIDFor(shard), TTL: ttl.Milliseconds()}})
		if err == nil {
			return r.ID, nil
		}
		if !errors.Is(err, errs.Conflict) || from == "" {
			return 0, err // from "": an index id, not drawn for a shard
		}
		last = err
		answered[from] = true
		if _, more := e.leaderAddr(name, answered); !more {
			clear(answered)
			if err := e.pause(ctx, &pause, last); err != nil {
				return 0, err
			}
		}
	}
	return 0, last
}

// pause waits *d (doubled for the next time, up to 200 ms) unless ctx
// ends or the engine closes first.
func (e *Engine) pause(ctx context.Context, d *time.Duration, last error) error {
	select {
	case <-ctx.Done():
		return ctxError(ctx.Err(), last)
	case <-e.life.Done():
		return errs.Closed
	case <-time.After(*d):
	}
	*d = min(2**d, 200*time.Millisecond)
	return nil
}

// groupShard is group's shard as the first server not in skip that lists
// the group reports it, asking its leader (as far as this client knows it)
// first, and that server: a server whose catalog has not applied the
// group's creation yet lists no group of the name, or the old one's. 0
// when the group is listed without a shard (servers of a release that did
// not report shards: the entry's index decides the id, as it did there) or
// when no server answering lists it (no such group: the grant then
// fails).
func (e *Engine) groupShard(ctx context.Context, group string, skip map[string]bool) (uint64, string, error) {
	asked := maps.Clone(skip)
	for {
		addr, ok := e.leaderAddr(group, asked)
		if !ok {
			return 0, "", nil
		}
		asked[addr] = true
		var t peer.Topology
		if err := e.peers.Call(ctx, addr, peer.OpTopology, nil, &t); err != nil {
			if e.closed.Load() {
				return 0, "", errs.Closed
			}
			if ctx.Err() != nil {
				return 0, "", ctxError(ctx.Err(), err)
			}
			continue // the grant's own call will meet this server's trouble
		}
		if shard, listed := t.ShardOf(group); listed {
			return shard, addr, nil
		}
	}
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

// KeepAliveBatch renews up to core.MaxKeepAliveBatch leases of one group
// with one call to its leader (the servers' keepalive.batch op): one result
// per id, in order; a lease that does not exist has ErrLeaseNotFound.
func (e *Engine) KeepAliveBatch(ctx context.Context, group string, ids []int64) ([]core.KeepAliveResult, error) {
	if len(ids) > core.MaxKeepAliveBatch {
		return nil, fmt.Errorf("%d leases in one keepalive batch, more than %d: %w", len(ids), core.MaxKeepAliveBatch, errs.TooLarge)
	}
	group = groupName(group)
	var resp peer.KeepAliveBatchResponse
	err := e.retry(ctx, func(skip map[string]bool) (string, bool) { return e.leaderAddr(group, skip) },
		func(addr string) error {
			var err error
			resp, err = e.peers.KeepAlives(ctx, addr, peer.KeepAliveBatchRequest{Group: group, Leases: ids})
			if err == nil && len(resp.TTLMillis) != len(ids) {
				return fmt.Errorf("peer %s: keepalive batch: %d answers for %d leases: %w", addr, len(resp.TTLMillis), len(ids), peer.ErrUnreachable)
			}
			return err
		})
	if err != nil {
		return nil, err
	}
	out := make([]core.KeepAliveResult, len(ids))
	for i, ms := range resp.TTLMillis {
		if ms == 0 {
			out[i].Err = fmt.Errorf("lease %d: %w", ids[i], errs.LeaseNotFound)
		} else {
			out[i].TTL = time.Duration(ms) * time.Millisecond
		}
	}
	return out, nil
}
