package cluster

import (
	"fmt"

	"github.com/dister/dister/internal/errs"
	"github.com/dister/dister/internal/fsm"
	"github.com/dister/dister/internal/peer"
)

// feedFilter is the server's side of a client's cache feed: the hashes of
// the keys the client follows, and the revision up to which frames went
// through the filter. Only the stream's send loop reads and changes it
// (pass and apply), so a change takes effect between two revisions and
// its ack is ordered with the frames: nothing needs a lock.
type feedFilter struct {
	keys   map[uint64]struct{}
	last   int64 // every frame up to last went through the filter
	prevKV bool
	in     <-chan peer.FeedInput // the client's changes
}

// newFeedFilter follows keys (the decoder bounds them by MaxFeedKeys) from
// revision last on.
func newFeedFilter(keys []uint64, last int64, prevKV bool) *feedFilter {
	f := &feedFilter{keys: make(map[uint64]struct{}, len(keys)), last: last, prevKV: prevKV}
	for _, k := range keys {
		f.keys[k] = struct{}{}
	}
	return f
}

// apply changes the filter and returns the change's ack: every event of an
// added key after the ack's revision will be sent, none of a removed one.
func (f *feedFilter) apply(c *peer.FeedChange) (*peer.WatchFrame, error) {
	for _, k := range c.Remove {
		delete(f.keys, k)
	}
	for _, k := range c.Add {
		f.keys[k] = struct{}{}
	}
	if len(f.keys) > peer.MaxFeedKeys {
		return nil, fmt.Errorf("feed follows %d keys, more than %d: %w", len(f.keys), peer.MaxFeedKeys, errs.TooLarge)
	}
	return &peer.WatchFrame{Revision: f.last, Ack: c.Seq}, nil
}

// pass returns fr with only the events of followed keys (a progress note
// when none is left), or nil when nothing of fr needs sending: its events
// were all filtered out and a later frame is queued, whose revision says
// as much.
func (f *feedFilter) pass(fr *peer.WatchFrame, more bool) *peer.WatchFrame {
	f.last = max(f.last, fr.Revision)
	if len(fr.Events) == 0 {
		return fr
	}
	var kept []fsm.Event
	for i := range fr.Events {
		if _, ok := f.keys[peer.KeyHash(fr.Events[i].KV.Key)]; !ok {
			continue
		}
		ev := fr.Events[i]
		if !f.prevKV {
			ev.Prev = nil
		}
		kept = append(kept, ev)
	}
	if len(kept) == 0 && more {
		return nil
	}
	return &peer.WatchFrame{Revision: fr.Revision, Events: kept}
}
