package cluster

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/svc"
)

// Settings are the cluster-wide settings, kept in the catalog.
type Settings = core.Settings

// Settings reads the cluster settings (linearizable).
func (e *Engine) Settings(ctx context.Context) (Settings, error) {
	v, err := e.readShard(ctx, SystemShard, fsm.GetQuery{Key: keySettings}, ReadOpts{Consistency: Linearizable})
	if err != nil {
		return Settings{}, err
	}
	var s Settings
	if r := v.(*fsm.GetResult); r.Found {
		if err := json.Unmarshal(r.KV.Value, &s); err != nil {
			return Settings{}, err
		}
	}
	return s, nil
}

// SetSettings replaces the cluster settings. Every server applies them on
// its next reconcile pass, which the commit itself triggers.
func (e *Engine) SetSettings(ctx context.Context, s Settings) error {
	val, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = e.txn(ctx, SystemShard, &fsm.Txn{Then: []fsm.Op{{Type: fsm.OpPut, Key: keySettings, Value: val}}})
	if err == nil {
		// Apply locally now rather than at the next pass.
		e.prober.SetAllowScript(s.ScriptChecks && e.cfg.EnableScriptChecks)
	}
	return err
}

// checkTick is how often the engine looks for groups it started or
// stopped leading.
const checkTick = 100 * time.Millisecond

// checkLoop runs one svc.Checker for each group this server leads that
// holds services, and stops it when leadership moves: checks run on the
// group leader only. A group without services costs no goroutine: the loop
// looks into its reserved namespace once, and again only when the local
// replica's reserved generation moved (a registration, a snapshot loaded).
func (e *Engine) checkLoop() {
	defer close(e.checkDone)
	type running struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	checkers := map[uint64]running{}
	// empty: the reserved generation at which a led group was found
	// without services.
	empty := map[uint64]uint64{}
	var wg sync.WaitGroup
	defer func() {
		for _, r := range checkers {
			r.cancel()
		}
		wg.Wait()
		_ = e.prober.Close()
	}()
	t := time.NewTicker(checkTick)
	defer t.Stop()
	for {
		select {
		case <-e.life.Done():
			return
		case <-t.C:
		}
		shards := e.host.Shards()
		for sid, r := range checkers {
			leader, _ := e.host.Leader(sid)
			if leader != e.cfg.NodeID || !slices.Contains(shards, sid) {
				r.cancel()
				<-r.done
				delete(checkers, sid)
			}
		}
		for sid := range empty {
			if leader, _ := e.host.Leader(sid); leader != e.cfg.NodeID || !slices.Contains(shards, sid) {
				delete(empty, sid)
			}
		}
		for _, sid := range shards {
			if sid == SystemShard {
				continue
			}
			if _, ok := checkers[sid]; ok {
				continue
			}
			if leader, _ := e.host.Leader(sid); leader != e.cfg.NodeID {
				continue
			}
			// The generation is read before the look, so a registration
			// that the look missed moves it and brings another look.
			gen := e.host.ReservedGeneration(sid)
			if g, ok := empty[sid]; ok && g == gen {
				continue
			}
			if has, err := e.hasServices(sid); err != nil || !has {
				if err == nil {
					empty[sid] = gen
				}
				continue
			}
			delete(empty, sid)
			ctx, cancel := context.WithCancel(e.life)
			r := running{cancel: cancel, done: make(chan struct{})}
			checkers[sid] = r
			c := svc.NewChecker(svc.CheckerConfig{Store: newGroupStore(e, sid), Prober: e.prober.Lane(),
				Logger: e.log.With("shard", sid), Damping: e.cfg.CheckDamping,
				NotRun: func() { e.notRun.Add(1) }})
			wg.Add(1)
			e.checkers.Add(1)
			go func() {
				defer wg.Done()
				defer e.checkers.Add(-1)
				defer close(r.done)
				c.Run(ctx)
			}()
		}
	}
}

// hasServices tells whether the local replica of sid holds any reserved
// key (service instances, heartbeats).
func (e *Engine) hasServices(sid uint64) (bool, error) {
	ctx, cancel := context.WithTimeout(e.life, time.Second)
	defer cancel()
	v, err := e.host.StaleRead(ctx, sid, fsm.ListQuery{Prefix: fsm.ReservedPrefix, Limit: 1})
	if err != nil {
		return false, err
	}
	return len(v.(*fsm.ListResult).KVs) > 0, nil
}

// Checkers is how many service checkers this server runs (one per led
// group that holds services).
func (e *Engine) Checkers() int { return int(e.checkers.Load()) }

// ProbesNotRun counts the probes of this server's checkers that could not
// run (script checks not enabled here, no free probe slot in time).
func (e *Engine) ProbesNotRun() uint64 { return e.notRun.Load() }
