package fsm

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble"
	"github.com/cockroachdb/pebble/vfs"
)

// Background write pacing. The store's memtable fills at the same pace on
// every server of a group, and when it is full pebble flushes it: about
// 40 MB of tables for a 64 MiB memtable, written and synced as fast as the
// CPU and the disk allow. While a flush (or the compaction that follows)
// does that, the Raft log's fsyncs queue behind its writes on the disk and
// the apply path behind its CPU, and the writes of those 300-400 ms were
// the slowest 1% (BenchmarkPutSpread, 130,000 puts, alternated: p99 at 64
// writers 42.7, 36.0, 36.2 ms unpaced, 23.4, 21.6, 21.8 paced at 32 MiB/s;
// at 256 writers 82.0, 77.8, 79.2 against 57.8, 64.1, 66.0; ops/s the same
// within noise; 16 MiB/s did no better, 64 worse).
//
// So the tables the store writes in the background (its .sst files: only
// flushes and compactions create them) are written at most at pacedRate
// each, RocksDB's rate limiter for flushes and compactions in its simplest
// form. Pacing must never make writes wait for it: it is lifted while
// pebble stalls writes (its memtables or level 0 full), while a full
// memtable waits behind the one being flushed (the flush is behind the
// writes), while level 0 holds more sublevels than its compactions keep up
// with, while an explicit flush or compaction waits (Close, DropShard),
// and before the database is open (the recovery's flush).

// pacedRate is the pace of one table being written, in bytes per second.
const pacedRate = 32 << 20

// pacedCheckEvery bounds how often a paced write reads pebble's metrics.
const pacedCheckEvery = 10 * time.Millisecond

// pacedMaxSleep bounds one sleep, so that a reason to hurry (a stall, a
// Close) is seen soon.
const pacedMaxSleep = 10 * time.Millisecond

// pacedBurst is the most a table slower than its pace (a compaction
// reading before it writes) may then write at full speed: its lag counts
// for this long at most.
const pacedBurst = 20 * time.Millisecond

// pacer paces the tables of one store.
type pacer struct {
	rate float64 // bytes per second

	db      atomic.Pointer[pebble.DB] // nil until open: no pacing
	stalled atomic.Int32              // pebble's write stalls in progress
	rushed  atomic.Int32              // callers waiting for a flush or compaction

	mu       sync.Mutex // guards the metrics check below
	checked  time.Time
	backedUp bool
	// memTableBytes: memtables holding more than this (pebble's
	// MemTable.Size, their allocated bytes) mean the flushes are behind.
	// 0 until listen sets it to twice MemTableSize: one memtable being
	// written to and one being flushed; a full one waiting behind them is
	// a flush behind the writes. Not the count of memtables: pebble's
	// start at 256 KiB and double up to MemTableSize, and the first flush
	// takes all of them but the one being written to (they hold at least
	// half of MemTableSize, and less than all of it).
	memTableBytes uint64
	l0Trigger     int32 // level 0 sublevels past which compactions are behind

	// for tests
	now   func() time.Time
	sleep func(time.Duration)
}

func newPacer(rate float64) *pacer {
	return &pacer{rate: rate, l0Trigger: 2 * l0CompactionThreshold, now: time.Now, sleep: time.Sleep}
}

// l0CompactionThreshold is the store's L0CompactionThreshold (pebble's
// default), set by listen: pacing is lifted at twice it.
const l0CompactionThreshold = 4

// listen adds the pacer's stall tracking to o, whose MemTableSize is set,
// and sets the level 0 threshold the pacer's l0Trigger is derived from.
func (p *pacer) listen(o *pebble.Options) {
	if p.memTableBytes == 0 {
		p.memTableBytes = 2 * uint64(o.MemTableSize)
	}
	o.L0CompactionThreshold = l0CompactionThreshold
	o.EventListener.WriteStallBegin = func(pebble.WriteStallBeginInfo) { p.stalled.Add(1) }
	o.EventListener.WriteStallEnd = func() { p.stalled.Add(-1) }
}

// rush lifts pacing until the returned func is called: for a caller that
// waits for a flush or a compaction.
func (p *pacer) rush() func() {
	p.rushed.Add(1)
	return func() { p.rushed.Add(-1) }
}

// hurry reports whether tables are to be written at full speed now.
func (p *pacer) hurry() bool {
	db := p.db.Load()
	if db == nil || p.stalled.Load() > 0 || p.rushed.Load() > 0 {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := p.now(); now.Sub(p.checked) >= pacedCheckEvery {
		m := db.Metrics()
		p.backedUp = m.MemTable.Size > p.memTableBytes || m.Levels[0].Sublevels > p.l0Trigger
		p.checked = now
	}
	return p.backedUp
}

// wait holds a table that just wrote n bytes until its pace allows more,
// or until there is a reason to hurry. due is when its earlier writes were
// paid for at the pace; wait returns that time for the n bytes. A table
// owes nothing for what it wrote in a hurry, and its lag behind the pace
// counts for pacedBurst at most.
func (p *pacer) wait(due time.Time, n int) time.Time {
	now := p.now()
	if p.hurry() {
		return now
	}
	if floor := now.Add(-pacedBurst); due.Before(floor) {
		due = floor
	}
	due = due.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	for {
		left := due.Sub(p.now())
		if left <= 0 {
			return due
		}
		if p.hurry() {
			return p.now()
		}
		p.sleep(min(left, pacedMaxSleep))
	}
}

// pacedFS paces the tables created through it.
type pacedFS struct {
	vfs.FS
	p *pacer
}

func (fs pacedFS) Create(name string) (vfs.File, error) {
	f, err := fs.FS.Create(name)
	if err != nil || !strings.HasSuffix(name, ".sst") {
		return f, err
	}
	// WithFd keeps the descriptor visible: pebble syncs a table's data as
	// it goes (sync_file_range) only when it can reach it.
	return vfs.WithFd(f, &pacedFile{File: f, p: fs.p, due: fs.p.now()}), nil
}

// pacedFile is a table being written; one goroutine writes it.
type pacedFile struct {
	vfs.File
	p   *pacer
	due time.Time // when what it wrote is paid for at the pace
}

func (f *pacedFile) Write(b []byte) (int, error) {
	n, err := f.File.Write(b)
	if err == nil {
		f.due = f.p.wait(f.due, n)
	}
	return n, err
}
