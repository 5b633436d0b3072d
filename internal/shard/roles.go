package shard

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// A replica that joined its shard as a non-voter must be started with
// config.IsNonVoting at every start, also after it was promoted: started as
// a voter it panics when the log replays the config change that added it as
// a non-voter, and started as a non-voter it becomes a voter again when the
// promotion is replayed or restored from a snapshot (dragonboat's rule). The
// engine cannot read a shard's log before starting it, so the host keeps the
// set of shards it joined as a non-voter in a file of its own.

const learnersFile = "learners.json"

func (h *Host) learnersPath() string { return filepath.Join(h.cfg.DataDir, "raft", learnersFile) }

// loadLearners reads the persisted set (missing file = none).
func (h *Host) loadLearners() error {
	data, err := os.ReadFile(h.learnersPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", h.learnersPath(), err)
	}
	var ids []uint64
	if err := json.Unmarshal(data, &ids); err != nil {
		return fmt.Errorf("%s is damaged: %w", h.learnersPath(), err)
	}
	for _, id := range ids {
		h.learners[id] = true
	}
	return nil
}

// setLearner records whether shardID joined as a non-voter here; the caller
// holds h.mu. The file is replaced atomically and synced.
func (h *Host) setLearner(shardID uint64, on bool) error {
	if h.learners[shardID] == on {
		return nil
	}
	if on {
		h.learners[shardID] = true
	} else {
		delete(h.learners, shardID)
	}
	ids := make([]uint64, 0, len(h.learners))
	for id := range h.learners {
		ids = append(ids, id)
	}
	data, _ := json.Marshal(ids)
	tmp := h.learnersPath() + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, h.learnersPath())
}

func (h *Host) isLearner(shardID uint64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.learners[shardID]
}
