package fsm

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/dister/dister/internal/errs"
)

func sampleCommands() []*Command {
	return []*Command{
		putCmd("k", "v"),
		txnCmd(1<<63, 1<<40, &Txn{}),
		casCmd(42, 7, "lock/ä", "holder", 0),
		txnCmd(3, 4, &Txn{
			Compares: []Compare{
				{Key: "a", Target: TargetValue, Op: OpNotEqual, Value: []byte("x")},
				{Key: "b", Target: TargetVersion, Op: OpGreater, Int: -5},
				{Key: "c", Target: TargetCreateRevision, Op: OpLess, Int: 1 << 62},
			},
			Then: []Op{
				{Type: OpPut, Key: "a", Value: []byte("y"), Lease: 99},
				{Type: OpDelete, Key: "b"},
				{Type: OpDeletePrefix, Key: ""},
			},
			Else: []Op{{Type: OpDeletePrefix, Key: "p/"}},
		}),
		grantCmd(0, 1),
		{Session: 5, Seq: 6, Kind: KindLeaseGrant, Grant: &LeaseGrant{ID: 1<<63 - 1, TTL: MaxLeaseTTL}},
		revokeCmd(false, 42),
		{Session: 1, Seq: 1 << 50, Kind: KindLeaseRevoke, Revoke: &LeaseRevoke{IDs: []int64{1, 1 << 40, 3, 1}, Expired: true}},
		checkpointCmd(LeaseRemaining{ID: 7, RemainingMs: 1}),
		{Session: 9, Seq: 9, Kind: KindLeaseCheckpoint, Checkpoint: &LeaseCheckpoint{Checkpoints: []LeaseRemaining{{ID: 1, RemainingMs: MaxLeaseTTL}, {ID: 2, RemainingMs: 30_000}}}},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for i, c := range sampleCommands() {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if b[0] != cmdCodecVersion || b[1] != byte(c.Kind) {
			t.Fatalf("%d: header %v", i, b[:2])
		}
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("%d: got %+v, want %+v", i, got, c)
		}
		// DecodeCommand copies: changing the input changes nothing.
		if got.Txn != nil && len(got.Txn.Then) > 0 && len(got.Txn.Then[0].Value) > 0 {
			for j := range b {
				b[j] = 0
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("%d: decoded command aliases its input", i)
			}
		}
	}
	if _, err := EncodeCommand(nil); !errors.Is(err, errs.Invalid) {
		t.Fatal(err)
	}
	if _, err := EncodeCommand(&Command{Kind: 2, Txn: &Txn{}}); !errors.Is(err, errs.Invalid) {
		t.Fatal(err)
	}
	if _, err := EncodeCommand(&Command{Kind: KindTxn}); !errors.Is(err, errs.Invalid) {
		t.Fatal(err)
	}
}

