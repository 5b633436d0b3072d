package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dister/dister/internal/errs"
)

// TestDumpSeedRoundTrip dumps a state of several chunks (values, the
// reserved namespace, leases with keys) while Update goes on, seeds a new
// replica from the records, and checks that it holds exactly the dumped
// state: the same records, attachments rebuilt, the revision and compact
// revision as given, and lease ids granted after it above the restored ones.
func TestDumpSeedRoundTrip(t *testing.T) {
	h := newHarness(t, Options{})
	big := strings.Repeat("v", 100<<10)
	for i := range 40 { // 4 MB: several dump chunks
		h.apply(putCmd(fmt.Sprintf("big/%03d", i), big))
	}
	h.applyLease(grantCmd(0, 60000), grantCmd(0, 5000))
	leases := h.leases().Leases
	l1, l2 := leases[0].ID, leases[1].ID
	h.apply(putLeaseCmd("leased/a", "1", l1), putLeaseCmd("leased/b", "2", l1), putLeaseCmd("\x00svc/api/i1", "{}", l2))
	h.apply(delCmd("big/007"))
	want := h.list(ListQuery{Prefix: ""})
	v, err := h.sm.Lookup(DumpQuery{})
	if err != nil {
		t.Fatal(err)
	}
	d := v.(*Dump)
	defer d.Close()
	if d.Revision != want.Revision {
		t.Fatalf("dump at revision %d, state at %d", d.Revision, want.Revision)
	}
	// Writes after the dump began are not in it.
	h.apply(putCmd("late", "x"), delCmd("big/001"))

	s, err := NewSeeder(filepath.Join(t.TempDir(), "seed"))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	var nLeases int
	err = d.Each(func(k, v []byte) error {
		if k[0] == BackupLease {
			nLeases++
			_, v2, err := LeaseWithRemaining(k, v, func(id int64) int64 {
				if id == l1 {
					return 1234
				}
				return 0 // unknown to the leader: 1 ms
			})
			if err != nil {
				return err
			}
			v = v2
		} else {
			keys = append(keys, string(k[1:]))
		}
		return s.Add(k, v)
	})
	if err != nil {
		t.Fatal(err)
	}
	if nLeases != 2 || len(keys) != 42 {
		t.Fatalf("dump: %d leases, %d keys %q", nLeases, len(keys), keys)
	}
	const rev = 1_000_000
	if err := s.Finish(rev); err != nil {
		t.Fatal(err)
	}

	r := &harness{t: t, dir: s.dir}
	r.open(Options{})
	if r.idx != 0 || r.sm.Revision() != rev || r.sm.CompactRevision() != rev+1 {
		t.Fatalf("seeded: applied %d, revision %d, compact %d", r.idx, r.sm.Revision(), r.sm.CompactRevision())
	}
	got := r.list(ListQuery{Prefix: ""})
	if len(got.KVs) != len(want.KVs) {
		t.Fatalf("seeded %d keys, dumped %d", len(got.KVs), len(want.KVs))
	}
	for i := range got.KVs {
		g, w := got.KVs[i], want.KVs[i]
		if g.Key != w.Key || !bytes.Equal(g.Value, w.Value) || g.ModRevision != w.ModRevision || g.CreateRevision != w.CreateRevision || g.Version != w.Version || g.Lease != w.Lease {
			t.Fatalf("key %d: seeded %+v, dumped %+v", i, g, w)
		}
	}
	if e := r.get("\x00svc/api/i1"); !e.Found {
		t.Fatal("reserved key not seeded")
	}
	for _, l := range r.leases().Leases {
		switch l.ID {
		case l1:
			if l.Remaining != 1234 || l.TTL != 60000 {
				t.Errorf("lease 1 seeded as %+v", l)
			}
		case l2:
			if l.Remaining != 1 {
				t.Errorf("lease 2 seeded as %+v", l)
			}
		}
	}
	checkLeaseIndex(t, r.sm)
	if _, err := r.events(rev, 10); !errors.Is(err, errs.Compacted) {
		t.Errorf("events from the restored revision: %v, want compacted", err)
	}
	// The attachments were rebuilt: revoking lease 1 deletes its keys.
	res := r.applyLease(revokeCmd(false, l1), grantCmd(0, 1000))
	if res[0].Deleted != 2 || res[0].Revision != rev+1 {
		t.Errorf("revoke after seeding: %+v", res[0])
	}
	if res[1].ID <= max(l1, l2) {
		t.Errorf("a lease granted after seeding got id %d, not above %d", res[1].ID, max(l1, l2))
	}
}

