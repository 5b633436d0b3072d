package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/dister/dister"
)

func newSnapshotCmd(c *client) *cobra.Command {
	s := parentCmd("snapshot", "Back up a cluster to a file, check a file, restore a new cluster from it")
	var noProgress bool
	save := &cobra.Command{
		Use:   "save FILE",
		Short: "Save one consistent snapshot of the whole cluster (REST GET /v1/snapshot) into FILE",
		Long: `Save one consistent snapshot of the whole cluster into FILE: every group's
keys, leases and service instances (each group at one revision) and the
catalog's groups and settings. The file is written as FILE.*.part (a new file), checked
(its SHA-256 included) and renamed to FILE only once complete. A progress
bar goes to stderr. --timeout bounds the wait for the daemon's first answer,
not the transfer.`,
		Args: exactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return c.saveSnapshot(cmd.Context(), args[0], !noProgress)
		}),
	}
	save.Flags().BoolVar(&noProgress, "no-progress", false, "no progress bar on stderr")

	status := &cobra.Command{
		Use:   "status FILE",
		Short: "Check a snapshot file and print its groups, counts, revisions and size",
		Args:  exactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("snapshot status: %w", err)
			}
			defer f.Close()
			info, err := dister.InspectSnapshot(cmd.Context(), f, nil)
			if perr := c.printSnapshot(args[0], info, err == nil); perr != nil {
				return perr
			}
			if err != nil {
				return fmt.Errorf("snapshot status %s: %w", args[0], err)
			}
			return nil
		}),
	}

	var r struct {
		dataDir, raftAddr, peerAddr string
		nodeID                      uint64
		members                     []string
	}
	d := defaultServerConfig()
	restore := &cobra.Command{
		Use:   "restore FILE --data-dir DIR --node-id N --initial-member ID=RAFT,PEER ...",
		Short: "Seed the data dir of one server of a NEW cluster from a snapshot file",
		Long: `Seed --data-dir (empty or absent) of one server of a new cluster from a
snapshot file. Run it on every server of the new cluster with the same FILE
and the same --initial-member list, then start each with "dister server"
and the same flags as any first start. The whole file is checked first: a
damaged file or one of another format version is refused and nothing is
written. Revisions continue 1,000,000,000 above the snapshot's. Without
--initial-member the new cluster is this server alone, at --raft-addr and
--peer-addr.`,
		Args: exactArgs(1),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			members, err := parseMembers(r.members)
			if err != nil {
				return usagef("%v", err)
			}
			o := dister.Options{NodeID: r.nodeID, DataDir: r.dataDir, RaftAddr: r.raftAddr, PeerAddr: r.peerAddr, InitialMembers: members}
			if p, ok := members[r.nodeID]; ok {
				o.RaftAddr, o.PeerAddr = p.RaftAddr, p.PeerAddr
			}
			if o.NodeID == 0 {
				return usagef("--node-id is required")
			}
			info, err := dister.Restore(cmd.Context(), args[0], o)
			if err != nil {
				return fmt.Errorf("snapshot restore: %w", err)
			}
			if c.json() {
				return c.printSnapshot(args[0], info, true)
			}
			_, err = fmt.Fprintf(c.stdout, "restored %s into %s as server %d of a new cluster: %d groups; start it with \"dister server --data-dir %s\" and the same addresses and --initial-member entries\n",
				args[0], r.dataDir, r.nodeID, len(info.Groups), r.dataDir)
			return err
		}),
	}
	f := restore.Flags()
	f.StringVar(&r.dataDir, "data-dir", "", "data dir of the new server (must be empty or absent)")
	f.Uint64Var(&r.nodeID, "node-id", 0, "this server's id in the new cluster, > 0")
	f.StringArrayVar(&r.members, "initial-member", nil, "`ID=RAFTADDR,PEERADDR` of a server of the new cluster, this one included (repeatable)")
	f.StringVar(&r.raftAddr, "raft-addr", d.RaftAddr, "Raft address of this server when it is not in --initial-member")
	f.StringVar(&r.peerAddr, "peer-addr", d.PeerAddr, "peer address of this server when it is not in --initial-member")
	_ = restore.MarkFlagRequired("data-dir")

	s.AddCommand(save, status, restore)
	return s
}

