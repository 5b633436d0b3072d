package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/cockroachdb/pebble"

	"github.com/dister/dister/internal/errs"
)

// Snapshot stream (format 1):
//
//	8 bytes  magic "DSTRSNAP"
//	byte     format version (1)
//	records  byte 1, uvarint len + key, uvarint len + value; keys strictly increasing
//	end      byte 0, uvarint record count, 4 bytes big-endian CRC-32C of every byte before it
//
// It carries every pebble key (meta, user keys, dedup, watch events, leases
// and their attachments, and whatever later prefixes hold) so a replica that
// installs it is byte-for-byte the one that saved it.
const (
	snapMagic   = "DSTRSNAP"
	snapVersion = 1

	snapTagRecord = 1
	snapTagEnd    = 0

	// Bounds for a record read from a stream, well above anything Update
	// writes, so a forged length cannot allocate much. The largest value is
	// a put's event: the key, the new and the previous value.
	maxSnapKey   = 64 << 10
	maxSnapValue = 2*MaxValueSize + 64<<10

	// recoverBatchSize keeps recovery batches below pebble's large-batch
	// threshold (half the memtable) so they go through the memtable.
	recoverBatchSize = 1 << 20
	// stopCheckEvery is how many records pass between looks at stop.
	stopCheckEvery = 1024
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// snapshotCtx is what PrepareSnapshot returns.
type snapshotCtx struct {
	db   *space
	snap *snapshot
	once sync.Once
}

func (c *snapshotCtx) release() { c.once.Do(func() { _ = c.snap.Close() }) }

// PrepareSnapshot captures the current state. The returned context must be
// passed to SaveSnapshot, which releases it.
func (s *StateMachine) PrepareSnapshot() (any, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil {
		return nil, fmt.Errorf("prepare snapshot: %w", errs.Closed)
	}
	return &snapshotCtx{db: s.db, snap: s.db.NewSnapshot()}, nil
}

func isStopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// SaveSnapshot writes the whole state at ctx's point in time to w.
func (s *StateMachine) SaveSnapshot(ctx any, w io.Writer, stop <-chan struct{}) error {
	sc, ok := ctx.(*snapshotCtx)
	if !ok || sc == nil {
		return fmt.Errorf("save snapshot: context %T is not from PrepareSnapshot: %w", ctx, errs.Invalid)
	}
	defer sc.release()
	// Holding the read lock keeps Close and RecoverFromSnapshot from closing
	// the database under the iterator.
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.db == nil || s.db != sc.db {
		return fmt.Errorf("save snapshot: database closed or replaced: %w", errs.Closed)
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	sw := snapWriter{w: bw}
	sw.write([]byte(snapMagic))
	sw.write([]byte{snapVersion})
	it := sc.snap.NewIter(nil)
	var n uint64
	var lb [1 + 2*binary.MaxVarintLen64]byte
	for valid := it.First(); valid && sw.err == nil; valid = it.Next() {
		if n%stopCheckEvery == 0 && isStopped(stop) {
			_ = it.Close()
			return ErrStopped
		}
		k, v := it.Key(), it.Value()
		hdr := append(lb[:0], snapTagRecord)
		hdr = binary.AppendUvarint(hdr, uint64(len(k)))
		sw.write(hdr)
		sw.write(k)
		sw.write(binary.AppendUvarint(lb[:0], uint64(len(v))))
		sw.write(v)
		n++
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("save snapshot: %w", err)
	}
	sw.write(binary.AppendUvarint(append(lb[:0], snapTagEnd), n))
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], sw.crc)
	sw.write(sum[:])
	if sw.err == nil {
		sw.err = bw.Flush()
	}
	if sw.err != nil {
		return fmt.Errorf("save snapshot: %w", sw.err)
	}
	return nil
}

type snapWriter struct {
	w   *bufio.Writer
	crc uint32
	err error
}

func (w *snapWriter) write(p []byte) {
	if w.err != nil {
		return
	}
	w.crc = crc32.Update(w.crc, crcTable, p)
	_, w.err = w.w.Write(p)
}

var errCorruptSnapshot = errors.New("corrupt snapshot")

// RecoverFromSnapshot replaces the whole state with the stream's. The
// stream is loaded into the shard's next generation; only once it is
// complete and verified does the generation record switch to it, in the
// batch that drops the old one, so an error (or a crash) leaves the
// previous state in place.
func (s *StateMachine) RecoverFromSnapshot(r io.Reader, stop <-chan struct{}) error {
	// The read lock through the load: Close waits for it (it would close a
	// store of the state machine's own under the load, and the host closes
	// the shared one once every state machine closed). Lookups go on
	// meanwhile; Update does not run during a recovery.
	s.mu.RLock()
	cur, st := s.db, s.store
	if cur == nil {
		s.mu.RUnlock()
		return fmt.Errorf("recover snapshot: %w", errs.Closed)
	}
	next := st.space(s.shard, cur.gen+1)
	ld, err := loadInto(next, r, stop)
	s.mu.RUnlock()
	if err != nil {
		return err
	}

	// The switch under the lock: a reader that starts after it must find
	// the new generation, the old one is gone.
	s.mu.Lock()
	if s.db != cur {
		// Closed meanwhile (its store may be too): the next Open drops
		// the loaded generation.
		s.mu.Unlock()
		return fmt.Errorf("recover snapshot: %w", errs.Closed)
	}
	if err := st.switchGen(s.shard, next.gen); err != nil {
		_ = next.clear()
		s.mu.Unlock()
		return fmt.Errorf("recover snapshot: %w", err)
	}
	s.db = next
	s.loaded(ld)
	// Published under the lock, with the new generation: a reader woken by
	// WaitApplied must find the data of that index.
	s.setApplied(ld.applied)
	s.leaseGen.Add(1)
	s.reservedGen.Add(1)
	s.mu.Unlock()

	// Durable before dragonboat relies on it (it may compact the log up to
	// the snapshot next).
	if err := st.Sync(); err != nil {
		return fmt.Errorf("recover snapshot: sync: %w", err)
	}
	return nil
}

