// Package backup is the file format of a cluster backup ("dister snapshot
// save"): a header naming the format version and every group's revision,
// each group's records as the state machine stores them (internal/fsm
// Dump), and a SHA-256 of everything before it at the end.
//
//	8 bytes   magic "DSTRBKUP"
//	4 bytes   format version, big-endian (1)
//	uvarint   length, then the header as JSON (Header)
//	per group, in the header's order:
//	  byte 'G', uvarint length + group name
//	  per record: byte 'R', uvarint length + key, uvarint length + value
//	byte 'E'
//	32 bytes  SHA-256 of every byte before them
//
// The version comes first and alone, so a reader refuses a file of another
// version before it parses anything else. Nothing in the file names a
// server or an address: a backup seeds a new cluster wherever it runs.
package backup

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"

	"github.com/dister/dister/internal/core"
	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/svc"
)

// Magic starts every backup file.
const Magic = "DSTRBKUP"

// Version is the format version this code writes and reads.
const Version = 1

const (
	tagGroup  = 'G'
	tagRecord = 'R'
	tagEnd    = 'E'

	maxHeader = 1 << 20
	maxKey    = 1 + fsm.MaxKeySize
	maxValue  = fsm.MaxValueSize + 64
	maxName   = 64
)

// Header describes a backup.
type Header struct {
	Format  int       `json:"format"`
	Created time.Time `json:"created"`
	// NodeID is the server that wrote the backup (for the operator's
	// records; a restore does not use it).
	NodeID   uint64        `json:"node_id"`
	Settings core.Settings `json:"settings"`
	Groups   []Group       `json:"groups"`
	// EstimatedBytes is what the writer expected the file to weigh (for a
	// progress bar); 0 = unknown.
	EstimatedBytes int64 `json:"estimated_bytes,omitempty"`
}

// Group is one group of a backup: its catalog shard id and the revision
// its records are at.
type Group struct {
	Name     string `json:"name"`
	Shard    uint64 `json:"shard"`
	Revision int64  `json:"revision"`
}

// Writer writes a backup.
type Writer struct {
	bw  *bufio.Writer
	h   hash.Hash
	n   int64
	err error
	sum []byte
	lb  [1 + 2*binary.MaxVarintLen64]byte
}

// Sum is the SHA-256 written by Close.
func (w *Writer) Sum() []byte { return w.sum }

// NewWriter writes the magic, the version and h to w.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	h.Format = Version
	hj, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("backup header: %w", err)
	}
	bw := &Writer{bw: bufio.NewWriterSize(w, 256<<10), h: sha256.New()}
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], Version)
	bw.write([]byte(Magic))
	bw.write(v[:])
	bw.write(binary.AppendUvarint(bw.lb[:0], uint64(len(hj))))
	bw.write(hj)
	return bw, bw.err
}

func (w *Writer) write(p []byte) {
	if w.err != nil {
		return
	}
	w.h.Write(p)
	var n int
	n, w.err = w.bw.Write(p)
	w.n += int64(n)
}

// Group starts the records of a group.
func (w *Writer) Group(name string) error {
	b := append(w.lb[:0], tagGroup)
	b = binary.AppendUvarint(b, uint64(len(name)))
	w.write(b)
	w.write([]byte(name))
	return w.err
}

// Record writes one record of the current group.
func (w *Writer) Record(key, value []byte) error {
	b := append(w.lb[:0], tagRecord)
	b = binary.AppendUvarint(b, uint64(len(key)))
	w.write(b)
	w.write(key)
	w.write(binary.AppendUvarint(w.lb[:0], uint64(len(value))))
	w.write(value)
	return w.err
}

// Close writes the end and the hash, and flushes. It does not close the
// underlying writer.
func (w *Writer) Close() error {
	if w.sum != nil {
		return w.err
	}
	w.write([]byte{tagEnd})
	if w.err != nil {
		return w.err
	}
	w.sum = w.h.Sum(nil)
	n, err := w.bw.Write(w.sum)
	w.n += int64(n)
	if err == nil {
		err = w.bw.Flush()
	}
	w.err = err
	return err
}

// Written is how many bytes were written so far.
func (w *Writer) Written() int64 { return w.n }

// Stats count what one group of a backup holds.
type Stats struct {
	Group
	Keys      int64 `json:"keys"`      // client keys
	Instances int64 `json:"instances"` // service instances
	Leases    int64 `json:"leases"`
	Bytes     int64 `json:"bytes"` // of its records in the file
}

// Visitor receives a backup's contents as Read checks them; either field
// may be nil.
type Visitor struct {
	// Header is called once the header was read.
	Header func(h Header) error
	// Group is called as each group's records begin.
	Group func(g Group) error
	// Record is called with each record; the slices are reused after it
	// returns.
	Record func(key, value []byte) error
}

// ErrVersion is wrapped (with errs.Invalid) by Read for a file of a format
// version this code does not read.
var ErrVersion = errors.New("unsupported backup format version")

// Read reads a whole backup, calling v as it goes, and checks it: the
// magic, the version, the structure and, at the end, the SHA-256. A file
// that fails any check gives an error wrapping errs.Invalid; the visitor
// may have been called before the check that failed (the hash comes
// last), so a caller that writes must verify with a first Read.
func Read(r io.Reader, v Visitor) (Header, []Stats, Summary, error) {
	rd := &reader{r: bufio.NewReaderSize(r, 256<<10), h: sha256.New()}
	h, stats, err := rd.read(v)
	sum := Summary{Bytes: rd.n, SHA256: rd.sum}
	if err != nil {
		var ce *corruptError
		if errors.As(err, &ce) {
			return h, stats, sum, fmt.Errorf("backup file is damaged or not a dister backup: %w: %w", err, errs.Invalid)
		}
		return h, stats, sum, err
	}
	return h, stats, sum, nil
}

