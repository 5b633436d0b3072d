package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
)

// The catalog is ordinary keys in the system shard, written with CAS
// transactions, so it gets the state machine's atomicity and snapshots.
const (
	groupPrefix   = "group/"   // + name -> groupRecord JSON
	serverPrefix  = "server/"  // + %020d id -> Peer JSON
	leavingPrefix = "leaving/" // + %020d id -> Peer JSON: a removal under way (see removal.go)
	removedPrefix = "removed/" // + %020d id -> Peer JSON or "" (ids are never reused)
	keyNextShard  = "meta/next_shard"
	keyNextServer = "meta/next_server"
	// keyRemovals changes with every removal decided, so that two removals
	// decided at once cannot both pass the live-majority check (see
	// removal.go): the second one's write fails and it checks again.
	keyRemovals = "meta/removals"
	keySettings = "setting/cluster" // -> Settings JSON
	flagsPrefix = "flags/"          // + %020d id -> serverFlags JSON
)

// serverFlags are a server's own settings that other servers must know:
// each server records its own at start.
type serverFlags struct {
	// ScriptChecks: started with EnableScriptChecks, so it runs script
	// and custom checks of the groups it leads (if the cluster setting
	// allows them too).
	ScriptChecks bool `json:"script_checks"`
	// GroupCommit: it applies batch entries (several writes in one Raft
	// entry). Writes are batched once every server records it.
	GroupCommit bool `json:"group_commit"`
}

// groupRecord is one group's catalog entry. Members are the voters of the
// system shard when the group was created: those servers bootstrap the
// group's shard together, every other server joins it later.
type groupRecord struct {
	Shard   uint64            `json:"shard"`
	Members map[uint64]string `json:"members"`
}

// catalog is a decoded view of the system shard.
type catalog struct {
	revision int64
	groups   map[string]groupRecord
	servers  map[uint64]Peer // leaving servers stay here until removed
	leaving  map[uint64]Peer // removals under way
	removed  map[uint64]Peer // removed servers with their last addresses (zero if unknown)
	settings Settings
	flags    map[uint64]serverFlags
	// nextShardRev is the mod revision of the group counter: it changes
	// with every group created.
	nextShardRev int64
	// removalsRev is the mod revision of keyRemovals (0 when unset).
	removalsRev int64
}

func serverKey(id uint64) string  { return fmt.Sprintf("%s%020d", serverPrefix, id) }
func leavingKey(id uint64) string { return fmt.Sprintf("%s%020d", leavingPrefix, id) }
func removedKey(id uint64) string { return fmt.Sprintf("%s%020d", removedPrefix, id) }
func flagsKey(id uint64) string   { return fmt.Sprintf("%s%020d", flagsPrefix, id) }

var groupName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// ValidGroupName reports whether name can name a group.
func ValidGroupName(name string) error {
	if !groupName.MatchString(name) {
		return fmt.Errorf("group name %q: want 1-64 of [A-Za-z0-9_.-], starting with a letter or digit: %w", name, errs.Invalid)
	}
	return nil
}

// readCatalog reads the whole catalog from the system shard.
func (e *Engine) readCatalog(ctx context.Context, c Consistency) (*catalog, error) {
	v, err := e.readShard(ctx, SystemShard, fsm.ListQuery{}, ReadOpts{Consistency: c})
	if err != nil {
		return nil, err
	}
	lr := v.(*fsm.ListResult)
	cat := &catalog{
		revision: lr.Revision,
		groups:   map[string]groupRecord{},
		servers:  map[uint64]Peer{},
		leaving:  map[uint64]Peer{},
		removed:  map[uint64]Peer{},
		flags:    map[uint64]serverFlags{},
	}
	for _, kv := range lr.KVs {
		switch {
		case strings.HasPrefix(kv.Key, groupPrefix):
			var g groupRecord
			if err := json.Unmarshal(kv.Value, &g); err != nil {
				return nil, fmt.Errorf("catalog entry %q: %w", kv.Key, err)
			}
			cat.groups[strings.TrimPrefix(kv.Key, groupPrefix)] = g
		case strings.HasPrefix(kv.Key, serverPrefix):
			id, _ := strconv.ParseUint(strings.TrimPrefix(kv.Key, serverPrefix), 10, 64)
			var p Peer
			if err := json.Unmarshal(kv.Value, &p); err != nil {
				return nil, fmt.Errorf("catalog entry %q: %w", kv.Key, err)
			}
			cat.servers[id] = p
		case kv.Key == keySettings:
			if err := json.Unmarshal(kv.Value, &cat.settings); err != nil {
				return nil, fmt.Errorf("catalog entry %q: %w", kv.Key, err)
			}
		case strings.HasPrefix(kv.Key, leavingPrefix):
			id, _ := strconv.ParseUint(strings.TrimPrefix(kv.Key, leavingPrefix), 10, 64)
			var p Peer
			_ = json.Unmarshal(kv.Value, &p) // the addresses only help; absent is fine
			cat.leaving[id] = p
		case strings.HasPrefix(kv.Key, removedPrefix):
			id, _ := strconv.ParseUint(strings.TrimPrefix(kv.Key, removedPrefix), 10, 64)
			var p Peer
			_ = json.Unmarshal(kv.Value, &p) // "" in catalogs written before removal steps
			cat.removed[id] = p
		case strings.HasPrefix(kv.Key, flagsPrefix):
			id, _ := strconv.ParseUint(strings.TrimPrefix(kv.Key, flagsPrefix), 10, 64)
			var f serverFlags
			_ = json.Unmarshal(kv.Value, &f) // unreadable = no flags
			cat.flags[id] = f
		case kv.Key == keyNextShard:
			cat.nextShardRev = kv.ModRevision
		case kv.Key == keyRemovals:
			cat.removalsRev = kv.ModRevision
		}
	}
	return cat, nil
}

