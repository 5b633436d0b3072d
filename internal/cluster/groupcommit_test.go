package cluster

import "testing"

// TestBatchingWaitsForUnrecordedVoters: group commit must stay off while a
// voter of some group has not recorded that it applies batches. Server 3
// is an initial member (a voter of the default group) that has not started
// yet, so it is not in cat.servers; an older binary there would fail every
// batch entry it replays and its state would part from the others'.
func TestBatchingWaitsForUnrecordedVoters(t *testing.T) {
	cat := &catalog{
		groups: map[string]groupRecord{"default": {Shard: 2, Members: map[uint64]string{
			1: "a:1", 2: "b:1", 3: "c:1"}}},
		servers: map[uint64]Peer{1: {RaftAddr: "a:1"}, 2: {RaftAddr: "b:1"}},
		flags:   map[uint64]serverFlags{1: {GroupCommit: true}, 2: {GroupCommit: true}},
	}
	if allGroupCommit(cat, nil) {
		t.Fatal("group commit on while voter 3 of group default has recorded no flags")
	}
	// A voter the local replicas know of, recorded nowhere in the catalog.
	cat.groups = nil
	if allGroupCommit(cat, map[uint64]bool{1: true, 2: true, 3: true}) {
		t.Fatal("group commit on while replica 3 has recorded no flags")
	}
	cat.flags[3] = serverFlags{GroupCommit: true}
	if !allGroupCommit(cat, map[uint64]bool{1: true, 2: true, 3: true}) {
		t.Fatal("group commit off with every server recorded")
	}
}
