package dister_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/testcluster"
)

// allKeys lists every client key of a group through n, page by page.
func allKeys(ctx context.Context, t *testing.T, n *dister.Node, group string, opts ...dister.ReadOption) map[string]dister.Entry {
	t.Helper()
	out := map[string]dister.Entry{}
	after := ""
	for {
		p, err := n.Group(group).KV().ListPage(ctx, "", append(opts, dister.Limit(5000), dister.After(after))...)
		if err != nil {
			t.Fatalf("list %s: %v", group, err)
		}
		for _, e := range p.Entries {
			out[e.Key] = e
			after = e.Key
		}
		if !p.More {
			return out
		}
	}
}

type ackedWrite struct {
	rev    int64
	before bool // acknowledged before the snapshot call began
}

// TestSnapshotRestore saves a cluster of 3 groups under 16 writers, with
// leases and service instances, from a follower; destroys it; restores the
// file into 3 new servers; and checks that exactly the writes at or below
// each group's snapshot revision are there (every write acknowledged
// before the save among them), with leases (counting down from no more
// than they had left), instances and settings; that revisions continue
// above, a watch from before gets ErrCompacted, new leases do not collide,
// and a server that joins afterwards gets the restored state.
func TestSnapshotRestore(t *testing.T) {
	t.Parallel() // long, mostly waiting on timers: runs beside the others
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	old := testcluster.New(t, 3)
	n := old.Node(old.Leader())
	groups := []string{"default", "g1", "g2"}
	for _, g := range groups[1:] {
		if err := n.CreateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.SetSettings(ctx, dister.Settings{ScriptChecks: true}); err != nil {
		t.Fatal(err)
	}
	// A long lease with keys, a short one with keys, an auto-renewed one.
	type leaseCase struct {
		group   string
		id      dister.LeaseID
		ttl     time.Duration
		granted time.Time
		epoch   uint64 // the group's lessor epoch once granted
	}
	var leases []leaseCase
	for i, g := range groups {
		for _, ttl := range []time.Duration{time.Hour, 4 * time.Second} {
			id, err := n.Group(g).Leases().Grant(ctx, ttl)
			if err != nil {
				t.Fatal(err)
			}
			epoch, err := dister.LessorEpoch(ctx, n, g)
			if err != nil {
				t.Fatal(err)
			}
			leases = append(leases, leaseCase{g, id, ttl, time.Now(), epoch})
			for k := range 3 {
				if _, err := n.Group(g).KV().Put(ctx, fmt.Sprintf("lease/%d/%d", id, k), []byte("x"), dister.WithLease(id)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := n.Group(g).Leases().Grant(ctx, 30*time.Second, dister.AutoRenew()); err != nil {
			t.Fatal(err)
		}
		for j := range 2 {
			err := n.Group(g).Services().Register(ctx, dister.Instance{Service: "api", ID: fmt.Sprintf("i%d", j),
				Address: fmt.Sprintf("127.0.0.1:%d", 9000+10*i+j), Priority: j + 1, Tags: []string{"t"},
				Meta: map[string]string{"g": g}, Check: dister.Check{Type: dister.CheckNever}})
			if err != nil {
				t.Fatal(err)
			}
		}
	}

	// 16 writers over the 3 groups, each key written once.
	var (
		mu       sync.Mutex
		acked    = map[string]map[string]ackedWrite{}
		unsure   = map[string]map[string]bool{}
		saveFrom time.Time // zero until the snapshot call begins
	)
	for _, g := range groups {
		acked[g], unsure[g] = map[string]ackedWrite{}, map[string]bool{}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 16 {
		g := groups[w%3]
		node := old.Node(uint64(w%3) + 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("w%02d/%06d", w, i)
				rev, err := node.Group(g).KV().Put(ctx, key, []byte(key))
				mu.Lock()
				if err != nil {
					unsure[g][key] = true
				} else {
					acked[g][key] = ackedWrite{rev: rev, before: saveFrom.IsZero()}
				}
				mu.Unlock()
				if err != nil && ctx.Err() != nil {
					return
				}
			}
		}()
	}
	time.Sleep(2 * time.Second) // load under way, and the short leases counted down for a while

	followers, _ := old.Followers()
	saver := old.Node(followers[0])
	file := filepath.Join(t.TempDir(), "cluster.snap")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	saveFrom = time.Now()
	mu.Unlock()
	info, err := saver.Snapshot(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// A leader that took a group's leases over after a grant restarted
	// their countdown at the full TTL (etcd's rule): the save then
	// records more left than since the grant.
	savedEpoch := map[string]uint64{}
	for _, g := range groups {
		if savedEpoch[g], err = dister.LessorEpoch(ctx, saver, g); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // writes after the save
	close(stop)
	wg.Wait()
	old.CloseAll()

	snapRev := map[string]int64{}
	for _, g := range info.Groups {
		snapRev[g.Name] = g.Revision
	}
	if len(info.Groups) != 3 || info.Format != dister.SnapshotFormat || info.SHA256 == "" {
		t.Fatalf("snapshot info %+v", info)
	}
	st, err := os.Stat(file)
	if err != nil || st.Size() != info.Bytes {
		t.Fatalf("file of %v bytes, info says %d (%v)", st.Size(), info.Bytes, err)
	}
	checked, err := dister.InspectSnapshot(ctx, mustOpen(t, file), nil)
	if err != nil || checked.SHA256 != info.SHA256 {
		t.Fatalf("inspect: %v, %+v vs %+v", err, checked, info)
	}
	for i, g := range checked.Groups {
		if g != info.Groups[i] {
			t.Fatalf("inspect group %+v, save said %+v", g, info.Groups[i])
		}
	}

	start := time.Now()
	nc := testcluster.Restore(t, 3, file)
	restoreTook := time.Since(start)
	rn := nc.Node(nc.Leader())

	var after int
	for _, g := range groups {
		got := allKeys(ctx, t, rn, g, dister.Linearizable())
		wantCount := 0
		for key, a := range acked[g] {
			e, ok := got[key]
			switch {
			case a.before && a.rev > snapRev[g]:
				t.Errorf("%s: %q acknowledged at %d before the save began, above the snapshot's revision %d", g, key, a.rev, snapRev[g])
			case a.rev <= snapRev[g] && (!ok || e.ModRevision != a.rev || string(e.Value) != key):
				t.Errorf("%s: %q acknowledged at %d <= %d: restored as %+v (found %v)", g, key, a.rev, snapRev[g], e, ok)
			case a.rev > snapRev[g] && ok:
				t.Errorf("%s: %q written at %d after the snapshot (%d) is restored", g, key, a.rev, snapRev[g])
			}
			if a.rev <= snapRev[g] {
				wantCount++
			} else {
				after++
			}
		}
		for key, e := range got {
			if strings.HasPrefix(key, "lease/") {
				continue
			}
			if _, ok := acked[g][key]; !ok && !unsure[g][key] {
				t.Errorf("%s: restored %q was never written", g, key)
			}
			if e.ModRevision > snapRev[g] {
				t.Errorf("%s: restored %q at %d above the snapshot's %d", g, key, e.ModRevision, snapRev[g])
			}
		}
		if wantCount == 0 {
			t.Errorf("%s: no acknowledged write at or below the snapshot", g)
		}
		insts, err := rn.Group(g).Services().Get(ctx, "api")
		if err != nil || len(insts) != 2 || insts[0].Meta["g"] != g || insts[1].Priority != 2 {
			t.Errorf("%s: instances after restore %+v (%v)", g, insts, err)
		}
	}
	if after == 0 {
		t.Log("no write was acknowledged after the snapshot revision (the check of their absence ran empty)")
	}

	// Leases: the long ones count down from no more than they had left
	// at the save; the short ones expire in the new cluster.
	for _, l := range leases {
		stored, err := dister.StoredLeases(ctx, rn, l.group)
		if err != nil {
			t.Fatal(err)
		}
		s, ok := stored[int64(l.id)]
		if l.ttl == time.Hour {
			maxLeft := (l.ttl - saveFrom.Sub(l.granted) + time.Second).Milliseconds()
			if savedEpoch[l.group] != l.epoch {
				t.Logf("%s: the leases' leader changed after the grant (lessor epoch %d, then %d): the countdown restarted", l.group, l.epoch, savedEpoch[l.group])
				maxLeft = l.ttl.Milliseconds()
			}
			if !ok || s[0] != l.ttl.Milliseconds() || s[1] <= 0 || s[1] > maxLeft {
				t.Errorf("%s lease %d: restored as %v (found %v), want TTL %d and 0 < remaining <= %d", l.group, l.id, s, ok, l.ttl.Milliseconds(), maxLeft)
			}
			keys, err := rn.Group(l.group).Leases().Get(ctx, l.id)
			if err != nil || len(keys.Keys) != 3 {
				t.Errorf("%s lease %d: %+v, %v", l.group, l.id, keys, err)
			}
		}
	}
	for _, l := range leases {
		if l.ttl == time.Hour {
			continue
		}
		for {
			_, err := rn.Group(l.group).Leases().Get(ctx, l.id)
			if errors.Is(err, dister.ErrLeaseNotFound) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s lease %d of 4s never expired after the restore (took %v)", l.group, l.id, restoreTook)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if e, err := rn.Group(l.group).KV().Get(ctx, fmt.Sprintf("lease/%d/0", l.id)); !errors.Is(err, dister.ErrNotFound) {
			t.Errorf("%s: key of expired lease %d: %+v, %v", l.group, l.id, e, err)
		}
	}

	if s, err := rn.Settings(ctx); err != nil || !s.ScriptChecks {
		t.Errorf("settings after restore: %+v, %v", s, err)
	}
	for _, g := range groups {
		kv := rn.Group(g).KV()
		rev, err := kv.Put(ctx, "after-restore", []byte("1"))
		if err != nil || rev <= snapRev[g]+dister.RestoreRevisionGap {
			t.Errorf("%s: first write after restore at %d (snapshot %d): %v", g, rev, snapRev[g], err)
		}
		for _, from := range []int64{snapRev[g], snapRev[g] + 1, snapRev[g] + 1000} {
			wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
			var last dister.WatchEvent
			for ev := range kv.Watch(wctx, "", dister.FromRevision(from)) {
				last = ev
				break
			}
			wcancel()
			if !errors.Is(last.Err, dister.ErrCompacted) {
				t.Errorf("%s: watch from %d after restore: %+v, want ErrCompacted", g, from, last)
			}
		}
		id, err := rn.Group(g).Leases().Grant(ctx, time.Minute)
		if err != nil {
			t.Errorf("%s: grant after restore: %v", g, err)
		}
		for _, l := range leases {
			if l.group == g && l.id == id {
				t.Errorf("%s: new lease %d reuses a restored id", g, id)
			}
		}
	}

	// A server that joins gets the restored state, not the log of the
	// new cluster alone.
	for _, id := range nc.IDs() {
		for dister.RestorePending(nc.Node(id)) {
			if ctx.Err() != nil {
				t.Fatalf("server %d never compacted its restored shards", id)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	j := nc.Join(0)
	jctx, jcancel := context.WithTimeout(ctx, time.Minute)
	defer jcancel()
	for _, g := range groups {
		want := allKeys(ctx, t, rn, g)
		for {
			got := allKeys(ctx, t, j, g, dister.Stale())
			if len(got) == len(want) {
				break
			}
			if jctx.Err() != nil {
				t.Fatalf("%s on the joined server: %d keys, want %d", g, len(got), len(want))
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// TestRestoreRefusesBadFiles: a file with one byte flipped, cut short, or
// of another format version is refused with ErrInvalid and nothing is
// written; a data dir that holds a server is refused.
func TestRestoreRefusesBadFiles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := testcluster.New(t, 1)
	n := c.Node(1)
	for i := range 50 {
		if _, err := n.KV().Put(ctx, fmt.Sprintf("k%d", i), bytes.Repeat([]byte{byte(i)}, 100)); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := n.Snapshot(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flip := func(off int) []byte {
		b := bytes.Clone(good)
		b[off] ^= 0x01
		return b
	}
	older := bytes.Clone(good)
	older[11] = 0 // the version's last byte: version 0
	newer := bytes.Clone(good)
	newer[11] = 2
	cases := map[string]struct {
		data []byte
		want string
	}{
		"flipped in a record":  {flip(len(good) / 2), "SHA-256 mismatch"},
		"flipped in the hash":  {flip(len(good) - 1), "SHA-256 mismatch"},
		"flipped in the magic": {flip(0), "magic"},
		"truncated":            {good[:len(good)-40], "truncated"},
		"truncated to half":    {good[:len(good)/2], "truncated"},
		"empty":                {nil, "magic"},
		"older version":        {older, "version 0: this dister reads format version 1"},
		"newer version":        {newer, "version 2: this dister reads format version 1"},
	}
	o := c.Options(1)
	for name, tc := range cases {
		p := write(strings.ReplaceAll(name, " ", "-"), tc.data)
		o.DataDir = filepath.Join(dir, "data-"+strings.ReplaceAll(name, " ", "-"))
		_, err := dister.Restore(ctx, p, o)
		if !errors.Is(err, dister.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: restore: %v, want ErrInvalid saying %q", name, err, tc.want)
		}
		if ents, _ := os.ReadDir(o.DataDir); len(ents) != 0 {
			t.Errorf("%s: the refused restore wrote %d entries into the data dir", name, len(ents))
		}
		if _, err := dister.InspectSnapshot(ctx, bytes.NewReader(tc.data), nil); !errors.Is(err, dister.ErrInvalid) {
			t.Errorf("%s: inspect: %v, want ErrInvalid", name, err)
		}
	}
	// A data dir that already holds a server.
	if _, err := dister.Restore(ctx, write("good", good), c.Options(1)); !errors.Is(err, dister.ErrInvalid) ||
		!strings.Contains(err.Error(), "already holds a server") {
		t.Errorf("restore over a server's data dir: %v", err)
	}
	info, err := dister.InspectSnapshot(ctx, bytes.NewReader(good), nil)
	if err != nil || info.Groups[0].Keys != 50 || info.Bytes != int64(len(good)) {
		t.Errorf("inspect the good file: %+v, %v", info, err)
	}
}