// TestSeederRefuses: records out of order, of an unknown kind, or keys
// attached to a lease the backup lacks.
func TestSeederRefuses(t *testing.T) {
	rec := func(h recordHeader, v string) []byte {
		var hb [maxRecordHeader]byte
		return append(putRecordHeader(&hb, h), v...)
	}
	cases := map[string]func(s *Seeder) error{
		"out of order": func(s *Seeder) error {
			if err := s.Add([]byte("kb"), rec(recordHeader{1, 1, 1, 0}, "x")); err != nil {
				return err
			}
			return s.Add([]byte("ka"), rec(recordHeader{1, 1, 1, 0}, "x"))
		},
		"unknown kind": func(s *Seeder) error { return s.Add([]byte("zz"), nil) },
		"empty key":    func(s *Seeder) error { return s.Add(nil, nil) },
		"bad record":   func(s *Seeder) error { return s.Add([]byte("ka"), []byte{9}) },
		"missing lease": func(s *Seeder) error {
			if err := s.Add([]byte("ka"), rec(recordHeader{1, 1, 1, 7}, "x")); err != nil {
				return err
			}
			return s.Finish(1)
		},
	}
	for name, f := range cases {
		s, err := NewSeeder(filepath.Join(t.TempDir(), "s"))
		if err != nil {
			t.Fatal(err)
		}
		if err := f(s); !errors.Is(err, errCorruptBackup) {
			t.Errorf("%s: %v, want a corrupt backup error", name, err)
		}
		s.Abort()
	}
}

// TestSeederRefusesCraftedBounds: records a cluster never writes but that
// a crafted file with a valid SHA-256 can carry. Before the fix the seeder
// took both: a lease id above MaxInt64/2 made Finish succeed and the
// seeded replica then failed to open ("corrupt lease id base"), and a key
// modified at a revision above the group's made revisions go backwards.
func TestSeederRefusesCraftedBounds(t *testing.T) {
	rec := func(h recordHeader, v string) []byte {
		var hb [maxRecordHeader]byte
		return append(putRecordHeader(&hb, h), v...)
	}
	lease := func(s *Seeder, id int64) error {
		var kb [leaseKeyLen]byte
		return s.Add(leaseKey(&kb, id), appendLeaseRecord(nil, leaseRecord{ttl: 1000, remaining: 500}))
	}
	cases := map[string]func(s *Seeder) error{
		"huge lease id": func(s *Seeder) error {
			if err := lease(s, math.MaxInt64/2+1); err != nil {
				return err
			}
			return s.Finish(10)
		},
		"mod above the revision": func(s *Seeder) error {
			if err := s.Add([]byte("ka"), rec(recordHeader{1, 11, 1, 0}, "x")); err != nil {
				return err
			}
			return s.Finish(10)
		},
		// A key that exists with create revision 0 passes a create-if-absent
		// compare (found in review: a second holder took a seeded lock).
		"create 0": func(s *Seeder) error {
			return s.Add([]byte("ka"), rec(recordHeader{0, 0, 0, 0}, "x"))
		},
		"version 0": func(s *Seeder) error {
			return s.Add([]byte("ka"), rec(recordHeader{1, 1, 0, 0}, "x"))
		},
		"negative version": func(s *Seeder) error {
			return s.Add([]byte("ka"), rec(recordHeader{1, 1, -1, 0}, "x"))
		},
		"create above mod": func(s *Seeder) error {
			if err := s.Add([]byte("ka"), rec(recordHeader{5, 3, 1, 0}, "x")); err != nil {
				return err
			}
			return s.Finish(10)
		},
	}
	for name, f := range cases {
		dir := filepath.Join(t.TempDir(), "s")
		s, err := NewSeeder(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := f(s); !errors.Is(err, errCorruptBackup) {
			t.Errorf("%s: %v, want a corrupt backup error", name, err)
		}
		s.Abort()
	}
	// The largest id still allowed seeds a replica that opens and grants
	// ids above it.
	dir := filepath.Join(t.TempDir(), "ok")
	s, err := NewSeeder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := lease(s, math.MaxInt64/2); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(10); err != nil {
		t.Fatal(err)
	}
	r := &harness{t: t, dir: dir}
	r.open(Options{})
	if res := r.applyLease(grantCmd(0, 1000)); res[0].ID <= math.MaxInt64/2 {
		t.Errorf("grant after seeding: %+v", res[0])
	}
}
