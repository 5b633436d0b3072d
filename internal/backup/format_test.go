package backup

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/dister/dister/internal/errs"
)

func sample(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Groups: []Group{{Name: "default", Shard: 2, Revision: 7}, {Name: "g", Shard: 3, Revision: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	recs := [][2]string{{"ka", "1"}, {"k\x00svc/api/i1", "{}"}, {"k\x00hb/api/i1", ""}, {"l\x00\x00\x00\x00\x00\x00\x00\x05", "x"}}
	if err := w.Group("default"); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := w.Record([]byte(r[0]), []byte(r[1])); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Group("g"); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Written() != int64(buf.Len()) {
		t.Fatalf("Written %d, wrote %d", w.Written(), buf.Len())
	}
	return buf.Bytes()
}

// TestReadBack: what Writer wrote reads back with its counts, and every
// damaged variant (each single byte flipped, each truncation) is refused
// with errs.Invalid.
func TestReadBack(t *testing.T) {
	good := sample(t)
	var got [][2]string
	h, stats, sum, err := Read(bytes.NewReader(good), Visitor{Record: func(k, v []byte) error {
		got = append(got, [2]string{string(k), string(v)})
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if h.Format != Version || len(stats) != 2 || stats[0].Keys != 1 || stats[0].Instances != 1 || stats[0].Leases != 1 ||
		stats[0].Revision != 7 || stats[1].Bytes != 0 || len(got) != 4 || sum.Bytes != int64(len(good)) || len(sum.SHA256) != 32 {
		t.Fatalf("read back %+v %+v %+v %q", h, stats, sum, got)
	}
	for i := range good {
		b := bytes.Clone(good)
		b[i] ^= 0x10
		if _, _, _, err := Read(bytes.NewReader(b), Visitor{}); !errors.Is(err, errs.Invalid) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
		if _, _, _, err := Read(bytes.NewReader(good[:i]), Visitor{}); !errors.Is(err, errs.Invalid) {
			t.Fatalf("cut to %d bytes: %v", i, err)
		}
	}
	if _, _, _, err := Read(bytes.NewReader(append(bytes.Clone(good), 0)), Visitor{}); !errors.Is(err, errs.Invalid) {
		t.Fatalf("a byte after the end: %v", err)
	}
	old := bytes.Clone(good)
	old[11] = 0
	_, _, _, err = Read(bytes.NewReader(old), Visitor{})
	if !errors.Is(err, ErrVersion) || !errors.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "version 0: this dister reads format version 1") {
		t.Fatalf("version 0: %v", err)
	}
}

// FuzzRead: nothing a file holds makes Read panic or allocate beyond its
// limits.
func FuzzRead(f *testing.F) {
	f.Add(sample(f))
	f.Add([]byte(Magic + "\x00\x00\x00\x01\x02{}E"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, _, _ = Read(bytes.NewReader(b), Visitor{Record: func(k, v []byte) error { return nil }})
	})
}
