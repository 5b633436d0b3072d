package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
)

// Member is one server as the catalog and the engine see it.
type Member = core.Member

// ValidAddr checks a host:port address.
func ValidAddr(what, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("%s %q: want host:port: %w", what, addr, errs.Invalid)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return fmt.Errorf("%s %q: bad port: %w", what, addr, errs.Invalid)
	}
	_ = host // empty host = all interfaces, allowed for listeners
	return nil
}

// AddServer records a server in the catalog (id 0 = the next free id) and
// adds it to the system shard as a non-voter; the reconciler adds it to
// every group and promotes it once it has caught up. Adding a server with a
// Raft address the catalog already has returns that server's id, so a
// joining server may retry.
func (e *Engine) AddServer(ctx context.Context, id uint64, p Peer) (uint64, error) {
	if err := ValidAddr("raft address", p.RaftAddr); err != nil {
		return 0, err
	}
	if err := ValidAddr("peer address", p.PeerAddr); err != nil {
		return 0, err
	}
	for {
		cat, err := e.readCatalog(ctx, Linearizable)
		if err != nil {
			return 0, err
		}
		if known, ok := cat.byRaftAddr(p.RaftAddr); ok {
			if id != 0 && id != known {
				return 0, fmt.Errorf("raft address %s belongs to server %d: %w", p.RaftAddr, known, errs.Conflict)
			}
			if _, leaving := cat.leaving[known]; leaving {
				return 0, fmt.Errorf("server %d (raft address %s) is being removed: %w", known, p.RaftAddr, errs.Conflict)
			}
			id = known
			break
		}
		if _, ok := cat.servers[id]; ok && id != 0 {
			return 0, fmt.Errorf("server id %d is taken: %w", id, errs.Conflict)
		}
		if id > MaxServerID {
			return 0, fmt.Errorf("server id %d is above %d: %w", id, uint64(MaxServerID), errs.Invalid)
		}
		// One address, one server (etcd refuses a peer URL twice too): a
		// record with another's peer address looked alive through it.
		for other, q := range cat.servers {
			for _, a := range []string{p.RaftAddr, p.PeerAddr} {
				if a == q.RaftAddr || a == q.PeerAddr {
					return 0, fmt.Errorf("address %s belongs to server %d: %w", a, other, errs.Conflict)
				}
			}
		}
		if _, ok := cat.removed[id]; ok {
			return 0, fmt.Errorf("server id %d was removed and cannot be reused: %w", id, errs.Conflict)
		}
		m, err := e.host.Membership(ctx, SystemShard)
		if err != nil {
			return 0, err
		}
		if _, ok := m.Removed[id]; ok && id != 0 {
			return 0, fmt.Errorf("server id %d was removed and cannot be reused: %w", id, errs.Conflict)
		}
		next, nextRev, err := e.counter(ctx, keyNextServer, 1)
		if err != nil {
			return 0, err
		}
		for _, ids := range []map[uint64]string{m.Voters, m.NonVoters} {
			for sid := range ids {
				next = max(next, after(sid))
			}
		}
		for sid := range m.Removed {
			next = max(next, after(sid))
		}
		for sid := range cat.servers {
			next = max(next, after(sid))
		}
		newID := id
		if newID == 0 {
			if next > MaxServerID {
				// Ids are never reused; past the top there is no next one
				// (it wrapped to a taken id and the txn failed for ever).
				return 0, fmt.Errorf("no free server id: the next would be above %d: %w", uint64(MaxServerID), errs.Invalid)
			}
			newID = next
		}
		val, _ := json.Marshal(p)
		res, err := e.txn(ctx, SystemShard, &fsm.Txn{
			Compares: []fsm.Compare{
				{Key: serverKey(newID), Target: fsm.TargetCreateRevision, Op: fsm.OpEqual, Int: 0},
				{Key: removedKey(newID), Target: fsm.TargetCreateRevision, Op: fsm.OpEqual, Int: 0},
				{Key: keyNextServer, Target: fsm.TargetModRevision, Op: fsm.OpEqual, Int: nextRev},
			},
			Then: []fsm.Op{
				{Type: fsm.OpPut, Key: serverKey(newID), Value: val},
				{Type: fsm.OpPut, Key: keyNextServer, Value: []byte(strconv.FormatUint(max(next, newID+1), 10))},
			},
		})
		if err != nil {
			return 0, err
		}
		if res.Succeeded {
			id = newID
			break
		}
	}
	m, err := e.host.Membership(ctx, SystemShard)
	if err != nil {
		return 0, err
	}
	if _, ok := m.Voters[id]; !ok {
		if _, ok := m.NonVoters[id]; !ok {
			if err := e.host.AddNonVoter(ctx, SystemShard, id, p.RaftAddr); err != nil {
				return 0, err
			}
		}
	}
	e.kick()
	return id, nil
}

