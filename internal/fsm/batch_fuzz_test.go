package fsm

import "testing"

// FuzzApplyForgedBatch: a forged batch entry never panics the state
// machine and its result is either an error or a batch result.
func FuzzApplyForgedBatch(f *testing.F) {
	cmds := encodeAll(f, putIn(5, 1, "a", "1"), casCmd(5, 2, "a", "lost", 0), putIn(6, 1, "b", "2"))
	b, _ := EncodeBatch(cmds)
	f.Add(b)
	f.Add(b[:len(b)-1])
	f.Add([]byte{cmdCodecVersion, byte(KindBatch)})
	f.Add([]byte{cmdCodecVersion, byte(KindBatch), 1, 3, cmdCodecVersion, byte(KindTxn), 0})
	h := newHarness(f, Options{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) < 2 {
			return
		}
		raw = append([]byte{cmdCodecVersion, byte(KindBatch)}, raw[2:]...)
		h.t = t
		h.idx++
		out, err := h.sm.Update([]Entry{{Index: h.idx, Cmd: raw}})
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		_, _ = SplitBatchResult(out[0].Result, 1)
	})
}
