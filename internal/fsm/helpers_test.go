package fsm

import (
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
		if r.Value != uint64(tr.Revision) {
			h.t.Fatalf("command %d: Result.Value %d != Revision %d", i, r.Value, tr.Revision)
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
