package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
	"github.com/dister/dister/internal/svc"
)

// The node RPC that client-role nodes (and other servers) call on PeerAddr:
// writes with the caller's own dedup ids, reads at a consistency, watch
// streams, and the ops of peer.Call.

// Propose commits a client's command as the client encoded it, but for its
// time: its dedup id (session, seq, mark) is the client's, so a retry
// through any server is applied once, and its time is this server's clock
// (see fsm.WithTime). Only what a client may propose is accepted:
// transactions on client keys, lease grants, and revokes (a lessor's
// expiries, checkpoints and epochs are the servers' own).
func (h *peerHandler) Propose(ctx context.Context, req *peer.ProposeRequest) (*peer.ProposeResponse, error) {
	e := (*Engine)(h)
	e.metrics.peerRequest(peer.OpPropose)
	if e.closed.Load() {
		return nil, errs.Closed
	}
	if err := e.runPeerProposeHook(ctx, 1, false); err != nil {
		return nil, err
	}
	cmd, grant, err := clientCommand(req.Cmd)
	if err != nil {
		return nil, err
	}
	sid, err := e.resolve(ctx, req.Group)
	if err != nil {
		return nil, err
	}
	if err := grantInShard(grant, req.Group, sid); err != nil {
		return nil, err
	}
	start := time.Now()
	res, err := e.host.Propose(ctx, sid, cmd)
	e.metrics.proposal(req.Group, start, err, err == nil)
	if err != nil {
		return nil, err
	}
	return &peer.ProposeResponse{Data: res.Data}, nil
}

// ProposeMany is Propose for each of a client's commands of one group,
// all handed to the group's commit queue at once (they share its batches),
// each with its own answer.
func (h *peerHandler) ProposeMany(ctx context.Context, req *peer.ProposeManyRequest) ([]peer.ProposeAnswer, error) {
	e := (*Engine)(h)
	e.metrics.peerRequest(peer.OpPropose)
	if e.closed.Load() {
		return nil, errs.Closed
	}
	if err := e.runPeerProposeHook(ctx, len(req.Cmds), true); err != nil {
		return nil, err
	}
	answers := make([]peer.ProposeAnswer, len(req.Cmds))
	var cmds [][]byte
	var at []int
	var grants []int64 // per command in cmds
	for i, b := range req.Cmds {
		cmd, grant, err := clientCommand(b)
		if err != nil {
			answers[i].Err = err
			continue
		}
		cmds, at, grants = append(cmds, cmd), append(at, i), append(grants, grant)
	}
	if len(cmds) == 0 {
		return answers, nil
	}
	sid, err := e.resolve(ctx, req.Group)
	if err != nil {
		return nil, err
	}
	kept := 0
	for j, i := range at {
		if err := grantInShard(grants[j], req.Group, sid); err != nil {
			answers[i].Err = err
			continue
		}
		cmds[kept], at[kept] = cmds[j], i
		kept++
	}
	cmds, at = cmds[:kept], at[:kept]
	if len(cmds) == 0 {
		return answers, nil
	}
	start := time.Now()
	res, fails := e.host.ProposeMany(ctx, sid, cmds)
	for j, i := range at {
		answers[i] = peer.ProposeAnswer{Data: res[j].Data, Err: fails[j]}
		e.metrics.proposal(req.Group, start, fails[j], fails[j] == nil)
	}
	return answers, nil
}

// SetPeerProposeHook installs (nil removes) a hook run as each client
// Propose (n 1, many false) or ProposeMany (n commands) comes in; its
// error fails the call (peer.ErrUnimplemented: as a server without the
// method). For tests.
func (e *Engine) SetPeerProposeHook(h func(ctx context.Context, n int, many bool) error) {
	if h == nil {
		e.peerProposeHook.Store(nil)
		return
	}
	e.peerProposeHook.Store(&h)
}

func (e *Engine) runPeerProposeHook(ctx context.Context, n int, many bool) error {
	if h := e.peerProposeHook.Load(); h != nil {
		return (*h)(ctx, n, many)
	}
	return nil
}

