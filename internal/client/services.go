package client

import (
	"context"
	"fmt"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/peer"
	"github.com/dister/dister/internal/svc"
)

// Services run on the group's leader (the server validates, grants a ttl
// instance's lease and writes the record); the client keeps a ttl
// instance's lease alive itself, and raises its session floor to the
// revision the server answers, so it reads its own service writes.

// serviceCall runs a service op at the group's leader (any server when it
// is not known), moving on when a server fails.
func (e *Engine) serviceCall(ctx context.Context, group, op string, in, out any) error {
	return e.retry(ctx, func(skip map[string]bool) (string, bool) { return e.leaderAddr(group, skip) },
		func(addr string) error { return e.peers.Call(ctx, addr, op, in, out) })
}

// Register stores r; a ttl instance's new lease is in r.Lease, renewed by
// the root package's keeper.
func (e *Engine) Register(ctx context.Context, group string, r *svc.Record) error {
	group = groupName(group)
	b, err := r.Encode()
	if err != nil {
		return err
	}
	var resp peer.RegisterResponse
	if err := e.serviceCall(ctx, group, peer.OpRegister, peer.RegisterRequest{Group: group, Record: b}, &resp); err != nil {
		return err
	}
	e.group(group).raiseFloor(resp.Revision)
	stored, err := svc.Decode(resp.Record)
	if err != nil {
		return fmt.Errorf("registered record: %w", err)
	}
	*r = *stored
	return nil
}

// Deregister removes an instance; false when there was none.
func (e *Engine) Deregister(ctx context.Context, group, service, id string) (bool, error) {
	group = groupName(group)
	var resp peer.DeregisterResponse
	if err := e.serviceCall(ctx, group, peer.OpDeregister, peer.InstanceRequest{Group: group, Service: service, ID: id}, &resp); err != nil {
		return false, err
	}
	e.group(group).raiseFloor(resp.Revision)
	return resp.Found, nil
}

// Heartbeat renews a ttl instance (its lease, and passing status).
func (e *Engine) Heartbeat(ctx context.Context, group, service, id string) error {
	group = groupName(group)
	var resp peer.RevisionResponse
	if err := e.serviceCall(ctx, group, peer.OpHeartbeat, peer.InstanceRequest{Group: group, Service: service, ID: id}, &resp); err != nil {
		return err
	}
	e.group(group).raiseFloor(resp.Revision)
	return nil
}

// ReplaceServices replaces every instance of the named services.
func (e *Engine) ReplaceServices(ctx context.Context, group string, names []string, recs []*svc.Record) error {
	group = groupName(group)
	req := peer.ReplaceRequest{Group: group, Services: names, Records: make([][]byte, len(recs))}
	for i, r := range recs {
		b, err := r.Encode()
		if err != nil {
			return err
		}
		req.Records[i] = b
	}
	var resp peer.RevisionResponse
	if err := e.serviceCall(ctx, group, peer.OpReplace, req, &resp); err != nil {
		return err
	}
	e.group(group).raiseFloor(resp.Revision)
	return nil
}

// Instances reads the instances of a service ("" = all) from a server,
// under the session floor for session reads.
func (e *Engine) Instances(ctx context.Context, name, service string, o core.ReadOpts) ([]svc.Stored, int64, error) {
	var resp peer.InstancesResponse
	g := e.group(name)
	err := e.underFloor(ctx, g, o.Consistency == core.Session, o.MinRevision, func(g *group, minRevision int64) error {
		req := peer.InstancesRequest{Group: g.name, Service: service, Consistency: peer.Consistency(o.Consistency), MinRevision: minRevision}
		resp = peer.InstancesResponse{}
		if err := e.call(ctx, g.name+"\x00svc\x00"+service, peer.OpInstances, req, &resp); err != nil {
			return err
		}
		if len(resp.ModRevisions) != len(resp.Records) {
			return fmt.Errorf("instances answer with %d records and %d revisions: %w", len(resp.Records), len(resp.ModRevisions), peer.ErrUnreachable)
		}
		g.raiseFloor(resp.Revision)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	out := make([]svc.Stored, len(resp.Records))
	for i, b := range resp.Records {
		r, err := svc.Decode(b)
		if err != nil {
			return nil, 0, fmt.Errorf("instance record: %w", err)
		}
		out[i] = svc.Stored{Record: r, ModRevision: resp.ModRevisions[i]}
	}
	return out, resp.Revision, nil
}
