package cluster

import (
	"maps"
	"slices"
	"testing"
)

// TestForgetDeletedShards: the reconciler's record of shards found in line
// keeps the system and default shards and the live groups' shards only,
// so it does not grow with every group ever created.
func TestForgetDeletedShards(t *testing.T) {
	r := &reconciler{membersShards: map[uint64]bool{SystemShard: true, DefaultShard: true, 7: true, 8: true, 9: true}}
	r.forgetDeletedShards(&catalog{groups: map[string]groupRecord{"a": {Shard: 8}}})
	got := slices.Sorted(maps.Keys(r.membersShards))
	want := slices.Sorted(slices.Values([]uint64{SystemShard, DefaultShard, 8}))
	if !slices.Equal(got, want) {
		t.Fatalf("shards kept %v, want %v", got, want)
	}
}
