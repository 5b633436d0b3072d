package balance

import (
	"math/rand/v2"
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
