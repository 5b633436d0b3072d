package cluster

import (
	"context"
	"time"
)

// Groups go quiet (dragonboat's quiesce, shard.Config.Quiesce) after 10
// election timeouts without a request: no ticks reach Raft and no
// heartbeats are sent, so a thousand idle groups cost almost nothing. The
// price: a quiet group's followers do not notice that its leader's server
// died, and nothing would elect a new leader until a request came. Leases
// would then never expire and no health check would run in that group.
//
// quietWatch closes that gap with one probe per server instead of one
// heartbeat per group: every quietProbeEvery it asks each other server for
// its status over the peer API, and while a server fails quietFailures
// probes in a row, it wakes every group whose leader, as this server knows
// it, is that server. A woken follower ticks again and, hearing no leader,
// elects one. A wrong suspicion costs only a wake-up: the leader answers
// and the group goes quiet again later. The system shard never goes quiet
// (the reconciler needs its leader), so it is not watched here.
const (
	quietProbeEvery = time.Second
	quietProbeLimit = 500 * time.Millisecond
	quietFailures   = 2
)

func (e *Engine) quietWatch() {
	defer close(e.quietDone)
	t := time.NewTicker(quietProbeEvery)
	defer t.Stop()
	failed := map[uint64]int{} // server id -> probes failed in a row
	for {
		select {
		case <-e.life.Done():
			return
		case <-t.C:
		}
		e.mu.Lock()
		servers := make(map[uint64]string, len(e.servers))
		for id, p := range e.servers {
			if id != e.cfg.NodeID {
				servers[id] = p.PeerAddr
			}
		}
		e.mu.Unlock()
		for id := range failed {
			if _, ok := servers[id]; !ok {
				delete(failed, id)
			}
		}
		var down []uint64
		for id, addr := range servers {
			ctx, cancel := context.WithTimeout(e.life, quietProbeLimit)
			st, err := e.peers.Status(ctx, addr)
			cancel()
			if e.life.Err() != nil {
				return
			}
			if err == nil && st.NodeID == id {
				delete(failed, id)
				continue
			}
			failed[id]++
			if failed[id] >= quietFailures {
				down = append(down, id)
			}
		}
		if len(down) > 0 {
			e.wakeLedBy(down)
		}
	}
}

// wakeLedBy wakes the groups whose leader, as this server knows it, is one
// of servers.
func (e *Engine) wakeLedBy(servers []uint64) {
	for _, sid := range e.host.Shards() {
		if sid == SystemShard {
			continue
		}
		leader, _ := e.host.Leader(sid)
		for _, id := range servers {
			if leader == id {
				e.host.Wake(sid)
				break
			}
		}
	}
}