// WithTime changes a command's time and nothing else, whatever the
// lengths of the old and new time's varints; it refuses a negative time
// and a command without one (codec version 1, or not a command).
func TestWithTime(t *testing.T) {
	for i, c := range sampleCommands() {
		for _, before := range []int64{0, 1_700_000_000_000, 1<<63 - 1} {
			for _, after := range []int64{0, 5, 1_800_000_000_000, 1<<63 - 1} {
				c.Time = before
				b, err := EncodeCommand(c)
				if err != nil {
					t.Fatalf("%d: %v", i, err)
				}
				stamped, err := WithTime(b, after)
				if err != nil {
					t.Fatalf("%d: %v", i, err)
				}
				got, err := DecodeCommand(stamped)
				if err != nil {
					t.Fatalf("%d: %d -> %d: %v", i, before, after, err)
				}
				want := *c
				want.Time = after
				if !reflect.DeepEqual(got, &want) {
					t.Fatalf("%d: %d -> %d: got %+v, want %+v", i, before, after, got, &want)
				}
			}
		}
	}
	b, err := EncodeCommand(putCmd("k", "v"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WithTime(b, -1); !errors.Is(err, errs.Invalid) {
		t.Fatalf("negative time: %v", err)
	}
	v1 := append([]byte{cmdCodecVersionV1}, b[1:]...)
	for _, bad := range [][]byte{nil, {cmdCodecVersion}, v1, {cmdCodecVersion, byte(KindTxn), 0x80}} {
		if _, err := WithTime(bad, 1); !errors.Is(err, errs.Invalid) {
			t.Fatalf("WithTime(%x): %v", bad, err)
		}
	}
}

func TestLimits(t *testing.T) {
	put := func(k string, v []byte) *Txn { return &Txn{Then: []Op{{Type: OpPut, Key: k, Value: v}}} }
	ops := func(n int) *Txn {
		t := &Txn{}
		for i := 0; i < n; i++ {
			t.Else = append(t.Else, Op{Type: OpDelete, Key: "k"})
		}
		return t
	}
	maxKey := strings.Repeat("k", MaxKeySize)
	cases := []struct {
		name string
		txn  *Txn
		want error
	}{
		{"4 KiB key", put(maxKey, nil), nil},
		{"4 KiB+1 key", put(maxKey+"k", nil), errs.TooLarge},
		{"4 KiB+1 delete key", &Txn{Then: []Op{{Type: OpDelete, Key: maxKey + "k"}}}, errs.TooLarge},
		{"4 KiB+1 compare key", &Txn{Compares: []Compare{{Key: maxKey + "k", Target: TargetVersion, Op: OpEqual}}}, errs.TooLarge},
		{"empty key", put("", nil), errs.Invalid},
		{"empty delete key", &Txn{Then: []Op{{Type: OpDelete}}}, errs.Invalid},
		{"empty compare key", &Txn{Compares: []Compare{{Target: TargetVersion, Op: OpEqual}}}, errs.Invalid},
		{"empty prefix", &Txn{Then: []Op{{Type: OpDeletePrefix}}}, nil},
		{"NUL key", put("a\x00", nil), errs.Invalid},
		{"reserved prefix", &Txn{Then: []Op{{Type: OpDeletePrefix, Key: "\x00"}}}, nil},
		{"reserved key", put("\x00svc/a", nil), nil},
		{"reserved key with a second NUL", put("\x00svc\x00a", nil), errs.Invalid},
		{"invalid UTF-8", put("a\xff", nil), errs.Invalid},
		{"1 MiB value", put("k", make([]byte, MaxValueSize)), nil},
		{"1 MiB+1 value", put("k", make([]byte, MaxValueSize+1)), errs.TooLarge},
		{"1 MiB+1 compare value", &Txn{Compares: []Compare{{Key: "k", Target: TargetValue, Op: OpEqual, Value: make([]byte, MaxValueSize+1)}}}, errs.TooLarge},
		{"128 ops", ops(128), nil},
		{"129 ops", ops(129), errs.TooLarge},
		{"129 with compares", &Txn{Compares: make([]Compare, 100), Then: ops(29).Else}, errs.TooLarge},
		{"unknown op", &Txn{Then: []Op{{Type: 0, Key: "k"}}}, errs.Invalid},
		{"unknown target", &Txn{Compares: []Compare{{Key: "k", Target: 5, Op: OpEqual}}}, errs.Invalid},
		{"unknown compare op", &Txn{Compares: []Compare{{Key: "k", Target: TargetValue, Op: 0}}}, errs.Invalid},
		{"nil txn", nil, errs.Invalid},
	}
	for _, c := range cases {
		err := ValidateTxn(c.txn)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: ValidateTxn = %v, want %v", c.name, err, c.want)
		}
		b, err := EncodeCommand(txnCmd(1, 1, c.txn))
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: EncodeCommand = %v, want %v", c.name, err, c.want)
		}
		if err == nil {
			if _, err := DecodeCommand(b); err != nil {
				t.Errorf("%s: DecodeCommand = %v", c.name, err)
			}
		}
	}

	// The largest key and value go through Update.
	h := newHarness(t, Options{})
	big := bytes.Repeat([]byte{0xab}, MaxValueSize)
	h.apply(txnCmd(0, 0, put(maxKey, big)))
	if g := h.get(maxKey); !g.Found || !bytes.Equal(g.KV.Value, big) {
		t.Fatal("max key/value not stored")
	}
}

