package shard

import (
	"errors"
	"io"
	"sync"

	sm "github.com/lni/dragonboat/v4/statemachine"

	"github.com/dister/dister/internal/fsm"
)

// machine adapts fsm.StateMachine to dragonboat's IOnDiskStateMachine.
type machine struct {
	m       *fsm.StateMachine
	shardID uint64
	onApply func(shardID uint64)
	buf     []fsm.Entry // reused across Update calls; Update is never concurrent
	// closed is closed once Close returned: dragonboat closes a stopped
	// replica's state machine on a worker of its own, after the replica
	// already counts as stopped (see Host.RemoveShardData).
	closed    chan struct{}
	closeOnce sync.Once
	onClose   func(shardID uint64) // test hook, may be nil
}

var _ sm.IOnDiskStateMachine = (*machine)(nil)

func (a *machine) Open(stop <-chan struct{}) (uint64, error) {
	i, err := a.m.Open(stop)
	if errors.Is(err, fsm.ErrStopped) {
		return 0, sm.ErrOpenStopped
	}
	return i, err
}

func (a *machine) Update(entries []sm.Entry) ([]sm.Entry, error) {
	a.buf = a.buf[:0]
	for _, e := range entries {
		a.buf = append(a.buf, fsm.Entry{Index: e.Index, Cmd: e.Cmd})
	}
	out, err := a.m.Update(a.buf)
	if err != nil {
		return nil, err
	}
	for i := range entries {
		entries[i].Result = sm.Result{Value: out[i].Result.Value, Data: out[i].Result.Data}
		// Entry.Cmd belongs to dragonboat; nothing may keep it.
		a.buf[i] = fsm.Entry{}
	}
	if a.onApply != nil {
		a.onApply(a.shardID)
	}
	return entries, nil
}

func (a *machine) Lookup(q any) (any, error)     { return a.m.Lookup(q) }
func (a *machine) Sync() error                   { return a.m.Sync() }
func (a *machine) PrepareSnapshot() (any, error) { return a.m.PrepareSnapshot() }
func (a *machine) Close() error {
	if a.onClose != nil {
		a.onClose(a.shardID)
	}
	err := a.m.Close()
	a.closeOnce.Do(func() { close(a.closed) })
	return err
}
func (a *machine) SaveSnapshot(ctx any, w io.Writer, stop <-chan struct{}) error {
	return snapshotErr(a.m.SaveSnapshot(ctx, w, stop))
}
func (a *machine) RecoverFromSnapshot(r io.Reader, stop <-chan struct{}) error {
	if err := a.m.RecoverFromSnapshot(r, stop); err != nil {
		return snapshotErr(err)
	}
	// The state jumped ahead without an Update: whoever follows the applies
	// (the watch fan-out) must look now, not at the next write.
	if a.onApply != nil {
		a.onApply(a.shardID)
	}
	return nil
}

// snapshotErr tells dragonboat that a snapshot was cut short by a stop, not
// broken.
func snapshotErr(err error) error {
	if errors.Is(err, fsm.ErrStopped) {
		return sm.ErrSnapshotStopped
	}
	return err
}
