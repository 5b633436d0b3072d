package balance

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
)

func benchSet() *Set[*Member[string]] {
	ms := members(10)
	in := make([]Member[*Member[string]], len(ms))
	for i := range ms {
		in[i] = Member[*Member[string]]{ID: ms[i].ID, Priority: ms[i].Priority, Tier: Passing, Value: &ms[i]}
	}
	return New(in...)
}

func BenchmarkPick(b *testing.B) {
	s := benchSet()
	r := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := s.Pick(r.Uint64()); !ok {
			b.Fatal("no instance")
		}
	}
}

// The shared math/rand/v2 source is what a service layer would most likely use.
func BenchmarkPickGlobalRand(b *testing.B) {
	s := benchSet()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := s.Pick(rand.Uint64()); !ok {
			b.Fatal("no instance")
		}
	}
}

func BenchmarkRoundRobin(b *testing.B) {
	s := benchSet()
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := s.RoundRobin(); !ok {
			b.Fatal("no instance")
		}
	}
}

func BenchmarkHashKey(b *testing.B) {
	s := benchSet()
	ks := make([]string, 1024)
	for i := range ks {
		ks[i] = "session-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := s.HashKey(ks[i&1023]); !ok {
			b.Fatal("no instance")
		}
		i++
	}
}

func BenchmarkNew(b *testing.B) {
	ms := members(10)
	b.ReportAllocs()
	for b.Loop() {
		New(ms...)
	}
}

// BenchmarkViewChange is the cost of one change to a service's view (one
// instance turning warning or passing again) and the publish of the Set
// that follows, at 1,000 and 10,000 instances:
//
//	go test -run '^$' -bench ViewChange -benchmem ./internal/balance
//
// "scratch" is what the service layer did before View: a Set built anew
// from every member after each change, with its hash ring (consistent's
// build sorts the whole ring once per member: n² log n). It runs at 1,000
// only; at 10,000 one op takes many minutes. "hashed" is a View whose
// Sets someone hashed, so it keeps its ring up to date.
func BenchmarkViewChange(b *testing.B) {
	for _, n := range []int{1000, 10_000} {
		ms := make([]Member[int], n)
		for i := range ms {
			ms[i] = Member[int]{ID: "i-" + strconv.Itoa(i), Priority: 1 + i%3, Tier: Passing, Value: i}
		}
		flip := func(i int) Member[int] {
			m := &ms[(i*7919)%n]
			m.Tier = Warning + Passing - m.Tier
			return *m
		}
		if n <= 1000 {
			b.Run(fmt.Sprintf("n=%d/scratch", n), func(b *testing.B) {
				rr := new(Counter)
				i := 0
				for b.Loop() {
					flip(i)
					NewShared(rr, ms...).HashKey("k")
					i++
				}
			})
		}
		for _, hashed := range []bool{false, true} {
			name := fmt.Sprintf("n=%d/incremental", n)
			if hashed {
				name += "-hashed"
			}
			b.Run(name, func(b *testing.B) {
				v := NewView[int](nil)
				for _, m := range ms {
					v.Put(m)
				}
				if hashed {
					v.Set().HashKey("k")
				}
				b.ReportAllocs()
				b.ResetTimer()
				i := 0
				for b.Loop() {
					v.Put(flip(i))
					if s := v.Set(); s.Len() == 0 || s.Hashed() != hashed {
						b.Fatal("bad set")
					}
					i++
				}
			})
		}
	}
}

// BenchmarkViewMemory reports the heap a View of 10,000 members and its
// published Set hold, per member (the values themselves not counted),
// without and with a hash ring:
//
//	go test -run '^$' -bench ViewMemory -benchtime 1x ./internal/balance
func BenchmarkViewMemory(b *testing.B) {
	const n = 10_000
	for _, hashed := range []bool{false, true} {
		b.Run(fmt.Sprintf("hashed=%v", hashed), func(b *testing.B) {
			for b.Loop() {
				ids := make([]string, n)
				for i := range ids {
					ids[i] = fmt.Sprintf("instance-%06d", i)
				}
				before := heap()
				v := NewView[*int](nil)
				for _, id := range ids {
					v.Put(Member[*int]{ID: id, Priority: 1, Tier: Passing})
				}
				s := v.Set()
				if hashed {
					s.HashKey("k")
				}
				after := heap()
				b.ReportMetric(float64(after-before)/n, "B/member")
				runtime.KeepAlive(s)
				runtime.KeepAlive(v)
			}
		})
	}
}

func heap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
