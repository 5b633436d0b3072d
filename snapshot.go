package dister

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/dister/dister/internal/backup"
	"github.com/dister/dister/internal/cluster"
	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
)

// SnapshotFormat is the version of the snapshot file format this dister
// writes and restores; a file of another version is refused (ErrInvalid)
// with a message naming both.
const SnapshotFormat = backup.Version

// RestoreRevisionGap is how far above a snapshot's revision each restored
// group's revision continues. The watch history is not carried: a watch
// that resumes from any revision up to the restored one ends with
// ErrCompacted, also one that saw writes the old cluster made after the
// snapshot (as long as they were fewer than this gap), so a watcher never
// silently misses a change or sees one revision carry two meanings.
const RestoreRevisionGap = cluster.RevisionGap

// SnapshotInfo describes a snapshot: one consistent backup of the whole
// cluster (the groups and settings of the catalog, and every group's keys,
// leases and service instances, each group at one revision).
type SnapshotInfo struct {
	Format  int
	Created time.Time
	Groups  []SnapshotGroup
	// EstimatedBytes is what the saving server expected the file to weigh.
	EstimatedBytes int64
	Bytes          int64  // the whole file
	SHA256         string // hex: the hash at the end of the file
}

// SnapshotGroup is one group of a snapshot.
type SnapshotGroup struct {
	Name      string
	Revision  int64 // every record of the group is as of this revision
	Keys      int64 // client keys
	Instances int64 // service instances
	Leases    int64
	Bytes     int64 // of its records in the file
}

func snapshotInfo(i core.SnapshotInfo) SnapshotInfo {
	out := SnapshotInfo{Format: i.Format, Created: i.Created, EstimatedBytes: i.EstimatedBytes, Bytes: i.Bytes, SHA256: i.SHA256}
	for _, g := range i.Groups {
		out.Groups = append(out.Groups, SnapshotGroup(g))
	}
	return out
}

// Snapshot writes one consistent snapshot of the whole cluster to w, as it
// reads it (memory stays flat whatever the size). Each group is saved at
// one revision that includes every write acknowledged before the call;
// writes go on while it runs, held up by nothing longer than one Raft
// round. Leases are saved with the time they had left; servers' addresses
// are not saved. A client-role Node streams the file from a server. The
// Node's RequestTimeout does not apply: bound the call with ctx.
func (n *Node) Snapshot(ctx context.Context, w io.Writer) (SnapshotInfo, error) {
	i, err := n.e.Snapshot(ctx, w)
	if err != nil {
		return snapshotInfo(i), fmt.Errorf("snapshot: %w", err)
	}
	return snapshotInfo(i), nil
}

// InspectSnapshot reads a whole snapshot from r and checks it: the format
// version, its structure and the SHA-256 at its end. It returns what the
// file holds, and an error matching ErrInvalid if any check failed (the
// info then holds what was read before). onHeader, if not nil, is called
// as soon as the header was read (groups and revisions, the estimated
// size; no counts yet), for a progress bar.
func InspectSnapshot(ctx context.Context, r io.Reader, onHeader func(SnapshotInfo)) (SnapshotInfo, error) {
	var hook func(core.SnapshotInfo)
	if onHeader != nil {
		hook = func(i core.SnapshotInfo) { onHeader(snapshotInfo(i)) }
	}
	i, _, err := cluster.ReadBackup(ctx, r, hook, backup.Visitor{})
	return snapshotInfo(i), err
}

// Restore seeds o.DataDir with the snapshot in file, for one server of a
// NEW cluster: each of the new cluster's servers restores the same file
// with the same InitialMembers (o as Open will get it: NodeID, DataDir,
// RaftAddr, PeerAddr, InitialMembers; empty InitialMembers = a cluster of
// this server alone), then starts with Open as usual. The new cluster has
// the snapshot's groups, settings, keys (with their create and mod
// revisions and versions), leases (counting down from what they had left
// at the snapshot once a leader runs) and service instances; its servers
// and their addresses are the new ones. Revisions continue
// RestoreRevisionGap above the snapshot's.
//
// The whole file is checked first: a file whose SHA-256 does not match,
// that is cut short, or of another format version is refused with
// ErrInvalid and nothing is written. A DataDir that already holds a server
// is refused too. file must be a regular file: it is read twice (to check,
// then to write), and a file whose content changed between the two reads
// is refused with what was written removed. If writing fails midway, what was written is removed.
func Restore(ctx context.Context, file string, o Options) (SnapshotInfo, error) {
	// A restore only writes the data dir: the transport rule (TLS off
	// loopback) is checked when the server is opened on it.
	if o.TLS == nil {
		o.InsecureTransport = true
	}
	if err := o.validate(); err != nil {
		return SnapshotInfo{}, err
	}
	if o.Join || o.NodeID == 0 {
		return SnapshotInfo{}, fmt.Errorf("dister.Restore: a restore needs a NodeID and no Join (it seeds a new cluster): %w", errs.Invalid)
	}
	initial := make(map[uint64]cluster.Peer, len(o.InitialMembers))
	for id, p := range o.InitialMembers {
		initial[id] = cluster.Peer{RaftAddr: p.RaftAddr, PeerAddr: p.PeerAddr}
	}
	i, err := cluster.Restore(ctx, file, cluster.Config{NodeID: o.NodeID, DataDir: o.DataDir, RaftAddr: o.RaftAddr,
		PeerAddr: o.PeerAddr, InitialMembers: initial})
	if err != nil {
		return snapshotInfo(i), fmt.Errorf("dister.Restore: %w", err)
	}
	return snapshotInfo(i), nil
}