// counter reads a catalog counter and its mod revision (0 when unset).
func (e *Engine) counter(ctx context.Context, key string, min uint64) (uint64, int64, error) {
	v, err := e.readShard(ctx, SystemShard, fsm.GetQuery{Key: key}, ReadOpts{Consistency: Linearizable})
	if err != nil {
		return 0, 0, err
	}
	r := v.(*fsm.GetResult)
	if !r.Found {
		return min, 0, nil
	}
	n, err := strconv.ParseUint(string(r.KV.Value), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("catalog counter %s: %w", key, err)
	}
	return max(n, min), r.KV.ModRevision, nil
}

// resolve maps a group name to its shard, waiting (within ctx) for this
// server to start a shard that the catalog has but this server has not yet
// started.
func (e *Engine) resolve(ctx context.Context, name string) (uint64, error) {
	if name == "" || name == DefaultGroup {
		return DefaultShard, nil
	}
	e.mu.Lock()
	rec, ok := e.groups[name]
	e.mu.Unlock()
	if ok && e.host.Running(rec.Shard) {
		return rec.Shard, nil
	}
	if err := ValidGroupName(name); err != nil {
		return 0, fmt.Errorf("%w: %w", errs.GroupNotFound, err)
	}
	v, err := e.readShard(ctx, SystemShard, fsm.GetQuery{Key: groupPrefix + name}, ReadOpts{Consistency: Linearizable})
	if err != nil {
		return 0, err
	}
	r := v.(*fsm.GetResult)
	if !r.Found {
		return 0, fmt.Errorf("group %q: %w", name, errs.GroupNotFound)
	}
	// A fresh record: rec may be a copy of the local catalog's, whose
	// Members map Unmarshal would write into (a data race with the
	// reconcile pass reading it, found by -race in CI).
	rec = groupRecord{}
	if err := json.Unmarshal(r.KV.Value, &rec); err != nil {
		return 0, fmt.Errorf("catalog entry for group %q: %w", name, err)
	}
	if err := e.waitSettled(ctx, func() bool { return e.host.Running(rec.Shard) }); err != nil {
		return 0, fmt.Errorf("group %q not started here yet: %w", name, err)
	}
	return rec.Shard, nil
}