func TestDecodeResult(t *testing.T) {
	r := &TxnResult{Succeeded: true, Revision: 12, Ops: []OpResult{{}, {Deleted: 3}}}
	got, err := DecodeResult(Result{Value: 12, Data: encodeTxnResult(nil, r)})
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("got %+v %v", got, err)
	}
	tooLarge := ValidateTxn(&Txn{Then: []Op{{Type: OpPut, Key: "k", Value: make([]byte, MaxValueSize+1)}}})
	_, err = DecodeResult(Result{Data: encodeError(tooLarge)})
	if !errors.Is(err, errs.TooLarge) || err.Error() != tooLarge.Error() {
		t.Fatalf("too large: %v", err)
	}
	_, err = DecodeResult(Result{Data: encodeError(errors.New("other"))})
	if !errors.Is(err, errs.Invalid) || err.Error() != "other" {
		t.Fatalf("other: %v", err)
	}
	for _, b := range [][]byte{nil, {1}, {2, 1}, {1, 3}, {1, 1, 2, 0, 0}, {1, 1, 1, 0, 5, 0}, {1, 1, 1, 0, 0, 0}, {1, 2, 1, 9, 'a'}, {1, 1, 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}} {
		if _, err := DecodeResult(Result{Data: b}); !errors.Is(err, errs.Invalid) {
			t.Errorf("DecodeResult(%v) = %v", b, err)
		}
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands() {
		b, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{1, 1})
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0})
	f.Add([]byte{1, 1, 0, 0, 200, 1})
	f.Add([]byte{1, 1, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte("\x01\x01\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"))
	f.Add([]byte("junk junk junk"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, errs.Invalid) && !errors.Is(err, errs.TooLarge) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		enc, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("re-encode of a decoded command: %v", err)
		}
		c2, err := DecodeCommand(enc)
		if err != nil {
			t.Fatalf("decode of re-encoded command: %v", err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip differs:\n%+v\n%+v", c, c2)
		}
		// The aliasing decoder Update uses must agree.
		c3, err := decodeCommand(b, true)
		if err != nil || !reflect.DeepEqual(c, c3) {
			t.Fatalf("aliasing decode differs: %v", err)
		}
	})
}

// FuzzDecodeStored feeds arbitrary bytes to the decoders of what Update
// stores and returns (results, events, lease and key records): errors, never
// a panic or a large allocation.
func FuzzDecodeStored(f *testing.F) {
	h := newHarness(f, Options{})
	h.applyLease(grantCmd(3, 100))
	h.apply(putLeaseCmd("k", "v", 3), putCmd("k", "w"), delCmd("k"))
	h.applyLease(checkpointCmd(LeaseRemaining{ID: 3, RemainingMs: 50}))
	h.sm.mu.RLock()
	it := h.sm.db.NewIter(nil)
	for valid := it.First(); valid; valid = it.Next() {
		f.Add(append([]byte(nil), it.Value()...))
	}
	_ = it.Close()
	h.sm.mu.RUnlock()
	f.Add(encodeTxnResult(nil, &TxnResult{Succeeded: true, Revision: 4, Ops: []OpResult{{Deleted: 2}}}))
	f.Add(encodeLeaseResult(nil, &LeaseResult{Revision: 9, ID: 9, TTL: 10, Deleted: 3}))
	f.Add(encodeError(errs.LeaseNotFound))
	f.Add([]byte{eventFormat, byte(EventPut), 1, 'k', 1, 1, 1, 0, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := Result{Value: 1, Data: b}
		if tr, err := DecodeResult(r); err == nil {
			again, err := DecodeResult(Result{Data: encodeTxnResult(nil, tr)})
			if err != nil || !reflect.DeepEqual(again, tr) {
				t.Fatalf("txn result round trip: %+v %+v %v", tr, again, err)
			}
		}
		if lr, err := DecodeLeaseResult(r); err == nil {
			again, err := DecodeLeaseResult(Result{Data: encodeLeaseResult(nil, lr)})
			if err != nil || *again != *lr {
				t.Fatalf("lease result round trip: %+v %+v %v", lr, again, err)
			}
		}
		_, _ = decodeEvent(1, b)
		_, _ = decodeLeaseRecord(b)
		_, _, _ = decodeRecord(b)
	})
}