// saveSnapshot streams GET /v1/snapshot into file, checking it as it goes.
func (c *client) saveSnapshot(ctx context.Context, file string, progress bool) error {
	req, err := http.NewRequestWithContext(ctx, "GET", c.baseURL()+"/v1/snapshot", nil)
	if err != nil {
		return fmt.Errorf("bad --addr %q: %w", c.addr, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	// --timeout bounds the wait for the answer, not the transfer.
	tr := c.transport()
	tr.ResponseHeaderTimeout = c.timeout
	hc := &http.Client{Transport: tr}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the dister daemon at %s: %w", c.addr, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return fmt.Errorf("snapshot save: %w", c.answerError(resp.StatusCode, data))
	}
	// A new file of its own (O_EXCL, mode 0600) next to FILE: a fixed name
	// would follow a symlink planted there, or be shared by two saves.
	out, err := os.CreateTemp(filepath.Dir(file), filepath.Base(file)+".*.part")
	if err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	part := out.Name()
	ok := false
	defer func() {
		if !ok {
			_ = out.Close()
			_ = os.Remove(part)
		}
	}()
	var sink io.Writer = out
	var bar *progressbar.ProgressBar
	if progress {
		bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(c.stderr),
			progressbar.OptionSetDescription("snapshot"),
			progressbar.OptionShowBytes(true),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(c.stderr) }),
		)
		sink = io.MultiWriter(out, bar)
	}
	info, err := dister.InspectSnapshot(ctx, io.TeeReader(resp.Body, sink), func(h dister.SnapshotInfo) {
		if bar != nil && h.EstimatedBytes > 0 {
			bar.ChangeMax64(h.EstimatedBytes)
		}
	})
	if bar != nil {
		if err == nil {
			bar.ChangeMax64(info.Bytes)
			_ = bar.Finish()
		} else {
			fmt.Fprintln(c.stderr)
		}
	}
	if err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	if err := os.Rename(part, file); err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	ok = true
	return c.printSnapshot(file, info, true)
}

// snapshotJSON is how -o json prints a snapshot's description.
type snapshotJSON struct {
	File    string              `json:"file"`
	Format  int                 `json:"format"`
	Created time.Time           `json:"created"`
	Bytes   int64               `json:"bytes"`
	SHA256  string              `json:"sha256"`
	HashOK  bool                `json:"hash_ok"`
	Groups  []snapshotGroupJSON `json:"groups"`
}

type snapshotGroupJSON struct {
	Name      string `json:"name"`
	Revision  int64  `json:"revision"`
	Keys      int64  `json:"keys"`
	Instances int64  `json:"instances"`
	Leases    int64  `json:"leases"`
	Bytes     int64  `json:"bytes"`
}

func (c *client) printSnapshot(file string, info dister.SnapshotInfo, hashOK bool) error {
	if c.json() {
		j := snapshotJSON{File: file, Format: info.Format, Created: info.Created, Bytes: info.Bytes, SHA256: info.SHA256, HashOK: hashOK, Groups: []snapshotGroupJSON{}}
		for _, g := range info.Groups {
			j.Groups = append(j.Groups, snapshotGroupJSON(g))
		}
		b, _ := json.Marshal(j)
		return c.printJSON(b)
	}
	check := "ok"
	if !hashOK {
		check = "FAILED"
	}
	fmt.Fprintf(c.stdout, "file     %s\nformat   %d\ncreated  %s\nsize     %d bytes\nsha256   %s (%s)\n",
		file, info.Format, info.Created.Format(time.RFC3339), info.Bytes, info.SHA256, check)
	fmt.Fprintf(c.stdout, "%-24s %12s %10s %10s %8s %12s\n", "GROUP", "REVISION", "KEYS", "INSTANCES", "LEASES", "BYTES")
	for _, g := range info.Groups {
		fmt.Fprintf(c.stdout, "%-24s %12d %10d %10d %8d %12d\n", g.Name, g.Revision, g.Keys, g.Instances, g.Leases, g.Bytes)
	}
	return nil
}
