package fsm

import (
	"errors"
	"testing"

	"github.com/dister/dister/internal/errs"
)

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

// GrantLease draws another id when the state machine answers that the
// group holds the one it drew (each try taken by another proposer just
// before it here), and gives up with ErrConflict after leaseIDTries.
func TestGrantLeaseDrawsAgainOnConflict(t *testing.T) {
	h := newHarness(t, Options{})
	var drawn []int64
	propose := func(taken int) func(*Command) (*LeaseResult, error) {
		return func(c *Command) (*LeaseResult, error) {
			drawn = append(drawn, c.Grant.ID)
			if len(drawn) <= taken {
				h.applyLease(grantCmd(c.Grant.ID, 1000)) // someone else's grant of the same id
			}
			return DecodeLeaseResult(h.applyRaw(encodeAll(t, c)...)[0])
		}
	}
	r, err := GrantLease(7, 1000, propose(2))
	if err != nil || len(drawn) != 3 || r.ID != drawn[2] || r.ID>>32 != 7 {
		t.Fatalf("two ids taken: lease %+v, %v after drawing %v", r, err, drawn)
	}
	drawn = nil
	if _, err := GrantLease(7, 1000, propose(leaseIDTries)); !errors.Is(err, errs.Conflict) || len(drawn) != leaseIDTries {
		t.Fatalf("every id taken: %v after drawing %d ids; want ErrConflict after %d", err, len(drawn), leaseIDTries)
	}
}
