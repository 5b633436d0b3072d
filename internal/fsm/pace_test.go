package fsm

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// fakeClock is a pacer's clock and sleep: a sleep moves the clock.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept time.Duration
	naps  int
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) sleep(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.slept += d
	c.naps++
}

func (c *fakeClock) total() (time.Duration, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.slept, c.naps
}

// pacedOnMem is a pacer on a fake clock for a real (in-memory) database,
// and the paced file system over the same memory.
func pacedOnMem(t *testing.T, rate float64) (*pacer, *fakeClock, vfs.FS, *pebble.DB) {
	t.Helper()
	mem := vfs.NewMem()
	// No compactions of its own: a test that builds level 0 up must find
	// it as it left it.
	db, err := pebble.Open("db", &pebble.Options{FS: mem, Logger: quietLogger{}, DisableAutomaticCompactions: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	clock := &fakeClock{t: time.Unix(1000, 0)}
	p := newPacer(rate)
	p.now, p.sleep = clock.now, clock.sleep
	p.memTableBytes = math.MaxUint64 // what the memtables hold is not the point here
	p.db.Store(db)
	if err := mem.MkdirAll("out", 0o750); err != nil {
		t.Fatal(err)
	}
	return p, clock, pacedFS{FS: mem, p: p}, db
}

func writeFile(t *testing.T, fs vfs.FS, name string, n, chunk int) {
	t.Helper()
	f := createFile(t, fs, name)
	writeChunks(t, f, n, chunk)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func createFile(t *testing.T, fs vfs.FS, name string) vfs.File {
	t.Helper()
	f, err := fs.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// writeChunks writes n bytes to f in writes of chunk bytes.
func writeChunks(t *testing.T, f vfs.File, n, chunk int) {
	t.Helper()
	buf := bytes.Repeat([]byte{7}, chunk)
	for written := 0; written < n; written += chunk {
		if _, err := f.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
}

// A table is written at the pace; other files, and tables while there is a
// reason to hurry, are not held at all.
func TestPacedTables(t *testing.T) {
	const rate = 1 << 20
	p, clock, fs, _ := pacedOnMem(t, rate)

	writeFile(t, fs, "out/000001.sst", 4<<20, 64<<10)
	slept, naps := clock.total()
	// 4 MiB at 1 MiB/s: 4 s, less the time of the last chunk's share that
	// the last write need not wait for.
	if slept < 4*time.Second-time.Second/16 || slept > 4*time.Second {
		t.Fatalf("4 MiB table at 1 MiB/s slept %v, want about 4s", slept)
	}
	if naps < int(4*time.Second/pacedMaxSleep)-8 {
		t.Fatalf("slept in %d naps, want naps of at most %v", naps, pacedMaxSleep)
	}

	for _, c := range []struct {
		name  string
		file  string
		setup func() func()
	}{
		{"not a table", "out/000002.log", func() func() { return func() {} }},
		{"MANIFEST", "out/MANIFEST-000003", func() func() { return func() {} }},
		{"write stall", "out/000004.sst", func() func() {
			p.stalled.Add(1)
			return func() { p.stalled.Add(-1) }
		}},
		{"rushed", "out/000005.sst", p.rush},
		{"store not open", "out/000006.sst", func() func() {
			db := p.db.Swap(nil)
			return func() { p.db.Store(db) }
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before, _ := clock.total()
			undo := c.setup()
			defer undo()
			writeFile(t, fs, c.file, 4<<20, 64<<10)
			if after, _ := clock.total(); after != before {
				t.Fatalf("slept %v, want no pacing", after-before)
			}
		})
	}
}

// Pacing is lifted once pebble's own metrics say its background work is
// behind: here level 0 holds more sublevels than the pacer allows.
func TestPacingLiftedWhenBehind(t *testing.T) {
	p, clock, fs, db := pacedOnMem(t, 1<<20)
	p.l0Trigger = 1
	for i := range 2 {
		// The same key twice: the two tables overlap, each is a sublevel.
		if err := db.Set([]byte("k"), fmt.Appendf(nil, "v%d", i), pebble.NoSync); err != nil {
			t.Fatal(err)
		}
		if err := db.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	if n := db.Metrics().Levels[0].Sublevels; n != 2 {
		t.Fatalf("level 0 has %d sublevels, want 2 for this test", n)
	}
	writeFile(t, fs, "out/000001.sst", 1<<20, 64<<10)
	if slept, _ := clock.total(); slept != 0 {
		t.Fatalf("slept %v with level 0 behind, want no pacing", slept)
	}
	p.l0Trigger = 8
	clock.sleep(pacedCheckEvery) // the next write reads the metrics again
	before, _ := clock.total()
	writeFile(t, fs, "out/000002.sst", 1<<20, 64<<10)
	if after, _ := clock.total(); after-before < time.Second/2 {
		t.Fatalf("slept %v once level 0 is within bounds, want about 1s", after-before)
	}
}

// A pace far slower than the writes never stops them: pebble stalls
// writes when its memtables are full, and a stall lifts the pacing, so
// the flush behind it runs at full speed.
func TestPacedStoreKeepsWriting(t *testing.T) {
	dir := t.TempDir()
	p := newPacer(64 << 10) // a 1 MiB memtable's tables would take 10 s or more
	var mu sync.Mutex
	var naps int
	p.sleep = func(d time.Duration) {
		mu.Lock()
		naps++
		mu.Unlock()
		time.Sleep(d)
	}
	st, err := openSharedOn(vfs.Default, dir, 1<<20, p, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	value := bytes.Repeat([]byte{1}, 1024)
	for i := range 16 << 10 { // 16 MiB: 16 memtables
		if ctx.Err() != nil {
			t.Fatalf("%d writes done in 60s: paced flushes held the writes", i)
		}
		if err := st.db.Set(fmt.Appendf(nil, "k%08d", i), value, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if naps == 0 {
		t.Fatal("no table was paced")
	}
}

// signalPaced makes p sleep for real and signal its first sleep on the
// channel returned.
func signalPaced(p *pacer) <-chan struct{} {
	paced := make(chan struct{}, 1)
	p.sleep = func(d time.Duration) {
		select {
		case paced <- struct{}{}:
		default:
		}
		time.Sleep(d)
	}
	return paced
}

// Close does not wait for a paced flush at its pace.
func TestCloseRushesPacedFlush(t *testing.T) {
	dir := t.TempDir()
	p := newPacer(1 << 10) // 1 KiB/s: a flush of a 256 KiB memtable takes minutes
	// Close's flush queues a memtable behind the paced one, which would
	// lift the pacing too; Close must not depend on it (its memtable may
	// be empty).
	p.memTableBytes = math.MaxUint64
	paced := signalPaced(p)
	const memTable = 256 << 10
	st, err := openSharedOn(vfs.Default, dir, 1<<20, p, memTable)
	if err != nil {
		t.Fatal(err)
	}
	value := bytes.Repeat([]byte{1}, 1024)
	// Past the first memtable, not past the second: its flush starts,
	// paced, with no memtable queued behind it. (pebble's memtables start
	// at 256 KiB and double up to MemTableSize; it flushes once the full
	// memtables hold MemTableSize.)
	const writes = 300
	for i := range writes {
		if err := st.db.Set(fmt.Appendf(nil, "k%08d", i), value, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-paced:
	case <-time.After(30 * time.Second):
		t.Fatal("the flush was never paced")
	}
	closed := make(chan error, 1)
	go func() { closed <- st.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Close waited for the paced flush")
	}
	// Everything written is there after a reopen.
	st, err = openSharedOn(vfs.Default, dir, 1<<20, newPacer(pacedRate), memTable)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, closer, err := st.db.Get(fmt.Appendf(nil, "k%08d", writes-1))
	if err != nil {
		t.Fatalf("last write after reopen: %v", err)
	}
	defer closer.Close()
	if !bytes.Equal(v, value) {
		t.Fatal("last write after reopen: wrong value")
	}
}

// A new store's first flush takes the memtables of its growth (pebble's
// start at 256 KiB and double up to MemTableSize): several memtables, not
// a flush behind the writes, so it is paced like any other.
func TestFirstFlushPaced(t *testing.T) {
	p := newPacer(256 << 10)
	paced := signalPaced(p)
	const memTable = 1 << 20 // memtables of 256 KiB, 512 KiB, then 1 MiB
	st, err := openSharedOn(vfs.Default, t.TempDir(), 1<<20, p, memTable)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	value := bytes.Repeat([]byte{1}, 1024)
	// 1.1 MiB: past the first two memtables (768 KiB, which pebble flushes
	// as they hold half of MemTableSize), short of filling the third.
	for i := range 1100 {
		if err := st.db.Set(fmt.Appendf(nil, "k%08d", i), value, pebble.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-paced:
	case <-time.After(20 * time.Second):
		m := st.db.Metrics()
		t.Fatalf("the first flush was not paced (memtables %d, %d bytes; flushes %d)", m.MemTable.Count, m.MemTable.Size, m.Flush.Count)
	}
}

// A table whose writes begin late, or that was written slowly for a while
// (a compaction merging away deleted input, a CPU-starved compaction),
// does not then write what it has at full speed: its lag counts for
// pacedBurst at most. (The pace was an average since the table's creation,
// and this burst went unpaced.)
func TestPaceCreditBounded(t *testing.T) {
	const rate = 1 << 20
	_, clock, fs, _ := pacedOnMem(t, rate)
	f := createFile(t, fs, "out/000001.sst")
	defer f.Close()
	// The compaction reads its inputs for 4 s before its first block.
	clock.mu.Lock()
	clock.t = clock.t.Add(4 * time.Second)
	clock.mu.Unlock()
	writeChunks(t, f, 4<<20, 64<<10)
	// At most 1 MiB/s: 4 MiB take about 4 s whatever came before (a
	// bounded burst of one chunk or one pacedMaxSleep would still sleep
	// well over 3 s).
	if slept, _ := clock.total(); slept < 3*time.Second {
		t.Fatalf("4 MiB written 4s after Create at %d B/s slept %v: written in one burst at full speed", rate, slept)
	}
}

// The converse: a table written at full speed while there was a reason to
// hurry (a stall, a rush, level 0 behind) owes nothing once the reason is
// gone: its next write is slowed to the pace, not stopped until the
// average is back at it (it was, for up to the table's size / the rate).
func TestPaceNoDebtAfterHurry(t *testing.T) {
	const rate = 1 << 20
	p, clock, fs, _ := pacedOnMem(t, rate)
	f := createFile(t, fs, "out/000001.sst")
	defer f.Close()
	const chunk = 64 << 10
	undo := p.rush() // e.g. DropShard's compaction, running beside this one
	writeChunks(t, f, 4<<20, chunk)
	undo()
	before, _ := clock.total()
	writeChunks(t, f, chunk, chunk)
	after, _ := clock.total()
	share := time.Duration(float64(chunk) / rate * float64(time.Second))
	if after-before > 2*share {
		t.Fatalf("the first 64 KiB write after the rush slept %v (its share at the pace is %v): the table stops until it has repaid the rush", after-before, share)
	}
}
