package shard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lni/dragonboat/v4"
	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
)

// StartShard starts this host's replica of shardID. A replica that exists
// on disk restarts from it and initial/join are ignored; otherwise it
// bootstraps with initial (replica id -> Raft address) or, with join, waits
// as a non-voter to be contacted by the shard's leader after it was added as
// one. Starting a running shard is a no-op.
func (h *Host) StartShard(shardID uint64, initial map[uint64]string, join bool) error {
	if h.closed.Load() {
		return errs.Closed
	}
	if h.Running(shardID) {
		return nil
	}
	if h.nh.HasNodeInfo(shardID, h.cfg.NodeID) {
		initial, join = nil, false
	} else {
		h.mu.Lock()
		err := h.setLearner(shardID, join)
		h.mu.Unlock()
		if err != nil {
			return fmt.Errorf("start shard %d: record role: %w", shardID, err)
		}
	}
	dir := h.stateDir(shardID)
	// dragonboat calls create while it registers the replica, and knows
	// the replica once StartOnDiskReplica returns: in between, requests
	// wait on registered (see waitRegistered).
	registered := make(chan struct{})
	defer func() {
		h.mu.Lock()
		if h.registering[shardID] == registered {
			delete(h.registering, shardID)
		}
		h.mu.Unlock()
		close(registered)
	}()
	create := func(shardID, replicaID uint64) sm.IOnDiskStateMachine {
		m := fsm.New(dir, fsm.Options{SessionHorizon: h.cfg.SessionHorizon, EventRetention: h.cfg.EventRetention, Shared: h.shared, Shard: shardID})
		a := &machine{m: m, shardID: shardID, onApply: h.cfg.OnApply, closed: make(chan struct{})}
		if hook := h.closeHook.Load(); hook != nil {
			a.onClose = *hook
		}
		h.mu.Lock()
		h.machines[shardID] = m
		h.closing[shardID] = a.closed
		h.registering[shardID] = registered
		h.mu.Unlock()
		if hook := h.startHook.Load(); hook != nil {
			(*hook)(shardID)
		}
		return a
	}
	cfg := h.shardConfig(shardID, h.isLearner(shardID))
	err := h.nh.StartOnDiskReplica(initial, join, create, cfg)
	// A replica stopped a moment ago may still be closing.
	for i := 0; errors.Is(err, dragonboat.ErrShardAlreadyExist) && !h.Running(shardID) && i < 500; i++ {
		time.Sleep(10 * time.Millisecond)
		err = h.nh.StartOnDiskReplica(initial, join, create, cfg)
	}
	if errors.Is(err, dragonboat.ErrShardAlreadyExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("start shard %d: %w", shardID, translate(err))
	}
	return nil
}

// SetStartHook makes every replica this host starts from now on run hook
// (its shard id) once its state machine exists, before the engine knows
// the replica (dragonboat holds its NodeHost lock meanwhile); nil removes
// it. Tests only.
func (h *Host) SetStartHook(hook func(shardID uint64)) {
	if hook == nil {
		h.startHook.Store(nil)
		return
	}
	h.startHook.Store(&hook)
}

// waitRegistered handles err, an engine error of a request for shardID:
// when it is ErrShardNotFound while a StartShard call is registering the
// replica (its state machine exists, the engine does not know it yet), it
// waits until that call returned and reports true (try again), or returns
// ctx's error. Otherwise it reports false at once: the replica does not
// run here, stopped, or applied its own removal.
func (h *Host) waitRegistered(ctx context.Context, shardID uint64, err error) (bool, error) {
	if !errors.Is(err, dragonboat.ErrShardNotFound) {
		return false, nil
	}
	h.mu.Lock()
	registered := h.registering[shardID]
	h.mu.Unlock()
	if registered == nil {
		return false, nil
	}
	select {
	case <-registered:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}