// Read answers a client's read at the consistency it asked for.
func (h *peerHandler) Read(ctx context.Context, req *peer.ReadRequest) (*peer.ReadResponse, error) {
	e := (*Engine)(h)
	e.metrics.peerRequest(peer.OpRead)
	o := ReadOpts{Consistency: Consistency(req.Consistency), MinRevision: req.MinRevision}
	switch req.Query {
	case peer.QueryGet:
		if err := fsm.ValidateUserKey(req.Key, false); err != nil {
			return nil, err
		}
		r, err := e.Get(ctx, req.Group, req.Key, o)
		if err != nil {
			return nil, err
		}
		resp := &peer.ReadResponse{Revision: r.Revision, Found: r.Found}
		if r.Found {
			resp.KVs = []fsm.KV{r.KV}
		}
		return resp, nil
	case peer.QueryList:
		if err := fsm.ValidateUserKey(req.Key, true); err != nil {
			return nil, err
		}
		// 0 would be no limit at all: every key of the group in memory.
		if req.Limit < 1 || req.Limit > fsm.MaxListLimit {
			return nil, fmt.Errorf("list limit %d is outside 1..%d: %w", req.Limit, fsm.MaxListLimit, errs.Invalid)
		}
		r, err := e.List(ctx, req.Group, fsm.ListQuery{Prefix: req.Key, After: req.After, Limit: req.Limit}, o)
		if err != nil {
			return nil, err
		}
		resp := &peer.ReadResponse{Revision: r.Revision, KVs: r.KVs, More: r.More}
		// Cut an answer too large for one message: the client pages on.
		size := 0
		for i := range resp.KVs {
			if size += len(resp.KVs[i].Key) + len(resp.KVs[i].Value) + 32; size > peer.MaxAnswer && i > 0 {
				resp.KVs, resp.More = resp.KVs[:i], true
				break
			}
		}
		return resp, nil
	case peer.QueryRevision:
		rev, err := e.Revision(ctx, req.Group, o)
		if err != nil {
			return nil, err
		}
		return &peer.ReadResponse{Revision: rev}, nil
	case peer.QueryLease:
		d, err := e.Lease(ctx, req.Group, req.Lease)
		if err != nil {
			return nil, err
		}
		return &peer.ReadResponse{TTLMs: d.TTL.Milliseconds(), Keys: d.Keys}, nil
	}
	return nil, fmt.Errorf("unknown query %d: %w", req.Query, errs.Invalid)
}

// watchFrames is how many frames a client's watch may have queued on this
// server before the engine's own queue takes the rest (and, when that is
// full, the watcher reads on from history).
const watchFrames = 64

// Watch streams a group's changes to a client node, through a queue
// between the engine's hub (which never blocks) and the stream (which
// blocks on the client's flow control).
func (h *peerHandler) Watch(ctx context.Context, req *peer.WatchRequest, send func(*peer.WatchFrame) error) error {
	(*Engine)(h).metrics.peerRequest(peer.OpWatch)
	return h.stream(ctx, req, nil, send)
}

// Feed streams a group's changes to a client node's cache, filtered to the
// keys it follows (see peer.FeedRequest and feedfilter.go).
func (h *peerHandler) Feed(ctx context.Context, req *peer.FeedRequest, in <-chan peer.FeedInput, send func(*peer.WatchFrame) error) error {
	(*Engine)(h).metrics.peerRequest(peer.OpWatch)
	if req.Watch.From <= 0 {
		return fmt.Errorf("feed from revision %d: from must be positive: %w", req.Watch.From, errs.Invalid)
	}
	f := newFeedFilter(req.Keys, req.Watch.From-1, req.Watch.PrevKV)
	f.in = in
	return h.stream(ctx, &req.Watch, f, send)
}

// stream runs a watch (filtered by f, when not nil) and sends its frames.
func (h *peerHandler) stream(ctx context.Context, req *peer.WatchRequest, f *feedFilter, send func(*peer.WatchFrame) error) error {
	e := (*Engine)(h)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	frames := make(chan *peer.WatchFrame, watchFrames)
	ended := make(chan error, 1)
	frame := func(b WatchBatch) *peer.WatchFrame {
		evs := b.Events
		if f == nil && !req.PrevKV && len(evs) > 0 {
			evs = make([]fsm.Event, len(b.Events))
			copy(evs, b.Events)
			for i := range evs {
				evs[i].Prev = nil
			}
		}
		// A feed's filter copies the events it keeps.
		return &peer.WatchFrame{Revision: b.Revision, Events: evs}
	}
	err := e.Watch(ctx, WatchRequest{
		Group: req.Group, Prefix: req.Prefix, From: req.From,
		Send: func(b WatchBatch, stop <-chan struct{}) bool {
			select {
			case frames <- frame(b):
				return true
			case <-stop:
				return false
			case <-ctx.Done():
				return false
			}
		},
		TryPush: func(b WatchBatch) bool {
			select {
			case frames <- frame(b):
				return true
			default:
				return false
			}
		},
		End: func(err error, compact int64) {
			if compact > 0 {
				err = &fsm.CompactedError{From: req.From, CompactRevision: compact}
			}
			ended <- err
		},
	})
	if err != nil {
		return err
	}
	// The first frame says the watch started (a client node's Watch
	// returns then): a progress note at From-1, where nothing is promised.
	if err := send(&peer.WatchFrame{Revision: max(req.From-1, 0)}); err != nil {
		return nil
	}
	// out filters fr (on a feed) and sends what is left.
	out := func(fr *peer.WatchFrame) error {
		if f != nil {
			if fr = f.pass(fr, len(frames) > 0); fr == nil {
				return nil
			}
		}
		return send(fr)
	}
	var changes <-chan peer.FeedInput
	if f != nil {
		changes = f.in
	}
	for {
		select {
		case fr := <-frames:
			if err := out(fr); err != nil {
				return nil // the client is gone
			}
		case c := <-changes:
			if c.Err != nil {
				return c.Err
			}
			ack, err := f.apply(c.Change)
			if err != nil {
				return err
			}
			if err := send(ack); err != nil {
				return nil
			}
		case err := <-ended:
			// What was queued before the end goes first.
			for {
				select {
				case fr := <-frames:
					if out(fr) != nil {
						return nil
					}
					continue
				default:
				}
				break
			}
			return err
		}
	}
}

