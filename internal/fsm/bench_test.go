package fsm

import (
	"fmt"
	"testing"
)

// BenchmarkUpdate applies batches of 64 deduplicated puts of 256-byte
// values, the shape of a busy group's write path.
func BenchmarkUpdate(b *testing.B) {
	h := newHarness(b, Options{})
	value := make([]byte, 256)
	const batch = 64
	cmds := make([][]byte, batch)
	entries := make([]Entry, batch)
	var seq uint64
	b.SetBytes(batch * 256)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for j := range cmds {
			seq++
			c, err := EncodeCommand(txnCmd(1, seq, &Txn{Then: []Op{{Type: OpPut, Key: fmt.Sprintf("bench/%06d", seq%10000), Value: value}}}))
			if err != nil {
				b.Fatal(err)
			}
			cmds[j] = c
			h.idx++
			entries[j] = Entry{Index: h.idx, Cmd: c}
		}
		b.StartTimer()
		if _, err := h.sm.Update(entries); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/entry")
}
