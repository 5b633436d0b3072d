package shard

import (
	"context"
	"time"

	"github.com/lni/dragonboat/v4/raftio"
	pb "github.com/lni/dragonboat/v4/raftpb"
)

// A new group's first election. Raft starts one only when a replica's
// election timeout (ElectionRTT to twice that, 200-400 ms by default)
// passes without a leader, and dragonboat has no call to start one
// sooner. A leader hands its leadership over by sending the target a
// TimeoutNow message, which makes a follower campaign at once ("nothing
// different from the clock moving forward quickly", the Raft thesis);
// dister hands the local replica of a group it just created the same
// message through its own transport. When to campaign never touches
// Raft's safety (votes and terms decide); the message only saves the wait.

// Campaign makes the local replica of shardID, if it is a follower, start
// an election now. It reports false when it could not (the host runs
// dragonboat's own transport).
func (h *Host) Campaign(shardID uint64) bool {
	t := h.transport.Load()
	if t == nil || h.closed.Load() || !h.Running(shardID) {
		return false
	}
	// From is the replica itself: the message is local, and its term 0
	// passes the term check of any term.
	t.onBatch(pb.MessageBatch{
		BinVer:       raftio.TransportBinVersion,
		DeploymentId: t.nhc.GetDeploymentID(),
		Requests: []pb.Message{{Type: pb.TimeoutNow, ShardID: shardID,
			To: h.cfg.NodeID, From: h.cfg.NodeID}},
	})
	return true
}

// WaitFirstLeader is WaitLeader for a group just created: while no leader
// is known it makes the local replica campaign, every campaignEvery,
// until the election timeout would have started one anyway (the other
// replicas may not run yet: a vote they miss is asked again). Each
// campaign that fails costs a term.
func (h *Host) WaitFirstLeader(ctx context.Context, shardID uint64) error {
	every := campaignEvery
	until := time.Now().Add(time.Duration(h.cfg.ElectionRTT) * h.cfg.RTT)
	for time.Now().Before(until) {
		if _, ok := h.Leader(shardID); ok || !h.Campaign(shardID) {
			break
		}
		wctx, cancel := context.WithTimeout(ctx, every)
		err := h.WaitLeader(wctx, shardID)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
	}
	return h.WaitLeader(ctx, shardID)
}

// campaignEvery spaces the campaigns of WaitFirstLeader: a round of votes
// with its log writes fits in it, and a replica that was not running at
// one campaign (the others start theirs when they apply the group's
// catalog entry) is asked again soon.
const campaignEvery = 10 * time.Millisecond