// waitSettled runs reconcile passes until cond holds or ctx ends.
func (e *Engine) waitSettled(ctx context.Context, cond func() bool) error {
	for {
		e.mu.Lock()
		settled := e.settled
		e.mu.Unlock()
		if cond() {
			return nil
		}
		e.kick()
		select {
		case <-settled:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// CreateGroup adds a group to the catalog and returns once this server
// runs its shard and the shard has a leader.
func (e *Engine) CreateGroup(ctx context.Context, name string) error {
	if err := ValidGroupName(name); err != nil {
		return err
	}
	if name == DefaultGroup {
		return fmt.Errorf("group %q always exists: %w", name, errs.Conflict)
	}
	var rec groupRecord
	for {
		next, nextRev, err := e.counter(ctx, keyNextShard, firstFreeShard)
		if err != nil {
			return err
		}
		m, err := e.host.Membership(ctx, SystemShard)
		if err != nil {
			return err
		}
		cat, err := e.readCatalog(ctx, Linearizable)
		if err != nil {
			return err
		}
		rec = groupRecord{Shard: next, Members: map[uint64]string{}}
		for id, addr := range m.Voters {
			// A server on its way out does not bootstrap new groups; a
			// removal that started after this read sees the group (it
			// compares the group counter) and takes the server out of it.
			_, leaving := cat.leaving[id]
			_, removed := cat.removed[id]
			if !leaving && !removed {
				rec.Members[id] = addr
			}
		}
		val, _ := json.Marshal(rec)
		res, err := e.txn(ctx, SystemShard, &fsm.Txn{
			Compares: []fsm.Compare{
				{Key: groupPrefix + name, Target: fsm.TargetCreateRevision, Op: fsm.OpEqual, Int: 0},
				{Key: keyNextShard, Target: fsm.TargetModRevision, Op: fsm.OpEqual, Int: nextRev},
			},
			Then: []fsm.Op{
				{Type: fsm.OpPut, Key: groupPrefix + name, Value: val},
				{Type: fsm.OpPut, Key: keyNextShard, Value: []byte(strconv.FormatUint(next+1, 10))},
			},
		})
		if err != nil {
			return err
		}
		if res.Succeeded {
			break
		}
		g, err := e.readShard(ctx, SystemShard, fsm.GetQuery{Key: groupPrefix + name}, ReadOpts{Consistency: Linearizable})
		if err != nil {
			return err
		}
		if g.(*fsm.GetResult).Found {
			return fmt.Errorf("group %q exists: %w", name, errs.Conflict)
		}
		// Another group took the shard id; try the next one.
	}
	if err := e.waitSettled(ctx, func() bool { return e.host.Running(rec.Shard) }); err != nil {
		return err
	}
	return e.host.WaitFirstLeader(ctx, rec.Shard)
}

// DeleteGroup removes a group from the catalog; every server stops its
// shard and deletes its data. It returns once this server has.
func (e *Engine) DeleteGroup(ctx context.Context, name string) error {
	if name == DefaultGroup {
		return fmt.Errorf("group %q cannot be deleted: %w", name, errs.Invalid)
	}
	if err := ValidGroupName(name); err != nil {
		return fmt.Errorf("%w: %w", errs.GroupNotFound, err)
	}
	var rec groupRecord
	for {
		v, err := e.readShard(ctx, SystemShard, fsm.GetQuery{Key: groupPrefix + name}, ReadOpts{Consistency: Linearizable})
		if err != nil {
			return err
		}
		r := v.(*fsm.GetResult)
		if !r.Found {
			return fmt.Errorf("group %q: %w", name, errs.GroupNotFound)
		}
		rec = groupRecord{} // nothing of an earlier try's read
		if err := json.Unmarshal(r.KV.Value, &rec); err != nil {
			return fmt.Errorf("catalog entry for group %q: %w", name, err)
		}
		res, err := e.txn(ctx, SystemShard, &fsm.Txn{
			Compares: []fsm.Compare{{Key: groupPrefix + name, Target: fsm.TargetModRevision, Op: fsm.OpEqual, Int: r.KV.ModRevision}},
			Then:     []fsm.Op{{Type: fsm.OpDelete, Key: groupPrefix + name}},
		})
		if err != nil {
			return err
		}
		if res.Succeeded {
			break
		}
		// Deleted (or deleted and created again) meanwhile: look again.
	}
	// The group leaves the local view before its shard stops and its data
	// goes: wait for both.
	// By shard, not by name: the name may already be a new group's
	// (created again at once), which the wait by name took for the old one
	// until ctx ended, on a delete that was done.
	if err := e.waitSettled(ctx, func() bool {
		e.mu.Lock()
		now, known := e.groups[name]
		e.mu.Unlock()
		return (!known || now.Shard != rec.Shard) && !e.host.HasData(rec.Shard)
	}); err != nil {
		return err
	}
	e.waitGoneElsewhere(ctx, name, rec.Shard)
	return nil
}

// goneWait bounds how long DeleteGroup waits for the other servers.
const goneWait = 5 * time.Second

// waitGoneElsewhere waits until every other server that answers has
// dropped group name on shard from its view (its own reconcile pass, moments after
// it applied the deletion): until then it would still answer requests for
// the group, so a client that deleted a group could read it again through
// another server. A server that does not answer is not waited for, and
// the wait ends after goneWait, or with ctx: the deletion is committed
// either way.
func (e *Engine) waitGoneElsewhere(ctx context.Context, name string, shard uint64) {
	ctx, cancel := context.WithTimeout(ctx, goneWait)
	defer cancel()
	e.mu.Lock()
	var addrs []string
	for id, p := range e.servers {
		if id != e.cfg.NodeID {
			addrs = append(addrs, p.PeerAddr)
		}
	}
	e.mu.Unlock()
	for _, addr := range addrs {
		for ctx.Err() == nil {
			var t peer.Topology
			cctx, cancelCall := context.WithTimeout(ctx, time.Second)
			err := e.peers.Call(cctx, addr, peer.OpTopology, nil, &t)
			cancelCall()
			// A server of an earlier version reports no shard: by name.
			if err != nil || !slices.ContainsFunc(t.Groups, func(g peer.GroupState) bool {
				return g.Name == name && (g.Shard == shard || g.Shard == 0)
			}) {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

// Groups lists every group's name, sorted; "default" is always there.
func (e *Engine) Groups(ctx context.Context) ([]string, error) {
	cat, err := e.readCatalog(ctx, Linearizable)
	if err != nil {
		return nil, err
	}
	names := []string{DefaultGroup}
	for n := range cat.groups {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}
