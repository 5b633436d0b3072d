package fsm

import (
	"github.com/cockroachdb/pebble"

	"bytes"
	"encoding/binary"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// harness drives one StateMachine with consecutive indexes.
type harness struct {
	t   testing.TB
	sm  *StateMachine
	dir string
	idx uint64
}

func newHarness(t testing.TB, o Options) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir()}
	h.open(o)
	return h
}

func (h *harness) open(o Options) {
	h.t.Helper()
	h.sm = New(h.dir, o)
	applied, err := h.sm.Open(nil)
	if err != nil {
		h.t.Fatalf("Open: %v", err)
	}
	h.idx = applied
	sm := h.sm
	h.t.Cleanup(func() { _ = sm.Close() })
}

// applyRaw applies encoded commands in one Update call.
func (h *harness) applyRaw(cmds ...[]byte) []Result {
	h.t.Helper()
	entries := make([]Entry, len(cmds))
	for i, c := range cmds {
		h.idx++
		entries[i] = Entry{Index: h.idx, Cmd: c}
	}
	out, err := h.sm.Update(entries)
	if err != nil {
		h.t.Fatalf("Update: %v", err)
	}
	res := make([]Result, len(out))
	for i := range out {
		res[i] = out[i].Result
	}
	return res
}

// apply applies commands in one Update call and decodes the results; a
// command error fails the test.
func (h *harness) apply(cmds ...*Command) []*TxnResult {
	h.t.Helper()
	raw := make([][]byte, len(cmds))
	for i, c := range cmds {
		b, err := EncodeCommand(c)
		if err != nil {
			h.t.Fatalf("EncodeCommand: %v", err)
		}
		raw[i] = b
	}
	var out []*TxnResult
	for i, r := range h.applyRaw(raw...) {
		tr, err := DecodeResult(r)
		if err != nil {
			h.t.Fatalf("command %d: %v", i, err)
		}
		if r.Value == 0 {
			h.t.Fatalf("command %d: Result.Value 0 for a success", i)
		}
		out = append(out, tr)
	}
	return out
}

func (h *harness) get(key string) *GetResult {
	h.t.Helper()
	v, err := h.sm.Lookup(GetQuery{Key: key})
	if err != nil {
		h.t.Fatalf("Get %q: %v", key, err)
	}
	return v.(*GetResult)
}

func (h *harness) list(q ListQuery) *ListResult {
	h.t.Helper()
	v, err := h.sm.Lookup(&q)
	if err != nil {
		h.t.Fatalf("List %+v: %v", q, err)
	}
	return v.(*ListResult)
}

func listKeys(r *ListResult) []string {
	var ks []string
	for _, kv := range r.KVs {
		ks = append(ks, kv.Key)
	}
	return ks
}

func txnCmd(session, seq uint64, t *Txn) *Command {
	return &Command{Session: session, Seq: seq, Kind: KindTxn, Txn: t}
}

func putCmd(key, value string) *Command {
	return txnCmd(0, 0, &Txn{Then: []Op{{Type: OpPut, Key: key, Value: []byte(value)}}})
}

func delCmd(key string) *Command {
	return txnCmd(0, 0, &Txn{Then: []Op{{Type: OpDelete, Key: key}}})
}

func delPrefixCmd(prefix string) *Command {
	return txnCmd(0, 0, &Txn{Then: []Op{{Type: OpDeletePrefix, Key: prefix}}})
}

// casCmd puts key=value if key's ModRevision is mod (0 = must not exist).
func casCmd(session, seq uint64, key, value string, mod int64) *Command {
	return txnCmd(session, seq, &Txn{
		Compares: []Compare{{Key: key, Target: TargetModRevision, Op: OpEqual, Int: mod}},
		Then:     []Op{{Type: OpPut, Key: key, Value: []byte(value)}},
	})
}

// countPrefix counts the raw pebble keys with a one-byte prefix.
func countPrefix(t testing.TB, sm *StateMachine, p byte) int {
	t.Helper()
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	it := sm.db.NewIter(nil)
	n := 0
	for valid := it.First(); valid; valid = it.Next() {
		if it.Key()[0] == p {
			n++
		}
	}
	if err := it.Close(); err != nil {
		t.Fatal(err)
	}
	return n
}

// applyLease applies lease commands in one Update call and decodes the
// results; a command error fails the test.
func (h *harness) applyLease(cmds ...*Command) []*LeaseResult {
	h.t.Helper()
	var out []*LeaseResult
	for i, r := range h.applyRaw(encodeAll(h.t, cmds...)...) {
		lr, err := DecodeLeaseResult(r)
		if err != nil {
			h.t.Fatalf("lease command %d: %v", i, err)
		}
		if r.Value == 0 {
			h.t.Fatalf("lease command %d: Result.Value 0 for a success", i)
		}
		out = append(out, lr)
	}
	return out
}

