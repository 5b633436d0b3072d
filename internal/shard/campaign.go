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
// is known it makes the local replica campaign, until one campaign took
// effect. Raft skips a campaign while the replica has committed
// configuration entries not yet applied (a new replica's bootstrap
// membership), so the message is sent again every campaignEvery for as
// long as the replica's term has not moved. Once it moved (this replica
// campaigned, or heard of an election) no more: a replica that campaigned
// again after its campaign was refused would do so at a higher term than
// a leader the others elected meanwhile (a TimeoutNow campaign skips
// pre-vote and is let past the followers' leader stickiness), deposing
// it, whereas a first campaign is at most at the term of that leader,
// which keeps it. When the others do not run the group yet, the
// candidate's votes go unanswered and the election timeout decides, as
// without the campaign.
func (h *Host) WaitFirstLeader(ctx context.Context, shardID uint64) error {
	until := time.Now().Add(time.Duration(h.cfg.ElectionRTT) * h.cfg.RTT)
	var base uint64 // the replica's term before any campaign
	for time.Now().Before(until) && ctx.Err() == nil {
		leader, term, known, err := h.nh.GetLeaderID(shardID)
		if err != nil || (known && leader != 0) {
			break
		}
		switch {
		case term == 0:
			// The replica has not published its term yet.
		case base == 0:
			base = term
			fallthrough
		case term == base:
			if !h.Campaign(shardID) {
				return h.WaitLeader(ctx, shardID)
			}
		default:
			return h.WaitLeader(ctx, shardID)
		}
		wctx, cancel := context.WithTimeout(ctx, campaignEvery)
		err = h.WaitLeader(wctx, shardID)
		cancel()
		if err == nil {
			return nil
		}
	}
	return h.WaitLeader(ctx, shardID)
}

// campaignEvery is how long WaitFirstLeader waits before it sends another
// TimeoutNow to a replica that skipped the last one.
const campaignEvery = 10 * time.Millisecond
