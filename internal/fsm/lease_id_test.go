package fsm

import (
	"errors"
	"fmt"
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
	seven := func() (uint64, error) { return 7, nil }
	r, err := GrantLease(seven, 1000, propose(2))
	if err != nil || len(drawn) != 3 || r.ID != drawn[2] || r.ID>>32 != 7 {
		t.Fatalf("two ids taken: lease %+v, %v after drawing %v", r, err, drawn)
	}
	drawn = nil
	if _, err := GrantLease(seven, 1000, propose(leaseIDTries)); !errors.Is(err, errs.Conflict) || len(drawn) != leaseIDTries {
		t.Fatalf("every id taken: %v after drawing %d ids; want ErrConflict after %d", err, len(drawn), leaseIDTries)
	}
}

// GrantLease asks for the shard on every try: a client whose first id
// was drawn for a stale shard (refused with ErrConflict by the server that
// took the grant) draws the next one for the shard it learns then.
func TestGrantLeaseAsksShardAgain(t *testing.T) {
	shards := []uint64{3, 7}
	var drawn []int64
	r, err := GrantLease(func() (uint64, error) {
		s := shards[0]
		shards = shards[1:]
		return s, nil
	}, 1000, func(c *Command) (*LeaseResult, error) {
		drawn = append(drawn, c.Grant.ID)
		if c.Grant.ID>>32 != 7 {
			return nil, fmt.Errorf("id of another shard: %w", errs.Conflict)
		}
		return &LeaseResult{ID: c.Grant.ID, TTL: c.Grant.TTL}, nil
	})
	if err != nil || len(drawn) != 2 || drawn[0]>>32 != 3 || r.ID>>32 != 7 {
		t.Fatalf("lease %+v, %v after drawing %v: want a second id of shard 7", r, err, drawn)
	}
	failed := errors.New("no server answers")
	if _, err := GrantLease(func() (uint64, error) { return 0, failed }, 1000, nil); !errors.Is(err, failed) {
		t.Fatalf("shard unknown: %v", err)
	}
}
