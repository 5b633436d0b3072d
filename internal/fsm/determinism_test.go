package fsm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
)

// mixedLog is a seeded random log of every command kind: puts with and
// without leases, deletes, prefix deletes, txns with compares, grants
// (explicit ids and id 0, some duplicates), revokes (client and expired,
// some of unknown ids), checkpoints, retried commands and junk.
func mixedLog(t testing.TB, n int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	var log [][]byte
	var seq uint64
	key := func() string { return fmt.Sprintf("k%d/%d", rng.IntN(3), rng.IntN(12)) }
	lease := func() int64 {
		if rng.IntN(3) == 0 {
			return 0
		}
		return int64(1 + rng.IntN(6))
	}
	for len(log) < n {
		var c *Command
		switch rng.IntN(16) {
		case 0, 1, 2, 3:
			c = putLeaseCmd(key(), fmt.Sprint(rng.IntN(1000)), lease())
		case 4:
			c = delCmd(key())
		case 5:
			if rng.IntN(4) == 0 {
				c = delPrefixCmd(fmt.Sprintf("k%d/", rng.IntN(3)))
			} else {
				c = delCmd(key())
			}
		case 6, 7:
			c = txnCmd(0, 0, &Txn{
				Compares: []Compare{{Key: key(), Target: TargetVersion, Op: OpGreater, Int: int64(rng.IntN(3))}},
				Then:     []Op{{Type: OpPut, Key: key(), Value: []byte("t"), Lease: lease()}, {Type: OpDelete, Key: key()}},
				Else:     []Op{{Type: OpPut, Key: key(), Value: []byte("e")}, {Type: OpPut, Key: key(), Value: []byte("e2"), Lease: lease()}},
			})
		case 8:
			id := int64(0)
			if rng.IntN(4) != 0 {
				id = int64(1 + rng.IntN(6))
			}
			c = grantCmd(id, int64(1+rng.IntN(10_000)))
		case 9:
			if rng.IntN(2) == 0 {
				c = revokeCmd(false, int64(1+rng.IntN(6)))
			} else {
				c = revokeCmd(true, int64(1+rng.IntN(6)), int64(1+rng.IntN(6)), int64(1+rng.IntN(200)))
				c.Revoke.Epoch = uint64(rng.IntN(3))
			}
		case 10:
			c = checkpointCmd(LeaseRemaining{ID: int64(1 + rng.IntN(6)), RemainingMs: int64(rng.IntN(10_000))})
			c.Checkpoint.Epoch = uint64(rng.IntN(3))
		case 15:
			c = &Command{Kind: KindLeaseEpoch, Epoch: &LeaseEpoch{}}
		case 11:
			if len(log) > 0 {
				// A retry of an earlier entry, inside or outside the window.
				log = append(log, log[len(log)-1-rng.IntN(min(len(log), 80))])
				continue
			}
			c = putCmd(key(), "x")
		case 12:
			log = append(log, []byte{1, byte(rng.IntN(6)), 0, 0})
			continue
		case 14:
			c = grantCmd(int64(1+rng.IntN(6)), int64(1+rng.IntN(10_000)))
		case 13:
			c = txnCmd(0, 0, &Txn{Then: []Op{{Type: OpPut, Key: key(), Value: bytes.Repeat([]byte("v"), rng.IntN(3000))}}})
		}
		if rng.IntN(2) == 0 {
			seq++
			c.Session, c.Seq = uint64(1+rng.IntN(2)), seq
			c.Mark = uint64(max(0, int(seq)-rng.IntN(8)))
			c.Time = int64(len(log)) * 100
		}
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		log = append(log, b)
	}
	return log
}

// TestDeterministicUnderBatching applies one mixed log (crossing event trim
// points, session sweeps and marks) in different Update batchings: results,
// events, leases and the saved state must be identical, since replicas
// batch differently.
func TestDeterministicUnderBatching(t *testing.T) {
	log := mixedLog(t, 6*eventTrimEvery)
	o := Options{SessionHorizon: 50_000, EventRetention: 300}
	var (
		results [][]Result
		snaps   [][]byte
		events  [][]Event
		leases  []*LeasesResult
	)
	for _, batch := range []int{1, 3, 64, 1000, len(log)} {
		h := newHarness(t, o)
		var rs []Result
		for i := 0; i < len(log); i += batch {
			rs = append(rs, h.applyRaw(log[i:min(i+batch, len(log))]...)...)
		}
		checkLeaseIndex(t, h.sm)
		rev := h.sm.Revision()
		if want := rev/eventTrimEvery*eventTrimEvery - 300 + 1; rev < 2*eventTrimEvery || h.sm.CompactRevision() != want {
			t.Fatalf("batch %d: revision %d, compact %d, want %d", batch, rev, h.sm.CompactRevision(), want)
		}
		results = append(results, rs)
		snaps = append(snaps, saveSnapshot(t, h.sm))
		events = append(events, h.allEvents(h.sm.CompactRevision()))
		leases = append(leases, h.leases())
	}
	for i := 1; i < len(results); i++ {
		if !reflect.DeepEqual(results[0], results[i]) {
			for j := range results[0] {
				if !reflect.DeepEqual(results[0][j], results[i][j]) {
					t.Fatalf("batching %d: result %d differs: %+v vs %+v", i, j, results[0][j], results[i][j])
				}
			}
		}
		if !bytes.Equal(snaps[0], snaps[i]) {
			t.Fatalf("batching %d: state differs", i)
		}
		if !reflect.DeepEqual(events[0], events[i]) || !reflect.DeepEqual(leases[0], leases[i]) {
			t.Fatalf("batching %d: events or leases differ", i)
		}
	}
	// The log exercised what it should.
	kinds := map[string]int{}
	for _, r := range results[0] {
		switch {
		case isErrorResult(r.Data):
			_, err := DecodeResult(r)
			kinds[fmt.Sprintf("error %v", errorClass(err))]++
		case r.Data[1] == resultLease:
			kinds["lease"]++
		case r.Data[1] == resultEpoch:
			kinds["epoch"]++
		default:
			kinds["txn"]++
		}
	}
	t.Logf("results: %v; %d events kept; %d leases", kinds, len(events[0]), len(leases[0].Leases))
	for _, k := range []string{"lease", "txn", "epoch", "error conflict", "error lease not found",
		"error invalid argument", "error no quorum", "error outcome unknown"} {
		if kinds[k] == 0 {
			t.Errorf("the log produced no %q result", k)
		}
	}
}

func errorClass(err error) string {
	if e, ok := err.(*decodedError); ok {
		return e.sentinel.Error()[len("dister: "):]
	}
	return "?"
}
