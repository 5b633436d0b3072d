package cluster

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/dister/dister/internal/backup"
	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/shard"
)

// RevisionGap is how far above a backup's revision a restored group's
// revision starts (etcd's advice for its own restores): a watcher of the
// old cluster that saw writes made after the backup resumes below the
// restored history and gets ErrCompacted, instead of seeing other writes
// under revisions it already had.
const RevisionGap = 1_000_000_000

// restoredFile lists, in DataDir, the shards a restore seeded whose Raft
// log still starts at index 1: until each has compacted its log, a replica
// that joins would be sent that log, which does not hold the restored
// state. Open compacts them and removes the file.
const restoredFile = "dister-restored.json"

type restoredShards struct {
	Shards []uint64 `json:"shards"`
}

// Restore seeds cfg.DataDir, which must hold no server yet, with the
// backup in path, for a server of a new cluster whose servers are
// cfg.InitialMembers (this one alone when empty). Every server of the new
// cluster restores the same file with the same members, then starts as
// usual. The file is checked whole (its SHA-256 included) before anything
// is written; a failure while writing removes what was written.
func Restore(ctx context.Context, path string, cfg Config) (core.SnapshotInfo, error) {
	if cfg.NodeID == 0 || cfg.DataDir == "" || cfg.RaftAddr == "" {
		return core.SnapshotInfo{}, fmt.Errorf("restore: NodeID, DataDir and RaftAddr are required: %w", errs.Invalid)
	}
	members := map[uint64]string{}
	for id, p := range cfg.InitialMembers {
		members[id] = p.RaftAddr
	}
	if len(members) == 0 {
		members[cfg.NodeID] = cfg.RaftAddr
	}
	if addr, ok := members[cfg.NodeID]; !ok || addr != cfg.RaftAddr {
		return core.SnapshotInfo{}, fmt.Errorf("restore: InitialMembers must list NodeID %d with RaftAddr %q: %w", cfg.NodeID, cfg.RaftAddr, errs.Invalid)
	}
	for _, sub := range []string{identityFile, "raft", "state", restoredFile} {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, sub)); err == nil {
			return core.SnapshotInfo{}, fmt.Errorf("restore: %s already holds a server (%s): a restore seeds a new one: %w", cfg.DataDir, sub, errs.Invalid)
		}
	}

	// Both passes read one open file, and the second must hash as the
	// first did: a file replaced or rewritten meanwhile (a scheduled save
	// renaming a new backup into place) must not be restored as a mix of
	// two backups, the second one unchecked.
	f, err := os.Open(path)
	if err != nil {
		return core.SnapshotInfo{}, fmt.Errorf("restore: %v: %w", err, errs.Invalid)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return core.SnapshotInfo{}, fmt.Errorf("restore: %s is not a regular file (a restore reads it twice: once to check it, once to write): %w", path, errs.Invalid)
	}
	// First pass: check the whole file, writing nothing.
	info, h, err := ReadBackup(ctx, f, nil, backup.Visitor{})
	if err != nil {
		return info, fmt.Errorf("restore: %s: %w", path, err)
	}
	if err := checkGroups(h.Groups); err != nil {
		return info, err
	}

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return info, fmt.Errorf("restore: %v: %w", err, errs.Invalid)
	}
	stateDir := filepath.Join(cfg.DataDir, "state")
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(stateDir)
			_ = os.Remove(filepath.Join(cfg.DataDir, restoredFile))
		}
	}()
	if err := seedCatalog(cfg.DataDir, h, members); err != nil {
		return info, err
	}
	// Second pass: seed every group.
	var cur *fsm.Seeder
	var curRev int64
	defer func() {
		if cur != nil {
			cur.Abort()
		}
	}()
	finish := func() error {
		if cur == nil {
			return nil
		}
		err := cur.Finish(curRev + RevisionGap)
		cur = nil
		return err
	}
	n := 0
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return info, fmt.Errorf("restore: %s: %v: %w", path, err, errs.Invalid)
	}
	second, _, err := ReadBackup(ctx, f, nil, backup.Visitor{
		Group: func(g backup.Group) error {
			if err := finish(); err != nil {
				return err
			}
			s, err := fsm.NewSeeder(shard.StateDir(cfg.DataDir, g.Shard))
			if err != nil {
				return err
			}
			cur, curRev = s, g.Revision
			return nil
		},
		Record: func(k, v []byte) error {
			if n++; n%4096 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			return cur.Add(k, v)
		},
	})
	if err == nil && second.SHA256 != info.SHA256 {
		err = fmt.Errorf("%s changed while it was restored (SHA-256 %s, then %s): %w", path, info.SHA256, second.SHA256, errs.Invalid)
	}
	if err == nil {
		err = finish()
	}
	if err != nil {
		return info, fmt.Errorf("restore: %w", err)
	}
	shards := []uint64{SystemShard}
	for _, g := range h.Groups {
		shards = append(shards, g.Shard)
	}
	if err := writeRestored(cfg.DataDir, shards); err != nil {
		return info, err
	}
	ok = true
	return info, nil
}

