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

// checkLoop runs one svc.Checker for each group this server leads, and
// stops it when leadership moves: checks run on the group leader only.
func (e *Engine) checkLoop() {
	defer close(e.checkDone)
	type running struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	checkers := map[uint64]running{}
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
			ctx, cancel := context.WithCancel(e.life)
			r := running{cancel: cancel, done: make(chan struct{})}
			checkers[sid] = r
			c := svc.NewChecker(svc.CheckerConfig{Store: newGroupStore(e, sid), Prober: e.prober.Lane(),
				Logger: e.log.With("shard", sid), Damping: e.cfg.CheckDamping,
				NotRun: func() { e.notRun.Add(1) }})
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer close(r.done)
				c.Run(ctx)
			}()
		}
	}
}

// ProbesNotRun counts the probes of this server's checkers that could not
// run (script checks not enabled here, no free probe slot in time).
func (e *Engine) ProbesNotRun() uint64 { return e.notRun.Load() }