// Snapshot streams a backup of the whole cluster to a client node, taken
// here as Engine.Snapshot takes it.
func (h *peerHandler) Snapshot(ctx context.Context, w io.Writer) (any, error) {
	e := (*Engine)(h)
	e.metrics.peerRequest(peer.OpSnapshot)
	return e.Snapshot(ctx, w)
}

// Call runs one of the JSON ops of peer.Call.
func (h *peerHandler) Call(ctx context.Context, op string, body []byte) (any, error) {
	e := (*Engine)(h)
	e.metrics.peerRequest(op)
	decode := func(v any) error {
		if err := json.Unmarshal(body, v); err != nil {
			return fmt.Errorf("%s request: %v: %w", op, err, errs.Invalid)
		}
		return nil
	}
	switch op {
	case peer.OpJoin, peer.OpAddServer:
		var req peer.JoinRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		if op == peer.OpJoin {
			if err := e.requireServerCert(ctx, "joining as a server"); err != nil {
				return nil, err
			}
		}
		return h.Join(ctx, req)
	case peer.OpStatus:
		return h.Status(ctx)
	case peer.OpKeepAlive:
		var req peer.KeepAliveRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		if req.Group == "" {
			return h.KeepAlive(ctx, req)
		}
		ttl, err := e.KeepAlive(ctx, req.Group, req.Lease)
		return peer.KeepAliveResponse{TTLMillis: ttl.Milliseconds()}, err
	case peer.OpKeepAlives:
		var req peer.KeepAliveBatchRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		if len(req.Leases) > core.MaxKeepAliveBatch {
			return nil, fmt.Errorf("%d leases in one keepalive batch, more than %d: %w", len(req.Leases), core.MaxKeepAliveBatch, errs.TooLarge)
		}
		if req.Group == "" {
			return h.KeepAlives(ctx, req)
		}
		rs, err := e.KeepAliveBatch(ctx, req.Group, req.Leases)
		return batchResponse(rs), err
	case peer.OpTopology:
		return e.topology(), nil
	case peer.OpProgress:
		var req peer.GroupRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		return nil, e.RequestProgress(ctx, req.Group)
	case peer.OpGroupRevision:
		var req peer.GroupRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		rev, err := e.Revision(ctx, req.Group, ReadOpts{Consistency: Linearizable})
		return peer.RevisionResponse{Revision: rev}, err
	case peer.OpGroups:
		return e.Groups(ctx)
	case peer.OpCreateGroup, peer.OpDeleteGroup:
		var req peer.GroupRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		if op == peer.OpCreateGroup {
			return nil, e.CreateGroup(ctx, req.Group)
		}
		return nil, e.DeleteGroup(ctx, req.Group)
	case peer.OpMembers:
		ms, err := e.Members(ctx)
		out := make([]peer.ServerInfo, len(ms))
		for i, m := range ms {
			out[i] = peer.ServerInfo{ID: m.ID, RaftAddr: m.Peer.RaftAddr, PeerAddr: m.Peer.PeerAddr,
				Voter: m.Voter, Leader: m.Leader, Alive: m.Alive}
		}
		return out, err
	case peer.OpRemoveServer:
		var req peer.ServerRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		return nil, e.RemoveServer(ctx, req.ID)
	case peer.OpSettings:
		s, err := e.Settings(ctx)
		return peer.Settings{ScriptChecks: s.ScriptChecks}, err
	case peer.OpSetSettings:
		var req peer.Settings
		if err := decode(&req); err != nil {
			return nil, err
		}
		return nil, e.SetSettings(ctx, Settings{ScriptChecks: req.ScriptChecks})
	case peer.OpLeaseGet:
		var req peer.KeepAliveRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		d, err := e.Lease(ctx, req.Group, req.Lease)
		return peer.LeaseDetail{TTL: d.TTL, Keys: d.Keys}, err
	case peer.OpLeaseLeft:
		var req peer.ShardRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		left, err := e.leaseLeftHere(ctx, req.Shard)
		return peer.LeaseLeftResponse{Left: left}, err
	case peer.OpRegister, peer.OpDeregister, peer.OpHeartbeat, peer.OpInstances, peer.OpReplace:
		return h.serviceCall(ctx, op, decode)
	}
	return nil, fmt.Errorf("unknown op %q: %w", op, errs.Invalid)
}