// checkGroups refuses group lists a cluster could not have written.
func checkGroups(gs []backup.Group) error {
	if len(gs) == 0 || gs[0].Name != DefaultGroup || gs[0].Shard != DefaultShard {
		return fmt.Errorf("restore: the backup does not start with group %q: %w", DefaultGroup, errs.Invalid)
	}
	shards := map[uint64]bool{}
	for i, g := range gs {
		// A revision near the top of int64 would wrap negative a few
		// writes after the restore (the counter goes on from it).
		bad := g.Revision < 0 || g.Revision > 1<<62
		if i > 0 {
			if err := ValidGroupName(g.Name); err != nil {
				return fmt.Errorf("restore: %w", err)
			}
			bad = bad || g.Shard < firstFreeShard || shards[g.Shard]
			shards[g.Shard] = true
		}
		if bad {
			return fmt.Errorf("restore: group %q has shard %d / revision %d, which no cluster writes: %w", g.Name, g.Shard, g.Revision, errs.Invalid)
		}
	}
	return nil
}

// seedCatalog writes the system shard of the new cluster: the backup's
// groups, bootstrapped by the new members, and its settings. The servers
// record themselves once they run, as in any new cluster.
func seedCatalog(dataDir string, h backup.Header, members map[uint64]string) error {
	s, err := fsm.NewSeeder(shard.StateDir(dataDir, SystemShard))
	if err != nil {
		return err
	}
	next := firstFreeShard
	for _, g := range h.Groups[1:] {
		rec, _ := json.Marshal(groupRecord{Shard: g.Shard, Members: members})
		if err = s.Put(groupPrefix+g.Name, rec, 1); err != nil {
			break
		}
		next = max(next, g.Shard+1)
	}
	if err == nil {
		err = s.Put(keyNextShard, []byte(strconv.FormatUint(next, 10)), 1)
	}
	if err == nil {
		st, _ := json.Marshal(h.Settings)
		err = s.Put(keySettings, st, 1)
	}
	if err == nil {
		err = s.Finish(1)
	}
	if err != nil {
		s.Abort()
		return fmt.Errorf("restore: catalog: %w", err)
	}
	return nil
}

// ReadBackup reads and checks a whole backup from r (see backup.Read);
// onHeader, if set, learns the header as soon as it was read.
func ReadBackup(ctx context.Context, r io.Reader, onHeader func(core.SnapshotInfo), v backup.Visitor) (core.SnapshotInfo, backup.Header, error) {
	group := v.Group
	v.Group = func(g backup.Group) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if group != nil {
			return group(g)
		}
		return nil
	}
	if onHeader != nil {
		v.Header = func(h backup.Header) error {
			onHeader(infoOf(h, nil, backup.Summary{}))
			return nil
		}
	}
	h, stats, sum, err := backup.Read(r, v)
	return infoOf(h, stats, sum), h, err
}

func infoOf(h backup.Header, stats []backup.Stats, sum backup.Summary) core.SnapshotInfo {
	info := core.SnapshotInfo{Format: h.Format, Created: h.Created, EstimatedBytes: h.EstimatedBytes, Bytes: sum.Bytes}
	if sum.SHA256 != nil {
		info.SHA256 = hex.EncodeToString(sum.SHA256)
	}
	for i, g := range h.Groups {
		sg := core.SnapshotGroup{Name: g.Name, Revision: g.Revision}
		if i < len(stats) {
			st := stats[i]
			sg.Keys, sg.Instances, sg.Leases, sg.Bytes = st.Keys, st.Instances, st.Leases, st.Bytes
		}
		info.Groups = append(info.Groups, sg)
	}
	return info
}

func writeRestored(dataDir string, shards []uint64) error {
	path := filepath.Join(dataDir, restoredFile)
	if len(shards) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", path, err)
		}
		return nil
	}
	b, _ := json.Marshal(restoredShards{Shards: shards})
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return fmt.Errorf("write %s: %v: %w", tmp, err, errs.Invalid)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %v: %w", path, err, errs.Invalid)
	}
	return nil
}

// compactRestored runs after a start from restored data: each restored
// shard compacts its Raft log once, so a server that joins later gets the
// state rather than a log that never held it. Until then the file stays;
// a restart tries again.
func (e *Engine) compactRestored() {
	defer close(e.restoreDone)
	path := filepath.Join(e.cfg.DataDir, restoredFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var rs restoredShards
	if err := json.Unmarshal(b, &rs); err != nil {
		e.log.Warn("restored shards: unreadable", "file", path, "err", err)
		return
	}
	left := rs.Shards
	for len(left) > 0 {
		var still []uint64
		for _, sid := range left {
			if !e.host.HasData(sid) {
				continue // a group deleted meanwhile
			}
			if !e.host.Running(sid) {
				still = append(still, sid)
				continue
			}
			ctx, cancel := context.WithTimeout(e.life, 10*time.Second)
			err := e.host.CompactLog(ctx, sid)
			cancel()
			if err != nil {
				e.log.Debug("restored shard: compact log", "shard", sid, "err", err)
				still = append(still, sid)
			}
		}
		if len(still) != len(left) {
			if err := writeRestored(e.cfg.DataDir, still); err != nil {
				e.log.Warn("restored shards", "err", err)
			}
		}
		left = still
		if len(left) == 0 {
			return
		}
		select {
		case <-e.life.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}
