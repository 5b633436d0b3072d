package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/peer"
)

// Cluster calls go to a server, which runs them as its own (through the
// system shard's leader where they write).

// CreateGroup creates a group; the client learns of it at once.
func (e *Engine) CreateGroup(ctx context.Context, name string) error {
	if err := e.call(ctx, "", peer.OpCreateGroup, peer.GroupRequest{Group: name}, nil); err != nil {
		return err
	}
	return e.rediscover(ctx)
}

// DeleteGroup deletes a group on every server.
func (e *Engine) DeleteGroup(ctx context.Context, name string) error {
	if err := e.call(ctx, "", peer.OpDeleteGroup, peer.GroupRequest{Group: name}, nil); err != nil {
		return err
	}
	e.kick()
	return nil
}

// Groups lists the groups.
func (e *Engine) Groups(ctx context.Context) ([]string, error) {
	var out []string
	err := e.call(ctx, "", peer.OpGroups, nil, &out)
	return out, err
}

// AddServer adds a server to the cluster.
func (e *Engine) AddServer(ctx context.Context, id uint64, p core.Peer) (uint64, error) {
	var resp peer.JoinResponse
	err := e.call(ctx, "", peer.OpAddServer, peer.JoinRequest{NodeID: id, RaftAddr: p.RaftAddr, PeerAddr: p.PeerAddr}, &resp)
	if err == nil {
		e.kick()
	}
	return resp.NodeID, err
}

// RemoveServer removes a server from the cluster.
func (e *Engine) RemoveServer(ctx context.Context, id uint64) error {
	err := e.call(ctx, "", peer.OpRemoveServer, peer.ServerRequest{ID: id}, nil)
	if err == nil {
		e.kick()
	}
	return err
}

// Members lists the servers (a client node is not one).
func (e *Engine) Members(ctx context.Context) ([]core.Member, error) {
	var ms []peer.ServerInfo
	if err := e.call(ctx, "", peer.OpMembers, nil, &ms); err != nil {
		return nil, err
	}
	out := make([]core.Member, len(ms))
	for i, m := range ms {
		out[i] = core.Member{ID: m.ID, Peer: core.Peer{RaftAddr: m.RaftAddr, PeerAddr: m.PeerAddr},
			Leader: m.Leader, Alive: m.Alive, Voter: m.Voter}
	}
	return out, nil
}

// Settings reads the cluster settings.
func (e *Engine) Settings(ctx context.Context) (core.Settings, error) {
	var s peer.Settings
	err := e.call(ctx, "", peer.OpSettings, nil, &s)
	return core.Settings{ScriptChecks: s.ScriptChecks}, err
}

// SetSettings replaces the cluster settings.
func (e *Engine) SetSettings(ctx context.Context, s core.Settings) error {
	return e.call(ctx, "", peer.OpSetSettings, peer.Settings{ScriptChecks: s.ScriptChecks}, nil)
}

// Leader is the group's leader as the servers report it now.
func (e *Engine) Leader(ctx context.Context, group string) (uint64, error) {
	group = groupName(group)
	if err := e.rediscover(ctx); err != nil {
		return 0, ctxError(err, nil)
	}
	e.mu.Lock()
	g, ok := e.groups[group]
	e.mu.Unlock()
	if !ok {
		return 0, fmt.Errorf("group %q: %w", group, errs.GroupNotFound)
	}
	return g.leader.Load(), nil
}

// Snapshot streams a backup of the whole cluster from a server (which
// takes it as a server's Node.Snapshot does) into w. A server that cannot
// be reached before the first byte arrived is skipped for another; once w
// took bytes, a failure is final (w holds an incomplete file).
func (e *Engine) Snapshot(ctx context.Context, w io.Writer) (core.SnapshotInfo, error) {
	var info core.SnapshotInfo
	var last error
	skip := map[string]bool{}
	for n := 0; ; n++ {
		if e.closed.Load() {
			return info, errs.Closed
		}
		addr, ok := e.pick("snapshot", skip)
		if !ok {
			clear(skip)
			if err := e.rediscover(ctx); err != nil {
				return info, ctxError(err, last)
			}
			continue
		}
		raw, written, err := e.peers.Snapshot(ctx, addr, w)
		if err == nil {
			if err := json.Unmarshal(raw, &info); err != nil {
				return core.SnapshotInfo{}, fmt.Errorf("snapshot from %s: decode its description: %v: %w", addr, err, errs.Invalid)
			}
			return info, nil
		}
		if written > 0 || !retryable(err) || ctx.Err() != nil {
			if written > 0 {
				return info, fmt.Errorf("snapshot from %s broke off after %d bytes: %w", addr, written, err)
			}
			if ctx.Err() != nil && retryable(err) {
				return info, ctxError(ctx.Err(), err)
			}
			return info, err
		}
		last = err
		if errors.Is(err, peer.ErrUnreachable) {
			e.markDown(addr)
		}
		skip[addr] = true
		if err := e.backoff(ctx, n); err != nil {
			return info, ctxError(err, last)
		}
	}
}
