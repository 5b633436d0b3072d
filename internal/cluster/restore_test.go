package cluster

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/dister/dister/internal/backup"
	"github.com/dister/dister/internal/errs"
)

// craftBackup writes a valid backup whose groups are the default group and
// extra (no records).
func craftBackup(t *testing.T, defaultRev int64, extra ...backup.Group) []byte {
	t.Helper()
	var buf bytes.Buffer
	groups := append([]backup.Group{{Name: DefaultGroup, Shard: DefaultShard, Revision: defaultRev}}, extra...)
	w, err := backup.NewWriter(&buf, backup.Header{Created: time.Now().UTC(), Groups: groups})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range groups {
		if err := w.Group(g.Name); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestRestoreFileChangedBetweenPasses: Restore checks the whole file, then
// reads it again to write. Before the fix it opened the path twice, so a
// file replaced in between (a scheduled save renaming a new backup into
// place, an in-place rewrite; here a named pipe that gives one backup,
// then another) was restored as a mix: the catalog of the first (group
// "alpha") with the groups of the second (group "beta" seeded into a shard
// no catalog names), never checked. The restore must be refused with
// nothing written.
func TestRestoreFileChangedBetweenPasses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := craftBackup(t, 5, backup.Group{Name: "alpha", Shard: firstFreeShard, Revision: 3})
	b := craftBackup(t, 7, backup.Group{Name: "beta", Shard: firstFreeShard + 5, Revision: 2})
	dir := t.TempDir()
	fifo := filepath.Join(dir, "backup.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	dataDir := filepath.Join(dir, "data")
	writerDone := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i, data := range [][]byte{a, b} {
			if i == 1 {
				// The check is over (its reader closed) once the catalog
				// is being seeded: give the second read another backup.
				for {
					if _, err := os.Stat(filepath.Join(dataDir, "state")); err == nil {
						break
					}
					select {
					case <-stop:
						return
					case <-time.After(time.Millisecond):
					}
				}
			}
			// O_NONBLOCK fails with ENXIO until a reader opened the pipe.
			var f *os.File
			for {
				var err error
				f, err = os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0)
				if err == nil {
					break
				}
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
			_ = syscall.SetNonblock(int(f.Fd()), false)
			_, _ = f.Write(data)
			_ = f.Close()
		}
	}()
	defer func() { close(stop); <-writerDone }()

	_, err := Restore(ctx, fifo, Config{NodeID: 1, DataDir: dataDir, RaftAddr: "127.0.0.1:1"})
	if !errors.Is(err, errs.Invalid) {
		t.Errorf("restore of a file that changed between the check and the write: %v, want ErrInvalid", err)
	}
	if ents, _ := os.ReadDir(dataDir); len(ents) != 0 {
		var names []string
		_ = filepath.Walk(dataDir, func(p string, info os.FileInfo, _ error) error {
			if info != nil && info.IsDir() && filepath.Base(filepath.Dir(p)) == "state" {
				names = append(names, filepath.Base(p))
			}
			return nil
		})
		t.Errorf("the refused restore wrote into the data dir: state of %v", names)
	}
}

// TestRestoreRevisionOverflow: a crafted file (valid SHA-256) whose default
// group is at a revision the gap would overflow, or near enough to the top
// that a few writes after the restore would wrap it negative (found in
// review: the fourth write was acknowledged at revision -2^63 and the
// server could not open the group again), is refused with nothing written.
func TestRestoreRevisionOverflow(t *testing.T) {
	for _, rev := range []int64{1<<63 - 1, 1<<63 - 1 - RevisionGap - 3, 1<<62 + 1, -1} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		dir := t.TempDir()
		p := filepath.Join(dir, "b.snap")
		if err := os.WriteFile(p, craftBackup(t, rev), 0o600); err != nil {
			t.Fatal(err)
		}
		dataDir := filepath.Join(dir, "data")
		_, err := Restore(ctx, p, Config{NodeID: 1, DataDir: dataDir, RaftAddr: "127.0.0.1:1"})
		if !errors.Is(err, errs.Invalid) {
			t.Errorf("restore at revision %d: %v, want ErrInvalid", rev, err)
		}
		if ents, _ := os.ReadDir(dataDir); len(ents) != 0 {
			t.Errorf("the refused restore at revision %d left %d entries in the data dir", rev, len(ents))
		}
	}
}

// TestRestoreFileRewrittenBetweenPasses: a regular file rewritten in place
// once the check is over. Whichever pass sees the rewrite, the restore is
// either refused with nothing written or holds the first backup alone
// (group "alpha" in shard 3, never shard 8 of the second).
func TestRestoreFileRewrittenBetweenPasses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := craftBackup(t, 5, backup.Group{Name: "alpha", Shard: firstFreeShard, Revision: 3})
	b := craftBackup(t, 7, backup.Group{Name: "beta", Shard: firstFreeShard + 5, Revision: 2})
	dir := t.TempDir()
	p := filepath.Join(dir, "b.snap")
	if err := os.WriteFile(p, a, 0o600); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(dir, "data")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if _, err := os.Stat(filepath.Join(dataDir, "state")); err == nil {
				_ = os.WriteFile(p, b, 0o600) // truncates and rewrites the same inode
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err := Restore(ctx, p, Config{NodeID: 1, DataDir: dataDir, RaftAddr: "127.0.0.1:1"})
	cancel()
	<-done
	_, alpha := os.Stat(filepath.Join(dataDir, "state", "shard-3"))
	_, beta := os.Stat(filepath.Join(dataDir, "state", "shard-8"))
	switch {
	case err == nil && (alpha != nil || beta == nil):
		t.Errorf("restore succeeded with alpha's shard: %v, beta's shard: %v", alpha, beta)
	case err != nil && !errors.Is(err, errs.Invalid):
		t.Errorf("restore: %v, want ErrInvalid", err)
	case err != nil:
		if _, serr := os.Stat(filepath.Join(dataDir, "state")); serr == nil {
			t.Errorf("the refused restore (%v) left the state dir", err)
		}
	}
}
