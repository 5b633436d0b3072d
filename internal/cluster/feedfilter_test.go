package cluster

import (
	"testing"

	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
)

func putFrame(rev int64, keys ...string) *peer.WatchFrame {
	fr := &peer.WatchFrame{Revision: rev}
	for _, k := range keys {
		fr.Events = append(fr.Events, fsm.Event{Type: fsm.EventPut, Revision: rev,
			KV: fsm.KV{Key: k}, Prev: &fsm.KV{Key: k}})
	}
	return fr
}

// The filter keeps the followed keys' events (without their previous
// entries unless asked), turns a revision of other keys into a progress
// note, drops that note when a later frame waits (it says as much), and
// acks a change at the last revision that went through it.
func TestFeedFilterPass(t *testing.T) {
	f := newFeedFilter([]uint64{peer.KeyHash("a")}, 4, false)
	shared := putFrame(5, "a", "b")
	got := f.pass(shared, false)
	if len(got.Events) != 1 || got.Events[0].KV.Key != "a" || got.Events[0].Prev != nil || got.Revision != 5 {
		t.Fatalf("pass: %+v", got)
	}
	if shared.Events[0].Prev == nil || len(shared.Events) != 2 {
		t.Fatal("the hub's shared events were changed")
	}
	if got := f.pass(putFrame(6, "b"), false); got == nil || len(got.Events) != 0 || got.Revision != 6 {
		t.Fatalf("a revision of other keys: %+v, want a progress note at 6", got)
	}
	if got := f.pass(putFrame(7, "b"), true); got != nil {
		t.Fatalf("%+v: a note sent while a later frame waits", got)
	}
	ack, err := f.apply(&peer.FeedChange{Seq: 3, Add: []uint64{peer.KeyHash("b")}, Remove: []uint64{peer.KeyHash("a")}})
	if err != nil || ack.Ack != 3 || ack.Revision != 7 {
		t.Fatalf("ack %+v %v, want change 3 at 7", ack, err)
	}
	if got := f.pass(putFrame(8, "a", "b"), false); len(got.Events) != 1 || got.Events[0].KV.Key != "b" {
		t.Fatalf("after the change: %+v", got)
	}
	if got := f.pass(&peer.WatchFrame{Revision: 9}, true); got == nil || got.Revision != 9 {
		t.Fatalf("a progress note asked for was dropped: %+v", got)
	}
	withPrev := newFeedFilter([]uint64{peer.KeyHash("a")}, 4, true)
	if got := withPrev.pass(putFrame(5, "a"), false); got.Events[0].Prev == nil {
		t.Fatal("previous entry dropped though asked for")
	}
}

// A filter never follows more than MaxFeedKeys hashes.
func TestFeedFilterBound(t *testing.T) {
	f := newFeedFilter(nil, 1, false)
	for i := 0; i <= peer.MaxFeedKeys/peer.MaxFeedChange; i++ {
		add := make([]uint64, peer.MaxFeedChange)
		for j := range add {
			add[j] = uint64(i*peer.MaxFeedChange + j)
		}
		_, err := f.apply(&peer.FeedChange{Seq: uint64(i + 1), Add: add})
		if i < peer.MaxFeedKeys/peer.MaxFeedChange && err != nil {
			t.Fatalf("change %d: %v", i, err)
		}
		if i == peer.MaxFeedKeys/peer.MaxFeedChange && err == nil {
			t.Fatal("more than MaxFeedKeys followed")
		}
	}
}