// serviceCall runs the service ops of peer.Call.
func (h *peerHandler) serviceCall(ctx context.Context, op string, decode func(any) error) (any, error) {
	e := (*Engine)(h)
	switch op {
	case peer.OpRegister:
		var req peer.RegisterRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		r, err := svc.Decode(req.Record)
		if err != nil {
			return nil, fmt.Errorf("instance record: %w", err)
		}
		if err := e.authorizeCommands(ctx, r); err != nil {
			return nil, err
		}
		// The caller keeps a ttl instance's lease alive itself.
		if err := e.Register(ctx, req.Group, r); err != nil {
			return nil, err
		}
		// Answer the record as stored: it carries the lease the caller
		// renews (Register leaves r without it).
		got, err := e.Get(ctx, req.Group, svc.InstanceKey(r.Service, r.ID), ReadOpts{})
		if err != nil {
			return nil, err
		}
		if !got.Found {
			return nil, fmt.Errorf("instance %s/%s was removed as it was registered: %w", r.Service, r.ID, errs.Conflict)
		}
		return peer.RegisterResponse{Record: got.KV.Value, Revision: got.Revision}, nil
	case peer.OpDeregister, peer.OpHeartbeat:
		var req peer.InstanceRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		if op == peer.OpHeartbeat {
			if err := e.Heartbeat(ctx, req.Group, req.Service, req.ID); err != nil {
				return nil, err
			}
			return peer.RevisionResponse{Revision: e.appliedRevision(ctx, req.Group)}, nil
		}
		found, err := e.Deregister(ctx, req.Group, req.Service, req.ID)
		if err != nil {
			return nil, err
		}
		return peer.DeregisterResponse{Found: found, Revision: e.appliedRevision(ctx, req.Group)}, nil
	case peer.OpInstances:
		var req peer.InstancesRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		if req.Consistency > peer.Stale {
			return nil, fmt.Errorf("instances: unknown consistency %d: %w", req.Consistency, errs.Invalid)
		}
		sts, rev, err := e.Instances(ctx, req.Group, req.Service,
			ReadOpts{Consistency: Consistency(req.Consistency), MinRevision: req.MinRevision})
		if err != nil {
			return nil, err
		}
		resp := peer.InstancesResponse{Revision: rev}
		for _, st := range sts {
			b, err := st.Record.Encode()
			if err != nil {
				return nil, err
			}
			resp.Records = append(resp.Records, b)
			resp.ModRevisions = append(resp.ModRevisions, st.ModRevision)
		}
		return resp, nil
	default: // peer.OpReplace
		var req peer.ReplaceRequest
		if err := decode(&req); err != nil {
			return nil, err
		}
		recs := make([]*svc.Record, len(req.Records))
		for i, b := range req.Records {
			r, err := svc.Decode(b)
			if err != nil {
				return nil, fmt.Errorf("instance record %d: %w", i, err)
			}
			if err := e.authorizeCommands(ctx, r); err != nil {
				return nil, err
			}
			recs[i] = r
		}
		if err := e.ReplaceServices(ctx, req.Group, req.Services, recs); err != nil {
			return nil, err
		}
		return peer.RevisionResponse{Revision: e.appliedRevision(ctx, req.Group)}, nil
	}
}

// appliedRevision is the group's revision on this server as it is (0 when
// it cannot be read): after a write this server applied, at least the
// write's revision.
func (e *Engine) appliedRevision(ctx context.Context, group string) int64 {
	rev, err := e.Revision(ctx, group, ReadOpts{Consistency: Stale})
	if err != nil {
		return 0
	}
	return rev
}

// topology is this server's view of the cluster, for client nodes.
func (e *Engine) topology() peer.Topology {
	t := peer.Topology{NodeID: e.cfg.NodeID}
	e.mu.Lock()
	for id, p := range e.servers {
		t.Servers = append(t.Servers, peer.ServerInfo{ID: id, RaftAddr: p.RaftAddr, PeerAddr: p.PeerAddr})
	}
	e.mu.Unlock()
	for _, g := range e.GroupStates() {
		t.Groups = append(t.Groups, peer.GroupState{Name: g.Name, Leader: g.Leader, Revision: g.Revision, Shard: g.Shard})
	}
	return t
}
