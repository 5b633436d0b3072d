package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
)

// read sends req to the server the ring picks for key (the next one when
// it fails), and raises the group's session floor to the answer's revision.
// A session read carries the group's floor as its MinRevision.
func (e *Engine) read(ctx context.Context, g *group, key string, req *peer.ReadRequest) (*peer.ReadResponse, error) {
	if e.closed.Load() {
		return nil, errs.Closed
	}
	var resp *peer.ReadResponse
	err := e.underFloor(ctx, g, req.Consistency == peer.Session, req.MinRevision, func(g *group, minRevision int64) error {
		req.Group, req.MinRevision = g.name, minRevision
		err := e.retry(ctx, func(skip map[string]bool) (string, bool) { return e.pick(g.name+"\x00"+key, skip) },
			func(addr string) error {
				r, err := e.peers.Read(ctx, addr, req)
				resp = r
				return err
			})
		if err == nil {
			g.raiseFloor(resp.Revision)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// underFloor runs a read of g at MinRevision explicit, or for a session
// read at the group's floor when that is higher. Servers answer ErrInvalid
// to a floor their group has not reached, which a floor of this group
// never is (it comes from revisions servers answered). When the session
// floor was what they had not reached, it came from another group of the
// name: one deleted since, or the old one answering a write late. A
// discovery round replaces a group created again (with a fresh floor); a
// floor the group still has not reached then is lowered to the group's
// committed revision (every write of this group that this client saw is
// at or under it). Then the read goes again.
func (e *Engine) underFloor(ctx context.Context, g *group, session bool, explicit int64, read func(g *group, minRevision int64) error) error {
	for tries := 0; ; tries++ {
		floor := int64(0)
		if session {
			floor = g.floor.Load()
		}
		err := read(g, max(explicit, floor))
		if err == nil || !errors.Is(err, errs.Invalid) || floor <= explicit || tries == maxFloorRepairs {
			return err
		}
		if rerr := e.rediscover(ctx); rerr != nil {
			return e.closedOr(fmt.Errorf("%w (last try: %v)", rerr, err))
		}
		if ng := e.group(g.name); ng != g {
			g = ng
			continue
		}
		resp, rerr := e.read(ctx, g, "", readRequest(core.ReadOpts{Consistency: core.Linearizable}, peer.QueryRevision))
		if rerr != nil {
			return rerr
		}
		g.floor.CompareAndSwap(floor, min(floor, resp.Revision))
	}
}

// maxFloorRepairs bounds how many times underFloor repairs a floor for one
// read (a group created again twice meanwhile, at most, in practice).
const maxFloorRepairs = 3

// readRequest is a read at o's consistency.
func readRequest(o core.ReadOpts, q peer.Query) *peer.ReadRequest {
	return &peer.ReadRequest{Consistency: peer.Consistency(o.Consistency), MinRevision: o.MinRevision, Query: q}
}

// Get reads one key: from the cache when the read's consistency allows
// (see cachedGet), else from a server.
func (e *Engine) Get(ctx context.Context, group, key string, o core.ReadOpts) (*fsm.GetResult, error) {
	if o.CacheHit != nil {
		*o.CacheHit = false
	}
	g := e.group(group)
	f := e.feedOf(g)
	if f == nil {
		return e.getThrough(ctx, g, key, o, nil)
	}
	return e.cachedGet(ctx, g, f, key, o)
}

// getThrough reads key from a server; with f, the answer fills the cache.
func (e *Engine) getThrough(ctx context.Context, g *group, key string, o core.ReadOpts, f *feed) (*fsm.GetResult, error) {
	if f != nil && f.cache.Follow(key) {
		f.wake() // the follow goes out while the read does
	}
	r, err := e.getFrom(ctx, g, key, o)
	if err != nil {
		if f != nil {
			f.cache.Unfollow(key)
			f.wake()
		}
		return nil, err
	}
	if f != nil {
		f.cache.Fill(key, r.KV, r.Found, r.Revision)
		if f.cache.Filtered() {
			f.wake() // a fill that failed, or evicted a key, unfollows one
		}
	}
	return r, nil
}

// getFrom reads key from a server.
func (e *Engine) getFrom(ctx context.Context, g *group, key string, o core.ReadOpts) (*fsm.GetResult, error) {
	req := readRequest(o, peer.QueryGet)
	req.Key = key
	resp, err := e.read(ctx, g, key, req)
	if err != nil {
		return nil, err
	}
	r := &fsm.GetResult{Found: resp.Found, Revision: resp.Revision}
	if resp.Found {
		if len(resp.KVs) != 1 {
			return nil, fmt.Errorf("get answer with %d entries: %w", len(resp.KVs), peer.ErrUnreachable)
		}
		r.KV = resp.KVs[0]
	}
	return r, nil
}

// List reads a page from a server (lists are not cached).
func (e *Engine) List(ctx context.Context, group string, q fsm.ListQuery, o core.ReadOpts) (*fsm.ListResult, error) {
	g := e.group(group)
	req := readRequest(o, peer.QueryList)
	req.Key, req.After, req.Limit = q.Prefix, q.After, q.Limit
	resp, err := e.read(ctx, g, q.Prefix, req)
	if err != nil {
		return nil, err
	}
	return &fsm.ListResult{KVs: resp.KVs, More: resp.More, Revision: resp.Revision}, nil
}

// Revision is the group's revision as a server has it under o's rules.
func (e *Engine) Revision(ctx context.Context, group string, o core.ReadOpts) (int64, error) {
	g := e.group(group)
	resp, err := e.read(ctx, g, "", readRequest(o, peer.QueryRevision))
	if err != nil {
		return 0, err
	}
	return resp.Revision, nil
}
