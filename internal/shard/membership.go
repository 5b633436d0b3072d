package shard

import (
	"context"
	"errors"
	"time"

	"github.com/lni/dragonboat/v4"
)

// Membership is a shard's Raft configuration.
type Membership struct {
	Voters    map[uint64]string // replica id -> Raft address
	NonVoters map[uint64]string
	Removed   map[uint64]struct{}
}

// Membership reads shardID's configuration through Raft (linearizable).
func (h *Host) Membership(ctx context.Context, shardID uint64) (Membership, error) {
	backoff := time.Millisecond
	for {
		if h.closed.Load() {
			return Membership{}, closedErr()
		}
		actx, cancel := context.WithTimeout(ctx, h.attemptTimeout(ctx))
		m, err := h.nh.SyncGetShardMembership(actx, shardID)
		cancel()
		if err == nil {
			return Membership{Voters: m.Nodes, NonVoters: m.NonVotings, Removed: m.Removed}, nil
		}
		if ctx.Err() != nil {
			return Membership{}, ctxError(ctx.Err(), err)
		}
		if !temporary(err) {
			return Membership{}, translate(err)
		}
		if err := pause(ctx, &backoff); err != nil {
			return Membership{}, ctxError(err, dragonboat.ErrShardNotReady)
		}
	}
}

// AddNonVoter adds id as a non-voting member (a learner) of shardID. It
// succeeds if id is a member already.
func (h *Host) AddNonVoter(ctx context.Context, shardID, id uint64, addr string) error {
	return h.configChange(ctx, shardID, func(t time.Duration) (*dragonboat.RequestState, error) {
		return h.nh.RequestAddNonVoting(shardID, id, addr, 0, t)
	}, func(m Membership) bool { return m.has(id) })
}

// AddVoter adds id as a voting member; for a non-voter this promotes it.
func (h *Host) AddVoter(ctx context.Context, shardID, id uint64, addr string) error {
	return h.configChange(ctx, shardID, func(t time.Duration) (*dragonboat.RequestState, error) {
		return h.nh.RequestAddReplica(shardID, id, addr, 0, t)
	}, func(m Membership) bool { _, ok := m.Voters[id]; return ok })
}

// RemoveMember removes id from shardID; the id can never rejoin it.
func (h *Host) RemoveMember(ctx context.Context, shardID, id uint64) error {
	return h.configChange(ctx, shardID, func(t time.Duration) (*dragonboat.RequestState, error) {
		return h.nh.RequestDeleteReplica(shardID, id, 0, t)
	}, func(m Membership) bool { return !m.has(id) })
}

func (m Membership) has(id uint64) bool {
	_, voter := m.Voters[id]
	_, learner := m.NonVoters[id]
	return voter || learner
}

// configChange runs one membership change. A rejected change is checked
// against the membership: done means someone else made it already (two
// servers may reconcile at once); otherwise another change was pending and
// it is tried again.
func (h *Host) configChange(ctx context.Context, shardID uint64,
	start func(time.Duration) (*dragonboat.RequestState, error), done func(Membership) bool) error {
	backoff := time.Millisecond
	for {
		_, rs, err := h.attempt(ctx, shardID, nil, start)
		if rs != nil {
			rs.Release()
		}
		if !errors.Is(err, errRejected) {
			return err
		}
		m, err := h.Membership(ctx, shardID)
		if err != nil {
			return err
		}
		if done(m) {
			return nil
		}
		if err := pause(ctx, &backoff); err != nil {
			return ctxError(err, errRejected)
		}
	}
}

func closedErr() error { return translate(dragonboat.ErrClosed) }
