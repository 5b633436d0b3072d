package fsm

// The layout of a replica that had a pebble database of its own (before
// the Shared store, and what a restore still seeds), and its import into
// the store.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// Files of a replica that had a database of its own (before the Shared
// store, and what a restore seeds): the pebble database lives in a
// numbered subdirectory of dir named by the CURRENT file. Open imports it
// into the store and removes it.
const (
	currentFile = "CURRENT"
	dbDirPrefix = "db-"
)

func dbDirName(gen uint64) string { return dbDirPrefix + strconv.FormatUint(gen, 10) }

// importLegacy copies the database of dir into generation gen of st,
// switches the shard to it, and removes the database: CURRENT first, so a
// crash before that imports it again and one after finds only leftovers.
func (s *StateMachine) importLegacy(st *Shared, gen uint64) (*space, error) {
	old, _, err := readCurrent(s.dir)
	if err != nil {
		return nil, err
	}
	if err := removeStale(s.dir, old); err != nil {
		return nil, err
	}
	db, err := openPebble(vfs.Default, filepath.Join(s.dir, dbDirName(old)), nil, legacyMemTableSize, true, false)
	if err != nil {
		return nil, err
	}
	sp := st.space(s.shard, gen)
	err = sp.clear()
	if err == nil {
		err = copyAll(db, sp)
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = st.switchGen(s.shard, gen)
	}
	if err == nil {
		err = st.Sync()
	}
	if err != nil {
		return nil, fmt.Errorf("open: import %s: %w", s.dir, err)
	}
	if err := os.Remove(filepath.Join(s.dir, currentFile)); err != nil {
		return nil, fmt.Errorf("open: import %s: %w", s.dir, err)
	}
	if err := syncDir(s.dir); err != nil {
		return nil, fmt.Errorf("open: import %s: %w", s.dir, err)
	}
	// Leftovers only now; the next Open removes what stays. The directory
	// goes too when nothing else is in it (a store of its own is).
	_ = removeStale(s.dir, 0)
	_ = os.Remove(s.dir)
	return sp, nil
}

// legacyMemTableSize is the memtable of a replica's own database (a
// legacy one, a restore's seed).
const legacyMemTableSize = 16 << 20

// copyAll writes every key of db into sp, in batches.
func copyAll(db *pebble.DB, sp *space) error {
	it := db.NewIter(nil)
	b := sp.NewBatch()
	defer func() { _ = b.Close() }()
	for valid := it.First(); valid; valid = it.Next() {
		if err := b.Set(it.Key(), it.Value(), nil); err != nil {
			_ = it.Close()
			return err
		}
		if b.Len() >= recoverBatchSize {
			if err := b.Commit(pebble.NoSync); err != nil {
				_ = it.Close()
				return err
			}
			_ = b.Close()
			b = sp.NewBatch()
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	return b.Commit(pebble.NoSync)
}

// readCurrent returns the database generation named by CURRENT; fresh is
// true when there is no CURRENT yet (a new replica).
func readCurrent(dir string) (gen uint64, fresh bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, currentFile))
	if errors.Is(err, os.ErrNotExist) {
		return 1, true, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read %s: %w", currentFile, err)
	}
	name := strings.TrimSpace(string(b))
	gen, err = strconv.ParseUint(strings.TrimPrefix(name, dbDirPrefix), 10, 64)
	if err != nil || !strings.HasPrefix(name, dbDirPrefix) || gen == 0 {
		return 0, false, fmt.Errorf("corrupt %s %q", currentFile, name)
	}
	return gen, false, nil
}

// writeCurrent points CURRENT at generation gen, atomically and durably.
func writeCurrent(dir string, gen uint64) error {
	tmp := filepath.Join(dir, currentFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("write %s: %w", currentFile, err)
	}
	_, err = f.WriteString(dbDirName(gen) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, currentFile))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", currentFile, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// removeStale deletes database directories other than generation keep: the
// leftovers of a recovery that crashed before or after switching CURRENT.
func removeStale(dir string, keep uint64) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if name == currentFile+".tmp" || (strings.HasPrefix(name, dbDirPrefix) && name != dbDirName(keep)) {
			if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("remove stale %s: %w", name, err)
			}
		}
	}
	return nil
}
