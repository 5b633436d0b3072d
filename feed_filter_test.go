package dister_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dister/dister"
	"github.com/dister/dister/internal/peer"
	"github.com/dister/dister/internal/testcluster"
)

// feedFrames reads f's frames until one matches want (or the test fails
// after 10 s), and returns the frames read, the matching one last.
func feedFrames(t *testing.T, f *peer.FeedStream, want func(*peer.WatchFrame) bool) []*peer.WatchFrame {
	t.Helper()
	var got []*peer.WatchFrame
	for {
		fr, err := f.Recv()
		if err != nil {
			t.Fatalf("feed: %v (after %d frames)", err, len(got))
		}
		if fr.Err != nil {
			t.Fatalf("feed ended: %v", fr.Err)
		}
		got = append(got, fr)
		if want(fr) {
			return got
		}
	}
}

func eventKeys(frs []*peer.WatchFrame) []string {
	var keys []string
	for _, fr := range frs {
		for _, ev := range fr.Events {
			keys = append(keys, ev.KV.Key)
		}
	}
	return keys
}

// A server's feed carries the events of the keys the client follows and
// only those: the revisions of other keys come as progress notes. A
// change is acked in the stream's order: events of a key added come after
// the ack's revision, none of a key removed.
func TestFeedCarriesFollowedKeysOnly(t *testing.T) {
	c := testcluster.New(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := c.IDs()[1]
	kv := c.Node(id).KV()
	rev, err := kv.Put(ctx, "start", []byte("0"))
	if err != nil {
		t.Fatal(err)
	}
	pc := peer.NewClient()
	defer pc.Close()
	f, err := pc.Feed(ctx, c.Options(id).PeerAddr, &peer.FeedRequest{
		Watch: peer.WatchRequest{Group: "default", From: rev + 1},
		Keys:  []uint64{peer.KeyHash("a")}})
	if err != nil {
		t.Fatal(err)
	}
	if first := feedFrames(t, f, func(*peer.WatchFrame) bool { return true }); first[0].Revision != rev {
		t.Fatalf("first frame %+v, want a note at %d", first[0], rev)
	}
	put := func(key string) int64 {
		t.Helper()
		r, err := kv.Put(ctx, key, []byte(key))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	put("b")
	put("a")
	last := put("c")
	frs := feedFrames(t, f, func(fr *peer.WatchFrame) bool { return fr.Revision >= last })
	if keys := eventKeys(frs); len(keys) != 1 || keys[0] != "a" {
		t.Fatalf("events of %v, want only a's", keys)
	}
	for _, fr := range frs {
		for _, ev := range fr.Events {
			if ev.Prev != nil {
				t.Fatalf("event with its previous entry, not asked for: %+v", ev)
			}
		}
	}

	// Follow b, stop following a.
	if err := f.Change(&peer.FeedChange{Seq: 1, Add: []uint64{peer.KeyHash("b")}, Remove: []uint64{peer.KeyHash("a")}}); err != nil {
		t.Fatal(err)
	}
	ack := feedFrames(t, f, func(fr *peer.WatchFrame) bool { return fr.Ack != 0 })
	if a := ack[len(ack)-1]; a.Ack != 1 || a.Revision < last {
		t.Fatalf("ack %+v, want change 1 at %d or later", a, last)
	}
	put("a")
	wantB := put("b")
	frs = feedFrames(t, f, func(fr *peer.WatchFrame) bool { return fr.Revision >= wantB })
	if keys := eventKeys(frs); len(keys) != 1 || keys[0] != "b" {
		t.Fatalf("events after the change: %v, want only b's", keys)
	}
	if frs[len(frs)-1].Events[0].KV.ModRevision != wantB {
		t.Fatalf("b's event %+v, want revision %d", frs[len(frs)-1].Events[0], wantB)
	}
}

// A feed must start at a revision (0, "from now", would make its first
// ack promise events from before the stream began).
func TestFeedNeedsAStart(t *testing.T) {
	c := testcluster.New(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pc := peer.NewClient()
	defer pc.Close()
	f, err := pc.Feed(ctx, c.Options(c.IDs()[0]).PeerAddr, &peer.FeedRequest{Watch: peer.WatchRequest{Group: "default"}})
	if err != nil {
		t.Fatal(err)
	}
	fr, err := f.Recv()
	if err != nil || !errors.Is(fr.Err, dister.ErrInvalid) {
		t.Fatalf("feed from 0: %+v %v, want ErrInvalid", fr, err)
	}
}

// A client node's cache follows its group through a filtered feed, and a
// value another node writes to a key it caches reaches the cache through
// it; with the feed unfiltered (a server of an earlier version) the same
// holds.
func TestClientCacheThroughFilteredFeed(t *testing.T) {
	c := testcluster.New(t, 3)
	for _, unfiltered := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		srv := c.Node(c.IDs()[0]).KV()
		if _, err := srv.Put(ctx, "k", []byte("1")); err != nil {
			t.Fatal(err)
		}
		cl := openClient(t, c, 100)
		if unfiltered {
			dister.ClientFeedsUnfiltered(cl)
		}
		kv := cl.KV()
		var hit bool
		waitFor(t, func() bool {
			r, err := kv.Get(ctx, "k", dister.CacheInfo(&hit))
			return err == nil && hit && string(r.Value) == "1"
		})
		if got := dister.ClientFeedFiltered(cl, "default"); got == unfiltered {
			t.Fatalf("feed filtered %v, want %v", got, !unfiltered)
		}
		w, err := srv.Put(ctx, "k", []byte("2"))
		if err != nil {
			t.Fatal(err)
		}
		// Stale reads answer from the cache alone: the event must come.
		waitFor(t, func() bool {
			r, err := kv.Get(ctx, "k", dister.Stale(), dister.CacheInfo(&hit))
			return err == nil && hit && string(r.Value) == "2" && r.ModRevision == w
		})
		// A key the node never read is not cached, filtered or not, and
		// reads through.
		if _, err := srv.Put(ctx, "other", []byte("x")); err != nil {
			t.Fatal(err)
		}
		if r, err := kv.Get(ctx, "other", dister.Linearizable(), dister.CacheInfo(&hit)); err != nil || string(r.Value) != "x" {
			t.Fatalf("other: %+v %v", r, err)
		}
	}
}
