package fsm

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// pebble counts every memtable against the block cache it is given (a
// reservation the size of the memtable): a cache the size of a memtable
// held no block at all once the memtables had grown to full size. The
// store's cache leaves room for the memtables besides its blocks.
func TestBlockCacheBesideMemtables(t *testing.T) {
	const memTable, cacheBytes = 4 << 20, 1 << 20
	st, err := openSharedOn(vfs.Default, t.TempDir(), cacheBytes, newPacer(pacedRate), memTable)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	value := bytes.Repeat([]byte{1}, 1024)
	const keys = 12 << 10 // 12 MiB: the memtables grow to their full 4 MiB
	for i := range keys {
		if err := st.db.Set(fmt.Appendf(nil, "k%08d", i), value, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.db.Flush(); err != nil {
		t.Fatal(err)
	}
	read := func() {
		for i := range 256 { // the first 256 keys: a few blocks, in tables
			v, closer, err := st.db.Get(fmt.Appendf(nil, "k%08d", i))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(v, value) {
				t.Fatal("wrong value")
			}
			closer.Close()
		}
	}
	read()
	before := st.db.Metrics().BlockCache
	read()
	after := st.db.Metrics().BlockCache
	if after.Size == 0 || after.Hits-before.Hits < 256 {
		t.Fatalf("block cache holds %d bytes, %d hits in 256 reads of cached keys", after.Size, after.Hits-before.Hits)
	}
}
