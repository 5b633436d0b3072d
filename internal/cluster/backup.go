package cluster

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/dister/dister/internal/backup"
	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
)

// Snapshot streams a backup of the whole cluster to w (see internal/backup
// for the format): the catalog's groups and settings, and every group's
// keys, instances and leases, each group at one revision.
//
// Each group is read from this server's own replica after a ReadIndex
// round, so its records include every write acknowledged before the call;
// the replica's pebble snapshot is taken at once and read in chunks, so
// writes go on meanwhile (they are never held for more than that Raft
// round and the copy of one chunk). Memory stays flat: records flow from
// the snapshot to w in chunks of about 1 MiB. The remaining TTL of each
// lease is asked of the group's leader after the snapshots were taken;
// a lease it no longer counts (it ended since) is saved with 1 ms left.
func (e *Engine) Snapshot(ctx context.Context, w io.Writer) (core.SnapshotInfo, error) {
	info, err := e.snapshot(ctx, w)
	if err != nil && e.closed.Load() {
		err = fmt.Errorf("%w: %w", errs.Closed, err)
	}
	return info, err
}

// prepareTimeout bounds the reads a snapshot makes before it streams (the
// caller's ctx may have no deadline: the stream takes as long as it takes).
const prepareTimeout = time.Minute

func (e *Engine) snapshot(ctx context.Context, w io.Writer) (core.SnapshotInfo, error) {
	pctx, cancel := context.WithTimeout(ctx, prepareTimeout)
	defer cancel()
	cat, err := e.readCatalog(pctx, Linearizable)
	if err != nil {
		return core.SnapshotInfo{}, fmt.Errorf("snapshot: read the catalog: %w", err)
	}
	groups := []backup.Group{{Name: DefaultGroup, Shard: DefaultShard}}
	for name, g := range cat.groups {
		groups = append(groups, backup.Group{Name: name, Shard: g.Shard})
	}
	sort.Slice(groups[1:], func(i, j int) bool { return groups[1+i].Name < groups[1+j].Name })

	dumps := make([]*fsm.Dump, 0, len(groups))
	defer func() {
		for _, d := range dumps {
			d.Close()
		}
	}()
	var estimate int64
	kept := groups[:0]
	for _, g := range groups {
		if g.Shard != DefaultShard {
			// Wait (within ctx) for this server to run a group created a
			// moment ago.
			if _, err := e.resolve(pctx, g.Name); err != nil {
				if errors.Is(err, errs.GroupNotFound) {
					continue // deleted since the catalog was read
				}
				return core.SnapshotInfo{}, fmt.Errorf("snapshot of group %q: %w", g.Name, err)
			}
		}
		v, err := e.host.Read(pctx, g.Shard, fsm.DumpQuery{})
		if err != nil {
			return core.SnapshotInfo{}, fmt.Errorf("snapshot of group %q: %w", g.Name, err)
		}
		d := v.(*fsm.Dump)
		dumps = append(dumps, d)
		g.Revision = d.Revision
		estimate += d.EstimateBytes()
		kept = append(kept, g)
	}
	groups = kept
	left := make([]map[int64]int64, len(groups))
	for i, g := range groups {
		if left[i], err = e.leaseLeft(pctx, g.Shard); err != nil {
			return core.SnapshotInfo{}, fmt.Errorf("snapshot of group %q: remaining lease TTLs: %w", g.Name, err)
		}
	}

	h := backup.Header{Created: time.Now().UTC(), NodeID: e.cfg.NodeID, Settings: cat.settings, Groups: groups, EstimatedBytes: estimate}
	bw, err := backup.NewWriter(w, h)
	if err != nil {
		return core.SnapshotInfo{}, fmt.Errorf("snapshot: %w", err)
	}
	info := core.SnapshotInfo{Format: backup.Version, Created: h.Created, EstimatedBytes: estimate}
	for i, g := range groups {
		if err := ctx.Err(); err != nil {
			return info, err
		}
		if err := bw.Group(g.Name); err != nil {
			return info, fmt.Errorf("snapshot: write: %w", err)
		}
		sg := core.SnapshotGroup{Name: g.Name, Revision: g.Revision}
		start := bw.Written()
		remaining := func(id int64) int64 { return left[i][id] }
		n := 0
		err := dumps[i].Each(func(k, v []byte) error {
			if n++; n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if k[0] == fsm.BackupLease {
				var err error
				if _, v, err = fsm.LeaseWithRemaining(k, v, remaining); err != nil {
					return err
				}
			}
			countRecord(&sg, k)
			return bw.Record(k, v)
		})
		if err != nil {
			return info, fmt.Errorf("snapshot of group %q: %w", g.Name, err)
		}
		sg.Bytes = bw.Written() - start
		info.Groups = append(info.Groups, sg)
		dumps[i].Close()
	}
	if err := bw.Close(); err != nil {
		return info, fmt.Errorf("snapshot: write: %w", err)
	}
	info.Bytes = bw.Written()
	info.SHA256 = hex.EncodeToString(bw.Sum())
	return info, nil
}

func countRecord(sg *core.SnapshotGroup, key []byte) {
	st := backup.Stats{}
	backup.Count(&st, key)
	sg.Keys += st.Keys
	sg.Instances += st.Instances
	sg.Leases += st.Leases
}

// leaseLeft asks the leader of shard sid for the remaining TTL of every
// lease it counts down, retrying while leadership moves.
func (e *Engine) leaseLeft(ctx context.Context, sid uint64) (map[int64]int64, error) {
	backoff := 5 * time.Millisecond
	for {
		if e.closed.Load() {
			return nil, errs.Closed
		}
		if err := e.host.WaitLeader(ctx, sid); err != nil {
			return nil, err
		}
		var left map[int64]int64
		var err error
		leader, _ := e.host.Leader(sid)
		if leader == e.cfg.NodeID {
			left, err = e.leaseLeftHere(ctx, sid)
		} else {
			e.mu.Lock()
			p, known := e.servers[leader]
			e.mu.Unlock()
			if !known {
				err = fmt.Errorf("leader %d has no known peer address: %w", leader, errs.NoQuorum)
			} else {
				var r peer.LeaseLeftResponse
				err = e.peers.Call(ctx, p.PeerAddr, peer.OpLeaseLeft, peer.ShardRequest{Shard: sid}, &r)
				left = r.Left
			}
		}
		if err == nil || !(errors.Is(err, errs.NoQuorum) || errors.Is(err, peer.ErrUnreachable)) {
			return left, err
		}
		select {
		case <-ctx.Done():
			return nil, ctxError(ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// leaseLeftHere answers leaseLeft on the leader: after a ReadIndex round
// (still the leader, still the current lessor, every lease committed
// before is loaded), the remaining time of each lease, in ms.
func (e *Engine) leaseLeftHere(ctx context.Context, sid uint64) (map[int64]int64, error) {
	l, err := e.confirmedLessor(ctx, sid)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	left := make(map[int64]int64, len(l.deadline))
	for id, d := range l.deadline {
		if !l.expiring[id] {
			left[id] = max(d.Sub(now).Milliseconds(), 1)
		}
	}
	return left, nil
}