func encodeAll(t testing.TB, cmds ...*Command) [][]byte {
	t.Helper()
	raw := make([][]byte, len(cmds))
	for i, c := range cmds {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("EncodeCommand: %v", err)
		}
		raw[i] = b
	}
	return raw
}

func grantCmd(id, ttl int64) *Command {
	return &Command{Kind: KindLeaseGrant, Grant: &LeaseGrant{ID: id, TTL: ttl}}
}

func revokeCmd(expired bool, ids ...int64) *Command {
	return &Command{Kind: KindLeaseRevoke, Revoke: &LeaseRevoke{IDs: ids, Expired: expired}}
}

func checkpointCmd(cps ...LeaseRemaining) *Command {
	return &Command{Kind: KindLeaseCheckpoint, Checkpoint: &LeaseCheckpoint{Checkpoints: cps}}
}

func putLeaseCmd(key, value string, lease int64) *Command {
	return txnCmd(0, 0, &Txn{Then: []Op{{Type: OpPut, Key: key, Value: []byte(value), Lease: lease}}})
}

// events returns one page of events.
func (h *harness) events(from int64, limit int) (*EventsResult, error) {
	h.t.Helper()
	v, err := h.sm.Lookup(EventsQuery{From: from, Limit: limit})
	if err != nil {
		return nil, err
	}
	return v.(*EventsResult), nil
}

// allEvents pages through every event from revision from.
func (h *harness) allEvents(from int64) []Event {
	h.t.Helper()
	var all []Event
	for {
		r, err := h.events(from, 0)
		if err != nil {
			h.t.Fatalf("events from %d: %v", from, err)
		}
		all = append(all, r.Events...)
		if !r.More {
			return all
		}
		from = r.Events[len(r.Events)-1].Revision + 1
	}
}

func (h *harness) leaseInfo(id int64) (*LeaseInfo, error) {
	h.t.Helper()
	v, err := h.sm.Lookup(LeaseQuery{ID: id})
	if err != nil {
		return nil, err
	}
	return v.(*LeaseInfo), nil
}

func (h *harness) leases() *LeasesResult {
	h.t.Helper()
	v, err := h.sm.Lookup(LeasesQuery{})
	if err != nil {
		h.t.Fatalf("leases: %v", err)
	}
	return v.(*LeasesResult)
}

// checkLeaseIndex verifies the lease invariant over the raw store: every
// record with a lease has its attachment and the lease exists; every
// attachment belongs to a record with that lease.
func checkLeaseIndex(t testing.TB, sm *StateMachine) {
	t.Helper()
	sm.mu.RLock()
	defer sm.mu.RUnlock()
	it := sm.db.NewIter(nil)
	defer it.Close()
	has := func(k []byte) bool {
		_, closer, err := sm.db.Get(k)
		if err != nil {
			return false
		}
		_ = closer.Close()
		return true
	}
	for valid := it.First(); valid; valid = it.Next() {
		k := it.Key()
		switch k[0] {
		case prefixKey:
			h, _, err := decodeRecord(it.Value())
			if err != nil {
				t.Fatal(err)
			}
			if h.lease == 0 {
				continue
			}
			var lk [leaseKeyLen]byte
			if !has(leaseKey(&lk, h.lease)) {
				t.Fatalf("key %q has lease %d, which does not exist", k[1:], h.lease)
			}
			if !has(appendAttachKey(nil, h.lease, k[1:])) {
				t.Fatalf("key %q with lease %d has no attachment", k[1:], h.lease)
			}
		case prefixAttach:
			id := int64(binary.BigEndian.Uint64(k[1:9]))
			v, closer, err := sm.db.Get(append([]byte{prefixKey}, k[9:]...))
			if err != nil {
				t.Fatalf("attachment %d/%q without a record: %v", id, k[9:], err)
			}
			h, _, err := decodeRecord(v)
			_ = closer.Close()
			if err != nil || h.lease != id {
				t.Fatalf("attachment %d/%q but the record has lease %d (%v)", id, k[9:], h.lease, err)
			}
		case prefixLease:
			if _, err := decodeLeaseRecord(it.Value()); err != nil {
				t.Fatal(err)
			}
		case prefixEvent:
			if len(k) != eventKeyLen {
				t.Fatalf("event key %x", k)
			}
			if _, err := decodeEvent(int64(binary.BigEndian.Uint64(k[1:9])), it.Value()); err != nil {
				t.Fatalf("event %x: %v", k, err)
			}
		}
	}
}

func readerOf(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// Delete removes k from the space (tests make old or damaged states).
func (sp *space) Delete(k []byte, o *pebble.WriteOptions) error {
	var buf []byte
	return sp.st.db.Delete(sp.key(&buf, k), o)
}