// MaxServerID bounds server ids, so the next id never wraps around.
const MaxServerID = 1 << 62

// after is the id after sid, saturated above MaxServerID.
func after(sid uint64) uint64 {
	if sid >= MaxServerID {
		return MaxServerID + 1
	}
	return sid + 1
}

func (c *catalog) byRaftAddr(addr string) (uint64, bool) {
	for id, p := range c.servers {
		if p.RaftAddr == addr {
			return id, true
		}
	}
	return 0, false
}

// Members lists the servers of the catalog with liveness: this server is
// alive, the others are if their peer RPC answers within a short time.
func (e *Engine) Members(ctx context.Context) ([]Member, error) {
	cat, err := e.readCatalog(ctx, Linearizable)
	if err != nil {
		return nil, err
	}
	sys, err := e.host.Membership(ctx, SystemShard)
	if err != nil {
		return nil, err
	}
	def, err := e.host.Membership(ctx, DefaultShard)
	if err != nil {
		return nil, err
	}
	leader, _ := e.host.Leader(DefaultShard)
	out := make([]Member, 0, len(cat.servers))
	for id, p := range cat.servers {
		_, v1 := sys.Voters[id]
		_, v2 := def.Voters[id]
		out = append(out, Member{ID: id, Peer: p, Leader: id == leader, Alive: id == e.cfg.NodeID, Voter: v1 && v2})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for i := range out {
		if out[i].Alive {
			continue
		}
		wg.Add(1)
		go func(m *Member) {
			defer wg.Done()
			st, err := e.peers.Status(pctx, m.Peer.PeerAddr)
			m.Alive = err == nil && st.NodeID == m.ID
		}(&out[i])
	}
	wg.Wait()
	return out, nil
}

// peerHandler serves the peer RPC for the engine.
type peerHandler Engine

func (h *peerHandler) Join(ctx context.Context, req peer.JoinRequest) (peer.JoinResponse, error) {
	e := (*Engine)(h)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	id, err := e.AddServer(ctx, req.NodeID, Peer{RaftAddr: req.RaftAddr, PeerAddr: req.PeerAddr})
	return peer.JoinResponse{NodeID: id}, err
}

func (h *peerHandler) KeepAlive(ctx context.Context, req peer.KeepAliveRequest) (peer.KeepAliveResponse, error) {
	e := (*Engine)(h)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rs, err := e.renewBatch(ctx, req.Shard, []int64{req.Lease})
	if err != nil {
		return peer.KeepAliveResponse{}, err
	}
	return peer.KeepAliveResponse{TTLMillis: rs[0].TTL.Milliseconds()}, rs[0].Err
}

func (h *peerHandler) KeepAlives(ctx context.Context, req peer.KeepAliveBatchRequest) (peer.KeepAliveBatchResponse, error) {
	e := (*Engine)(h)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rs, err := e.renewBatch(ctx, req.Shard, req.Leases)
	if err != nil {
		return peer.KeepAliveBatchResponse{}, err
	}
	return batchResponse(rs), nil
}

func batchResponse(rs []core.KeepAliveResult) peer.KeepAliveBatchResponse {
	out := peer.KeepAliveBatchResponse{TTLMillis: make([]int64, len(rs))}
	for i, r := range rs {
		if r.Err == nil {
			out.TTLMillis[i] = max(r.TTL.Milliseconds(), 1)
		}
	}
	return out
}

func (h *peerHandler) Status(ctx context.Context) (peer.Status, error) {
	e := (*Engine)(h)
	st := peer.Status{NodeID: e.cfg.NodeID, Applied: map[uint64]uint64{}, Left: e.hasLeft()}
	for _, s := range e.host.Shards() {
		st.Applied[s] = e.host.Applied(s)
	}
	return st, nil
}
