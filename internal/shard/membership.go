package shard

import (
	"context"
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

// AddNonVoter adds id as a non-voting member (a learner) of shardID.
func (h *Host) AddNonVoter(ctx context.Context, shardID, id uint64, addr string) error {
	return h.configChange(ctx, shardID, func(t time.Duration) (*dragonboat.RequestState, error) {
		return h.nh.RequestAddNonVoting(shardID, id, addr, 0, t)
	})
}

// AddVoter adds id as a voting member; for a non-voter this promotes it.
func (h *Host) AddVoter(ctx context.Context, shardID, id uint64, addr string) error {
	return h.configChange(ctx, shardID, func(t time.Duration) (*dragonboat.RequestState, error) {
		return h.nh.RequestAddReplica(shardID, id, addr, 0, t)
	})
}

// RemoveMember removes id from shardID; the id can never rejoin it.
func (h *Host) RemoveMember(ctx context.Context, shardID, id uint64) error {
	return h.configChange(ctx, shardID, func(t time.Duration) (*dragonboat.RequestState, error) {
		return h.nh.RequestDeleteReplica(shardID, id, 0, t)
	})
}

func (h *Host) configChange(ctx context.Context, shardID uint64,
	start func(time.Duration) (*dragonboat.RequestState, error)) error {
	_, rs, err := h.attempt(ctx, shardID, start)
	if rs != nil {
		rs.Release()
	}
	return err
}

func closedErr() error { return translate(dragonboat.ErrClosed) }