// loadInto loads the stream into next (emptied first) and reads the
// state it holds; on an error next is emptied again.
func loadInto(next *space, r io.Reader, stop <-chan struct{}) (loadedState, error) {
	if err := next.clear(); err != nil {
		return loadedState{}, fmt.Errorf("recover snapshot: %w", err)
	}
	err := loadSnapshot(next, r, stop)
	var ld loadedState
	if err == nil {
		ld, err = loadState(next)
	}
	if err != nil {
		_ = next.clear()
	}
	return ld, err
}

// loadSnapshot writes the stream's records into db and checks its trailer.
func loadSnapshot(db *space, r io.Reader, stop <-chan struct{}) error {
	sr := snapReader{r: bufio.NewReaderSize(r, 256<<10)}
	var hdr [len(snapMagic) + 1]byte
	sr.readFull(hdr[:])
	if sr.err != nil || string(hdr[:len(snapMagic)]) != snapMagic {
		return fmt.Errorf("%w: bad header", errCorruptSnapshot)
	}
	if hdr[len(snapMagic)] != snapVersion {
		return fmt.Errorf("%w: unknown format version %d", errCorruptSnapshot, hdr[len(snapMagic)])
	}
	b := db.NewBatch()
	defer func() { _ = b.Close() }()
	var key, prev, val []byte
	var n uint64
	for {
		tag := sr.byte()
		if sr.err != nil {
			return fmt.Errorf("%w: %v", errCorruptSnapshot, sr.err)
		}
		if tag == snapTagEnd {
			break
		}
		if tag != snapTagRecord {
			return fmt.Errorf("%w: unknown record tag %d", errCorruptSnapshot, tag)
		}
		key = sr.field(key, maxSnapKey)
		val = sr.field(val, maxSnapValue)
		if sr.err != nil {
			return fmt.Errorf("%w: record %d: %v", errCorruptSnapshot, n, sr.err)
		}
		// Saved from an iterator: strictly increasing, which also rules out
		// duplicates and the empty key.
		if len(key) == 0 || (n > 0 && bytes.Compare(key, prev) <= 0) {
			return fmt.Errorf("%w: record %d out of order", errCorruptSnapshot, n)
		}
		if err := b.Set(key, val, nil); err != nil {
			return fmt.Errorf("recover snapshot: %w", err)
		}
		prev, key = key, prev
		n++
		if b.Len() >= recoverBatchSize {
			if err := b.Commit(pebble.NoSync); err != nil {
				return fmt.Errorf("recover snapshot: %w", err)
			}
			_ = b.Close()
			b = db.NewBatch()
		}
		if n%stopCheckEvery == 0 && isStopped(stop) {
			return ErrStopped
		}
	}
	count := sr.uvarint()
	want := sr.crc
	var sum [4]byte
	sr.readFull(sum[:])
	if sr.err != nil {
		return fmt.Errorf("%w: trailer: %v", errCorruptSnapshot, sr.err)
	}
	if count != n {
		return fmt.Errorf("%w: %d records, trailer says %d", errCorruptSnapshot, n, count)
	}
	if binary.BigEndian.Uint32(sum[:]) != want {
		return fmt.Errorf("%w: checksum mismatch", errCorruptSnapshot)
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("recover snapshot: %w", err)
	}
	return nil
}

// snapReader reads the stream and checksums what it consumed; the first
// error sticks.
type snapReader struct {
	r   *bufio.Reader
	crc uint32
	err error
}

func (r *snapReader) readFull(p []byte) {
	if r.err != nil {
		return
	}
	if _, err := io.ReadFull(r.r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		r.err = err
		return
	}
	r.crc = crc32.Update(r.crc, crcTable, p)
}

func (r *snapReader) byte() byte {
	var b [1]byte
	r.readFull(b[:])
	return b[0]
}

func (r *snapReader) uvarint() uint64 {
	var x uint64
	for shift := uint(0); shift < 64; shift += 7 {
		c := r.byte()
		if r.err != nil {
			return 0
		}
		x |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return x
		}
	}
	r.err = errors.New("varint overflow")
	return 0
}

// field reads a uvarint length (at most max) and that many bytes into buf's
// storage, growing it as needed.
func (r *snapReader) field(buf []byte, max int) []byte {
	n := r.uvarint()
	if r.err != nil {
		return buf[:0]
	}
	if n > uint64(max) {
		r.err = fmt.Errorf("field of %d bytes, more than %d", n, max)
		return buf[:0]
	}
	if uint64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	r.readFull(buf)
	return buf
}
