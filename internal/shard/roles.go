package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lni/dragonboat/v4"
)

// dragonboat needs to be told at every start whether a replica is a
// non-voter (config.IsNonVoting): a replica that joins as a non-voter and is
// started as a voter panics when the config change naming it arrives, and
// one promoted to voter but restarted as a non-voter never campaigns. The
// engine cannot read a shard's membership before starting it, so the host
// keeps the set of shards it runs as a non-voter in a file of its own.

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

// setLearner records whether shardID runs as a non-voter here; the caller
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

// SyncRoles brings the recorded roles in line with the shards' real ones:
// a promoted non-voter is recorded as a voter, and a replica running as a
// non-voter that its shard's membership lists as a voter (promoted just
// before a crash) is restarted as a voter.
func (h *Host) SyncRoles(ctx context.Context) error {
	h.mu.Lock()
	n := len(h.learners)
	h.mu.Unlock()
	if n == 0 || h.closed.Load() {
		return nil
	}
	info := h.nh.GetNodeHostInfo(dragonboat.NodeHostInfoOption{SkipLogInfo: true})
	for _, si := range info.ShardInfoList {
		if !h.isLearner(si.ShardID) {
			continue
		}
		if !si.IsNonVoting {
			h.mu.Lock()
			err := h.setLearner(si.ShardID, false)
			h.mu.Unlock()
			if err != nil {
				return err
			}
			continue
		}
		m, err := h.Membership(ctx, si.ShardID)
		if err != nil {
			return err
		}
		if _, voter := m.Voters[h.cfg.NodeID]; !voter {
			continue
		}
		h.mu.Lock()
		err = h.setLearner(si.ShardID, false)
		h.mu.Unlock()
		if err != nil {
			return err
		}
		if err := h.StopShard(si.ShardID); err != nil {
			return err
		}
		if err := h.StartShard(si.ShardID, nil, false); err != nil {
			return err
		}
	}
	return nil
}
