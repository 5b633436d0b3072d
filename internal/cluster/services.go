package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/health"
	"github.com/dister/dister/internal/svc"
)

// Services live in each group's reserved namespace (see internal/svc for
// the key layout). Registration and removal are CAS transactions on the
// instance record; a ttl instance's heartbeat key is attached to a lease,
// so that the lease's expiry — the registrar stopped renewing — is what
// turns it critical.

// maxRegisterRetries bounds the CAS retries of one Register racing other
// writers of the same instance (the checker, other registrars); they back
// off at random so that racers spread out.
const maxRegisterRetries = 64

// casBackoff sleeps a random time that grows with attempt (up to 50ms).
func casBackoff(ctx context.Context, attempt int) error {
	d := time.Duration(rand.Int64N(int64(min(time.Millisecond<<min(attempt, 6), 50*time.Millisecond)) + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ServiceEnv is what validating an instance of group needs to know about
// the cluster, as this server knows it. With script (the instance has a
// script or custom check) it also tells whether such a check may be
// registered: the cluster setting, read linearizably, must be on, and the
// group's current leader must have been started with EnableScriptChecks
// (the catalog records each server's flag). A refusal is ErrInvalid.
func (e *Engine) ServiceEnv(ctx context.Context, group string, script bool) (svc.Env, error) {
	env := svc.Env{AllLoopback: e.allLoopback()}
	if !script {
		return env, nil
	}
	s, err := e.Settings(ctx)
	if err != nil {
		return env, err
	}
	if !s.ScriptChecks {
		return env, fmt.Errorf("script and custom checks run commands on the leader and are disabled by the cluster setting (script_checks): %w", errs.Invalid)
	}
	sid, err := e.resolve(ctx, group)
	if err != nil {
		return env, err
	}
	if err := e.host.WaitLeader(ctx, sid); err != nil {
		return env, err
	}
	leader, _ := e.host.Leader(sid)
	e.mu.Lock()
	on := e.flags[leader].ScriptChecks
	e.mu.Unlock()
	if !on {
		return env, fmt.Errorf("script checks are not enabled on the leader (server %d was not started with --enable-script-checks): %w", leader, errs.Invalid)
	}
	env.AllowScript = true
	return env, nil
}

// allLoopback reports whether every known server, this one included, has a
// loopback Raft address.
func (e *Engine) allLoopback() bool {
	if !svc.IsLoopbackAddr(e.cfg.RaftAddr) {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range e.servers {
		if !svc.IsLoopbackAddr(p.RaftAddr) {
			return false
		}
	}
	return true
}

// Register validates r and stores it, replacing the instance with its id.
// A replacement with the same check keeps the status already known. A ttl
// instance gets a fresh lease (r.Lease; the caller renews it) with its
// heartbeat key attached; the lease of the instance it replaced is
// revoked.
func (e *Engine) Register(ctx context.Context, group string, r *svc.Record) error {
	svc.Normalize(r)
	env, err := e.ServiceEnv(ctx, group, r.Check.Probe().IsScript())
	if err != nil {
		return err
	}
	if err := svc.Validate(r, env); err != nil {
		return err
	}
	var lease int64
	if r.Check.Type == svc.TypeTTL {
		if lease, err = e.GrantLease(ctx, group, r.Check.TTL); err != nil {
			return err
		}
	}
	old, err := e.register(ctx, group, r, lease)
	if err != nil {
		if lease != 0 {
			e.dropLease(group, lease)
		}
		return err
	}
	if old != nil && old.Lease != 0 && old.Lease != lease {
		e.dropLease(group, old.Lease)
	}
	return nil
}

func (e *Engine) register(ctx context.Context, group string, r *svc.Record, lease int64) (*svc.Record, error) {
	key := svc.InstanceKey(r.Service, r.ID)
	for attempt := range maxRegisterRetries {
		// A session read is enough: the write below is a CAS on what it
		// saw, and a lost CAS raises this engine's session floor to the
		// revision that beat it, so the next read sees that.
		got, err := e.Get(ctx, group, key, ReadOpts{})
		if err != nil {
			return nil, err
		}
		var old *svc.Record
		if got.Found {
			if old, err = svc.Decode(got.KV.Value); err != nil {
				return nil, err
			}
		}
		rec := *r
		rec.Lease = lease
		rec.RegisteredMs = time.Now().UnixMilli()
		if old != nil && svc.SameCheck(old, &rec) && rec.Check.Type != svc.TypeTTL {
			rec.Status, rec.Output, rec.LastCheckedMs = old.Status, old.Output, old.LastCheckedMs
		} else {
			rec.InitialStatus(time.Now())
		}
		value, err := rec.Encode()
		if err != nil {
			return nil, err
		}
		t := &fsm.Txn{
			Compares: []fsm.Compare{{Key: key, Target: fsm.TargetModRevision, Op: fsm.OpEqual, Int: got.KV.ModRevision}},
			Then:     []fsm.Op{{Type: fsm.OpPut, Key: key, Value: value}},
		}
		if lease != 0 {
			t.Then = append(t.Then, fsm.Op{Type: fsm.OpPut, Key: svc.HeartbeatKey(r.Service, r.ID), Lease: lease})
		} else if old != nil && old.Lease != 0 {
			t.Then = append(t.Then, fsm.Op{Type: fsm.OpDelete, Key: svc.HeartbeatKey(r.Service, r.ID)})
		}
		res, err := e.ReservedTxn(ctx, group, t)
		if err != nil {
			return nil, err
		}
		if res.Succeeded {
			*r = rec
			return old, nil
		}
		if err := casBackoff(ctx, attempt); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("instance changed %d times while being registered: %w", maxRegisterRetries, errs.Conflict)
}

// dropLease revokes a lease, best effort: a lease left behind expires by
// itself.
func (e *Engine) dropLease(group string, id int64) {
	ctx, cancel := context.WithTimeout(e.life, 5*time.Second)
	defer cancel()
	if err := e.RevokeLease(ctx, group, id); err != nil && !errors.Is(err, errs.LeaseNotFound) {
		e.log.Debug("lease of a replaced instance not revoked", "lease", id, "err", err)
	}
}

// Deregister removes an instance; false when there was none.
func (e *Engine) Deregister(ctx context.Context, group, service, id string) (bool, error) {
	if err := svc.ValidName("service name", service); err != nil {
		return false, err
	}
	if err := svc.ValidName("instance id", id); err != nil {
		return false, err
	}
	key := svc.InstanceKey(service, id)
	got, err := e.Get(ctx, group, key, ReadOpts{Consistency: Linearizable})
	if err != nil || !got.Found {
		return false, err
	}
	res, err := e.ReservedTxn(ctx, group, &fsm.Txn{Then: []fsm.Op{
		{Type: fsm.OpDelete, Key: key}, {Type: fsm.OpDelete, Key: svc.HeartbeatKey(service, id)}}})
	if err != nil {
		return false, err
	}
	if old, err := svc.Decode(got.KV.Value); err == nil && old.Lease != 0 {
		e.dropLease(group, old.Lease)
	}
	return res.Ops[0].Deleted > 0, nil
}

// ReplaceServices replaces, in one write, every instance of each named
// service with recs (the legacy API's "POST replaces all nodes"). recs are
// validated first; none may use a ttl check. An instance registered before
// with the same address and check keeps its status (a re-POST of an
// unchanged set is no outage), and when nothing changes at all nothing is
// written.
func (e *Engine) ReplaceServices(ctx context.Context, group string, names []string, recs []*svc.Record) error {
	script := false
	for _, r := range recs {
		svc.Normalize(r)
		script = script || r.Check.Probe().IsScript()
	}
	env, err := e.ServiceEnv(ctx, group, script)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := svc.ValidName("service name", name); err != nil {
			return err
		}
	}
	for _, r := range recs {
		if r.Check.Type == svc.TypeTTL {
			return fmt.Errorf("instance %s/%s: a ttl check needs Register, which gives it a lease: %w", r.Service, r.ID, errs.Invalid)
		}
		if err := svc.Validate(r, env); err != nil {
			return fmt.Errorf("instance %s/%s: %w", r.Service, r.ID, err)
		}
	}
	// What is there now: its statuses carry over, and the ttl instances
	// being replaced leave leases behind to revoke after.
	old := map[string]*svc.Record{}
	var leases []int64
	for _, name := range names {
		sts, _, err := e.Instances(ctx, group, name, ReadOpts{Consistency: Linearizable})
		if err != nil {
			return err
		}
		for _, st := range sts {
			old[svc.InstanceKey(st.Record.Service, st.Record.ID)] = st.Record
			if st.Record.Lease != 0 {
				leases = append(leases, st.Record.Lease)
			}
		}
	}
	t := &fsm.Txn{}
	for _, name := range names {
		t.Then = append(t.Then, fsm.Op{Type: fsm.OpDeletePrefix, Key: svc.ServicePrefix(name)},
			fsm.Op{Type: fsm.OpDeletePrefix, Key: svc.HeartbeatsPrefix + name + "/"})
	}
	now := time.Now()
	same := len(recs) == len(old)
	for _, r := range recs {
		key := svc.InstanceKey(r.Service, r.ID)
		prev := old[key]
		if prev != nil && svc.SameCheck(prev, r) && prev.Lease == 0 {
			r.Status, r.Output, r.LastCheckedMs, r.RegisteredMs = prev.Status, prev.Output, prev.LastCheckedMs, prev.RegisteredMs
		} else {
			r.InitialStatus(now)
			r.RegisteredMs = now.UnixMilli()
		}
		value, err := r.Encode()
		if err != nil {
			return err
		}
		if same && prev != nil {
			pv, err := prev.Encode()
			same = err == nil && string(pv) == string(value)
		} else {
			same = false
		}
		t.Then = append(t.Then, fsm.Op{Type: fsm.OpPut, Key: key, Value: value})
	}
	if len(t.Then) > fsm.MaxTxnOps {
		return fmt.Errorf("%d services with %d instances take %d writes, more than %d in one: %w",
			len(names), len(recs), len(t.Then), fsm.MaxTxnOps, errs.TooLarge)
	}
	if same {
		return nil
	}
	if _, err = e.ReservedTxn(ctx, group, t); err != nil {
		return err
	}
	for _, id := range leases {
		e.dropLease(group, id)
	}
	return nil
}

// Heartbeat renews a ttl instance: a keepalive of its lease, or, when the
// lease already expired, a new lease and heartbeat key (one write).
func (e *Engine) Heartbeat(ctx context.Context, group, service, id string) error {
	key := svc.InstanceKey(service, id)
	for attempt := range maxRegisterRetries {
		got, err := e.Get(ctx, group, key, ReadOpts{Consistency: Linearizable})
		if err != nil {
			return err
		}
		if !got.Found {
			return fmt.Errorf("instance %s/%s: %w", service, id, errs.NotFound)
		}
		r, err := svc.Decode(got.KV.Value)
		if err != nil {
			return err
		}
		if r.Check.Type != svc.TypeTTL {
			return fmt.Errorf("instance %s/%s has a %q check, not ttl: %w", service, id, r.Check.Type, errs.Invalid)
		}
		if _, err := e.KeepAlive(ctx, group, r.Lease); err == nil || !errors.Is(err, errs.LeaseNotFound) {
			return err
		}
		lease, err := e.GrantLease(ctx, group, r.Check.TTL)
		if err != nil {
			return err
		}
		r.Lease = lease
		value, err := r.Encode()
		if err != nil {
			return err
		}
		res, err := e.ReservedTxn(ctx, group, &fsm.Txn{
			Compares: []fsm.Compare{{Key: key, Target: fsm.TargetModRevision, Op: fsm.OpEqual, Int: got.KV.ModRevision}},
			Then: []fsm.Op{{Type: fsm.OpPut, Key: key, Value: value},
				{Type: fsm.OpPut, Key: svc.HeartbeatKey(service, id), Lease: lease}},
		})
		if err == nil && res.Succeeded {
			return nil
		}
		e.dropLease(group, lease)
		if err != nil {
			return err
		}
		if err := casBackoff(ctx, attempt); err != nil {
			return err
		}
	}
	return fmt.Errorf("instance %s/%s changed while heartbeating: %w", service, id, errs.Conflict)
}

// Instances reads the instances of one service ("" = every service),
// sorted by service and id, and the revision they were read at.
func (e *Engine) Instances(ctx context.Context, group, service string, o ReadOpts) ([]svc.Stored, int64, error) {
	prefix := svc.InstancesPrefix
	if service != "" {
		if err := svc.ValidName("service name", service); err != nil {
			return nil, 0, err
		}
		prefix = svc.ServicePrefix(service)
	}
	var out []svc.Stored
	q := fsm.ListQuery{Prefix: prefix, Limit: listPage}
	var rev int64
	for {
		lr, err := e.List(ctx, group, q, o)
		if err != nil {
			return nil, 0, err
		}
		if rev == 0 {
			rev = lr.Revision
			// Later pages must see the same state or newer: pin them.
			o.MinRevision = max(o.MinRevision, rev)
		}
		for _, kv := range lr.KVs {
			r, err := svc.Decode(kv.Value)
			if err != nil {
				return nil, 0, err
			}
			out = append(out, svc.Stored{Record: r, ModRevision: kv.ModRevision})
		}
		if !lr.More {
			return out, rev, nil
		}
		q.After = lr.KVs[len(lr.KVs)-1].Key
	}
}

// listPage is the page size of internal scans of the reserved namespace.
const listPage = 10000

// groupStore is a svc.Store over one shard, for the checker on its leader:
// one read of the reserved namespace, then the changes from the group's
// watch history.
type groupStore struct {
	e   *Engine
	sid uint64
}

func newGroupStore(e *Engine, sid uint64) *groupStore {
	return &groupStore{e: e, sid: sid}
}

func (g *groupStore) Generation() uint64 { return g.e.host.ReservedGeneration(g.sid) }

// Load lists the whole reserved namespace (instances and heartbeats) in
// one read, so both are as of the one revision it returns.
func (g *groupStore) Load(ctx context.Context) ([]svc.Stored, map[string]bool, int64, error) {
	g.e.checkLoads.Add(1)
	v, err := g.e.host.StaleRead(ctx, g.sid, fsm.ListQuery{Prefix: fsm.ReservedPrefix})
	if err != nil {
		return nil, nil, 0, err
	}
	res := v.(*fsm.ListResult)
	var out []svc.Stored
	beats := map[string]bool{}
	for _, kv := range res.KVs {
		switch {
		case strings.HasPrefix(kv.Key, svc.InstancesPrefix):
			r, err := svc.Decode(kv.Value)
			if err != nil {
				g.e.log.Warn("skipping corrupt instance record", "key", kv.Key, "err", err)
				continue
			}
			out = append(out, svc.Stored{Record: r, ModRevision: kv.ModRevision})
		case strings.HasPrefix(kv.Key, svc.HeartbeatsPrefix):
			beats[kv.Key] = true
		}
	}
	return out, beats, res.Revision, nil
}

// Changes reads the events after revision after from the group's history
// (what its watches read), keeping those of instances and heartbeats.
func (g *groupStore) Changes(ctx context.Context, after int64) ([]svc.Change, int64, error) {
	var out []svc.Change
	from := after + 1
	for {
		v, err := g.e.host.StaleRead(ctx, g.sid, fsm.EventsQuery{From: from, Limit: eventsPage})
		if err != nil {
			return nil, 0, err
		}
		res := v.(*fsm.EventsResult)
		for _, ev := range res.Events {
			ch := svc.Change{Key: ev.KV.Key, Revision: ev.Revision, Deleted: ev.Type == fsm.EventDelete}
			switch {
			case strings.HasPrefix(ch.Key, svc.InstancesPrefix):
				if !ch.Deleted {
					if ch.Record, err = svc.Decode(ev.KV.Value); err != nil {
						g.e.log.Warn("skipping corrupt instance record", "key", ch.Key, "err", err)
						continue
					}
				}
			case !strings.HasPrefix(ch.Key, svc.HeartbeatsPrefix):
				continue
			}
			out = append(out, ch)
		}
		if !res.More || len(res.Events) == 0 {
			return out, res.Revision, nil
		}
		from = res.Events[len(res.Events)-1].Revision + 1
	}
}

func (g *groupStore) hook(key, status string) {
	if h := g.e.checkWriteHook.Load(); h != nil {
		(*h)(key, status)
	}
}

func (g *groupStore) Update(ctx context.Context, r *svc.Record, modRev int64) (int64, error) {
	value, err := r.Encode()
	if err != nil {
		return 0, err
	}
	key := svc.InstanceKey(r.Service, r.ID)
	g.hook(key, r.Status)
	res, err := g.e.txn(ctx, g.sid, &fsm.Txn{
		Compares: []fsm.Compare{{Key: key, Target: fsm.TargetModRevision, Op: fsm.OpEqual, Int: modRev}},
		Then:     []fsm.Op{{Type: fsm.OpPut, Key: key, Value: value}},
	})
	if err != nil {
		return 0, err
	}
	if !res.Succeeded {
		return 0, fmt.Errorf("instance %s/%s is no longer at revision %d: %w", r.Service, r.ID, modRev, errs.Conflict)
	}
	return res.Revision, nil
}

func (g *groupStore) Remove(ctx context.Context, r *svc.Record, modRev int64) error {
	key := svc.InstanceKey(r.Service, r.ID)
	g.hook(key, "")
	res, err := g.e.txn(ctx, g.sid, &fsm.Txn{
		Compares: []fsm.Compare{{Key: key, Target: fsm.TargetModRevision, Op: fsm.OpEqual, Int: modRev}},
		Then:     []fsm.Op{{Type: fsm.OpDelete, Key: key}, {Type: fsm.OpDelete, Key: svc.HeartbeatKey(r.Service, r.ID)}},
	})
	if err != nil {
		return err
	}
	if !res.Succeeded {
		return fmt.Errorf("instance %s/%s is no longer at revision %d: %w", r.Service, r.ID, modRev, errs.Conflict)
	}
	return nil
}

// ServiceCounts returns each service of group with its instance count,
// sorted by name.
func ServiceCounts(instances []svc.Stored) (names []string, counts map[string]int) {
	counts = map[string]int{}
	for _, s := range instances {
		if counts[s.Record.Service] == 0 {
			names = append(names, s.Record.Service)
		}
		counts[s.Record.Service]++
	}
	sort.Strings(names)
	return names, counts
}

// newProber is the engine's one prober, shared by the checkers of every
// group it leads so that the concurrency bound holds per server.
func newProber(cfg Config) (*health.Prober, error) {
	targets, err := health.ParseTargets(cfg.CheckTargets)
	if err != nil {
		return nil, err
	}
	return health.NewProber(health.Options{OutputBody: cfg.CheckOutputBody, Targets: targets}), nil
}
