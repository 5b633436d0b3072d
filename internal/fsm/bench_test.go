package fsm

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkUpdate applies batches of 64 deduplicated puts of 256-byte
// values, the shape of a busy group's write path. Each put also writes its
// watch event (key, new and previous value), and the default retention
// keeps 100,000 revisions of them.
func BenchmarkUpdate(b *testing.B) {
	benchmarkUpdate(b, Options{})
}

// BenchmarkUpdateShortHistory is BenchmarkUpdate with 1024 revisions of
// events kept: the cost of writing events without the cost of the retained
// history's volume (a larger LSM tree to read and compact).
func BenchmarkUpdateShortHistory(b *testing.B) {
	benchmarkUpdate(b, Options{EventRetention: 1024})
}

func benchmarkUpdate(b *testing.B, o Options) {
	h := newHarness(b, o)
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

// BenchmarkEventsQuery reads pages of 1000 events of 256-byte puts.
func BenchmarkEventsQuery(b *testing.B) {
	h := newHarness(b, Options{})
	value := make([]byte, 256)
	for i := 0; i < 20; i++ {
		cmds := make([]*Command, 0, 1000)
		for j := 0; j < 1000; j++ {
			cmds = append(cmds, txnCmd(0, 0, &Txn{Then: []Op{{Type: OpPut, Key: fmt.Sprintf("bench/%04d", j), Value: value}}}))
		}
		h.apply(cmds...)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := h.events(int64(1+(i*1000)%19000), 1000)
		if err != nil || len(r.Events) != 1000 {
			b.Fatal(len(r.Events), err)
		}
	}
}

// BenchmarkSyncBusyStore times a replica's Sync in a store that 100 busy
// shards write to (64 puts of 256 bytes each between two Syncs): what
// dragonboat's periodic and pre-snapshot syncs cost an apply worker when
// many groups write.
func BenchmarkSyncBusyStore(b *testing.B) {
	root := b.TempDir()
	st, err := OpenShared(filepath.Join(root, "store"), 8<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	const shards = 100
	hs := make([]*harness, shards)
	for i := range hs {
		hs[i] = sharedHarness(b, st, uint64(i+1), filepath.Join(root, fmt.Sprint(i)))
		defer hs[i].sm.Close()
	}
	value := string(make([]byte, 256))
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for s, h := range hs {
			cmds := make([]*Command, 64)
			for j := range cmds {
				cmds[j] = putCmd(fmt.Sprintf("k/%d/%d", s, (i*64+j)%5000), value)
			}
			h.apply(cmds...)
		}
		b.StartTimer()
		t0 := time.Now()
		if err := hs[i%shards].sm.Sync(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkUpdateManyShards applies one deduplicated 256-byte put per
// Update, round-robin over 100 shards (writes spread over many groups),
// with every shard in one store against a store each. A store each has a
// memtable each, so at this volume nothing of theirs is flushed before
// they close (the timing includes the closes, for both) and every read is
// a memtable's. The one store keeps the same data in one 64 MiB memtable
// and its tables: the memory it saves is paid in flushes, compactions and
// table reads while it is written.
func BenchmarkUpdateManyShards(b *testing.B) {
	for _, shared := range []bool{true, false} {
		b.Run(fmt.Sprintf("shared=%v", shared), func(b *testing.B) {
			root := b.TempDir()
			const shards = 100
			var st *Shared
			if shared {
				var err error
				if st, err = OpenShared(filepath.Join(root, "store"), 64<<20); err != nil {
					b.Fatal(err)
				}
				defer st.Close()
			}
			hs := make([]*harness, shards)
			for i := range hs {
				dir := filepath.Join(root, fmt.Sprint(i))
				if shared {
					hs[i] = sharedHarness(b, st, uint64(i+1), dir)
				} else {
					hs[i] = newHarness(b, Options{})
				}
				defer hs[i].sm.Close()
			}
			value := make([]byte, 256)
			seq := make([]uint64, shards)
			cmds := make([][]byte, b.N)
			for i := range cmds {
				s := i % shards
				seq[s]++
				c, err := EncodeCommand(txnCmd(1, seq[s], &Txn{Then: []Op{{Type: OpPut, Key: fmt.Sprintf("bench/%04d", seq[s]%1000), Value: value}}}))
				if err != nil {
					b.Fatal(err)
				}
				cmds[i] = c
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h := hs[i%shards]
				h.idx++
				if _, err := h.sm.Update([]Entry{{Index: h.idx, Cmd: cmds[i]}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
