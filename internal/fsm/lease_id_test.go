package fsm

import "testing"

// Lease ids carry their group's shard, so a group created again under a
// name (another shard) never hands out an earlier group's id.
func TestLeaseIDForCarriesShard(t *testing.T) {
	seen := map[int64]bool{}
	for _, shard := range []uint64{1, 2, 7, 1<<29 - 1} {
		for range 100 {
			id := LeaseIDFor(shard)
			if id <= 0 || id > maxLeaseBase || uint64(id>>32) != shard {
				t.Fatalf("LeaseIDFor(%d) = %d: want a positive id with the shard above 32 bits", shard, id)
			}
			seen[id] = true
		}
	}
	if len(seen) < 390 {
		t.Fatalf("400 ids of 4 shards: only %d distinct", len(seen))
	}
	for _, shard := range []uint64{0, 1 << 29, 1 << 40} {
		if id := LeaseIDFor(shard); id != 0 {
			t.Fatalf("LeaseIDFor(%d) = %d: want 0 (the Raft index decides)", shard, id)
		}
	}
}
