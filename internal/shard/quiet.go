package shard

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// dragonboat tells whether a replica is quiet (quiesced, see
// Config.Quiesce) only in its log: "[SHARD:REPLICA] entered quiesce" and
// "... exited from quiesce ...". The log adapter feeds those lines here.
// Like the logger, this is process-wide; it is keyed by shard and replica
// id, and StartShard and StopShard reset a replica's entry. dragonboat
// prints both ids modulo 100,000, so larger ids are never reported quiet.
var quietReplicas sync.Map // [2]uint64{shardID, replicaID} -> true while quiet

// noteQuiesce records a quiesce change if format is one of dragonboat's
// quiesce messages.
func noteQuiesce(format string, args []any) {
	var quiet bool
	switch {
	case strings.HasPrefix(format, "%s entered quiesce"):
		quiet = true
	case strings.HasPrefix(format, "%s exited from quiesce"):
	default:
		return
	}
	if len(args) == 0 {
		return
	}
	var shardID, replicaID uint64
	if _, err := fmt.Sscanf(fmt.Sprint(args[0]), "[%d:%d]", &shardID, &replicaID); err != nil {
		return
	}
	key := [2]uint64{shardID, replicaID}
	if quiet {
		quietReplicas.Store(key, true)
	} else {
		quietReplicas.Delete(key)
	}
}

func forgetQuiet(shardID, replicaID uint64) {
	quietReplicas.Delete([2]uint64{shardID, replicaID})
}

// idleLongEnoughToBeQuiet records a request to shardID on this host and
// tells whether the shard may have gone quiet since the previous one (or
// none came yet): no request here for half of dragonboat's quiesce
// threshold (10 election timeouts). Other servers' requests may have kept
// it awake; then a Wake costs one ReadIndex. The log-fed Quiet cannot
// serve here: in a process with several hosts of the same ids (tests) it
// may answer for another one.
func (h *Host) idleLongEnoughToBeQuiet(shardID uint64) bool {
	if !h.quiet(shardID) {
		return false
	}
	v, ok := h.lastRequest.Load(shardID)
	if !ok {
		v, _ = h.lastRequest.LoadOrStore(shardID, new(atomic.Int64))
	}
	now := time.Now().UnixNano()
	prev := v.(*atomic.Int64).Swap(now)
	threshold := 5 * int64(h.cfg.ElectionRTT) * int64(h.cfg.RTT)
	return prev == 0 || now-prev > threshold
}

// Quiet reports whether this host's replica of shardID is quiet: idle long
// enough that it neither ticks Raft nor exchanges heartbeats. It is read
// from dragonboat's log, which names a replica by its shard and replica ids
// only: in a process running several hosts with the same ids (tests), the
// answer may be another host's.
func (h *Host) Quiet(shardID uint64) bool {
	if shardID >= 100000 || h.cfg.NodeID >= 100000 {
		return false
	}
	_, ok := quietReplicas.Load([2]uint64{shardID, h.cfg.NodeID})
	return ok && h.Running(shardID)
}