// Summary is what Read saw of the file as a whole.
type Summary struct {
	Bytes  int64
	SHA256 []byte // the hash the file carries (nil if it ended before)
}

type corruptError struct{ msg string }

func (e *corruptError) Error() string { return e.msg }

func corrupt(format string, args ...any) error {
	return &corruptError{fmt.Sprintf(format, args...)}
}

func (rd *reader) read(v Visitor) (Header, []Stats, error) {
	var h Header
	magic := make([]byte, len(Magic))
	if err := rd.full(magic); err != nil || string(magic) != Magic {
		return h, nil, corrupt("no backup magic at the start")
	}
	var vb [4]byte
	if err := rd.full(vb[:]); err != nil {
		return h, nil, corrupt("truncated before the format version")
	}
	if ver := binary.BigEndian.Uint32(vb[:]); ver != Version {
		return h, nil, fmt.Errorf("%w %d: this dister reads format version %d only: %w", ErrVersion, ver, Version, errs.Invalid)
	}
	hb, err := rd.field(nil, maxHeader)
	if err != nil {
		return h, nil, corrupt("header: %v", err)
	}
	if err := json.Unmarshal(hb, &h); err != nil {
		return h, nil, corrupt("header: %v", err)
	}
	if h.Format != Version {
		return h, nil, corrupt("header names format %d in a version %d file", h.Format, Version)
	}
	seen := map[string]bool{}
	for _, g := range h.Groups {
		if g.Name == "" || len(g.Name) > maxName || seen[g.Name] || g.Revision < 0 || g.Shard == 0 {
			return h, nil, corrupt("header: bad group %+v", g)
		}
		seen[g.Name] = true
	}
	if v.Header != nil {
		if err := v.Header(h); err != nil {
			return h, nil, err
		}
	}
	stats := make([]Stats, 0, len(h.Groups))
	var key, val []byte
	for {
		start := rd.n
		tag, err := rd.byte()
		if err != nil {
			return h, stats, corrupt("truncated after %d bytes", rd.n)
		}
		switch tag {
		case tagGroup:
			name, err := rd.field(nil, maxName)
			if err != nil {
				return h, stats, corrupt("group name: %v", err)
			}
			if len(stats) >= len(h.Groups) || h.Groups[len(stats)].Name != string(name) {
				return h, stats, corrupt("group %q is not the next one the header lists", name)
			}
			g := h.Groups[len(stats)]
			stats = append(stats, Stats{Group: g})
			if v.Group != nil {
				if err := v.Group(g); err != nil {
					return h, stats, err
				}
			}
		case tagRecord:
			if len(stats) == 0 {
				return h, stats, corrupt("a record before the first group")
			}
			if key, err = rd.field(key, maxKey); err != nil {
				return h, stats, corrupt("record key: %v", err)
			}
			if val, err = rd.field(val, maxValue); err != nil {
				return h, stats, corrupt("record value: %v", err)
			}
			st := &stats[len(stats)-1]
			Count(st, key)
			st.Bytes += rd.n - start
			if v.Record != nil {
				if err := v.Record(key, val); err != nil {
					return h, stats, err
				}
			}
		case tagEnd:
			if len(stats) != len(h.Groups) {
				return h, stats, corrupt("%d groups in the file, the header lists %d", len(stats), len(h.Groups))
			}
			want := rd.h.Sum(nil)
			got := make([]byte, sha256.Size)
			if _, err := io.ReadFull(rd.r, got); err != nil {
				return h, stats, corrupt("truncated in the SHA-256")
			}
			rd.n += sha256.Size
			rd.sum = got
			if !bytes.Equal(got, want) {
				return h, stats, corrupt("SHA-256 mismatch: the file says %x, its content hashes to %x", got, want)
			}
			if _, err := rd.r.ReadByte(); err != io.EOF {
				return h, stats, corrupt("data after the SHA-256")
			}
			return h, stats, nil
		default:
			return h, stats, corrupt("unknown tag %d at byte %d", tag, start)
		}
	}
}

// Count adds key, a record's key, to what st counts.
func Count(st *Stats, key []byte) {
	if k, ok := fsm.BackupUserKey(key); ok {
		switch {
		case !fsm.IsReserved(string(k)):
			st.Keys++
		case strings.HasPrefix(string(k), svc.InstancesPrefix):
			st.Instances++
		}
		return
	}
	if len(key) > 0 && key[0] == fsm.BackupLease {
		st.Leases++
	}
}

type reader struct {
	r   *bufio.Reader
	h   hash.Hash
	n   int64
	sum []byte
}

func (rd *reader) full(p []byte) error {
	n, err := io.ReadFull(rd.r, p)
	rd.n += int64(n)
	rd.h.Write(p[:n])
	return err
}

func (rd *reader) byte() (byte, error) {
	var b [1]byte
	err := rd.full(b[:])
	return b[0], err
}

func (rd *reader) uvarint() (uint64, error) {
	var x uint64
	for shift := uint(0); shift < 64; shift += 7 {
		c, err := rd.byte()
		if err != nil {
			return 0, err
		}
		x |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return x, nil
		}
	}
	return 0, errors.New("varint overflow")
}

func (rd *reader) field(buf []byte, limit int) ([]byte, error) {
	n, err := rd.uvarint()
	if err != nil {
		return buf[:0], err
	}
	if n > uint64(limit) {
		return buf[:0], fmt.Errorf("%d bytes, more than %d", n, limit)
	}
	if uint64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if err := rd.full(buf); err != nil {
		return buf, err
	}
	return buf, nil
}
