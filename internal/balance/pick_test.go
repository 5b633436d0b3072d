package balance

import (
	"math"
	"math/rand/v2"
	"testing"
)

const draws = 100_000

func mem(id string, prio int, tier Tier) Member[string] {
	return Member[string]{ID: id, Priority: prio, Tier: tier, Value: id}
}

// shares draws from Pick with a seeded generator so failures reproduce.
func shares(t *testing.T, s *Set[string]) map[string]float64 {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	counts := map[string]int{}
	for range draws {
		v, ok := s.Pick(r.Uint64())
		if !ok {
			t.Fatal("Pick: ok=false on a non-empty set")
		}
		counts[v]++
	}
	out := map[string]float64{}
	for k, c := range counts {
		out[k] = float64(c) / draws
	}
	return out
}

func assertShares(t *testing.T, got, want map[string]float64) {
	t.Helper()
	for id, w := range want {
		if d := math.Abs(got[id] - w); d > 0.02 {
			t.Errorf("%s: share %.4f, want %.4f ± 0.02", id, got[id], w)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("%s picked (share %.4f) but must not be", id, got[id])
		}
	}
}

func TestPickWeighted(t *testing.T) {
	s := New(mem("a", 1, Passing), mem("b", 2, Passing), mem("c", 3, Passing), mem("d", 4, Passing))
	assertShares(t, shares(t, s), map[string]float64{"a": .1, "b": .2, "c": .3, "d": .4})
}

func TestPickZeroPriorityIsStandby(t *testing.T) {
	s := New(mem("zero", 0, Passing), mem("a", 1, Passing), mem("b", 3, Passing))
	assertShares(t, shares(t, s), map[string]float64{"a": .25, "b": .75})
}

func TestPickAllZeroUniform(t *testing.T) {
	s := New(mem("a", 0, Passing), mem("b", 0, Passing), mem("c", 0, Passing), mem("d", 0, Passing))
	assertShares(t, shares(t, s), map[string]float64{"a": .25, "b": .25, "c": .25, "d": .25})
}

func TestPickWarningOnlyWhenNonePasses(t *testing.T) {
	s := New(mem("w", 5, Warning), mem("p", 1, Passing), mem("x", 9, Unusable))
	assertShares(t, shares(t, s), map[string]float64{"p": 1})

	s = New(mem("w1", 1, Warning), mem("w2", 3, Warning), mem("x", 9, Unusable))
	assertShares(t, shares(t, s), map[string]float64{"w1": .25, "w2": .75})
}

func TestPickUnusableNever(t *testing.T) {
	s := New(mem("x", 1, Unusable), mem("y", 0, Unusable))
	for _, f := range strategies(s) {
		if v, ok := f(); ok {
			t.Fatalf("picked %q from an all-unusable set", v)
		}
	}
}

func TestPickOneCandidate(t *testing.T) {
	for _, prio := range []int{0, 1, 7} {
		s := New(mem("only", prio, Passing), mem("sick", 5, Unusable), mem("warn", 5, Warning))
		assertShares(t, shares(t, s), map[string]float64{"only": 1})
		for _, f := range strategies(s) {
			if v, ok := f(); !ok || v != "only" {
				t.Fatalf("priority %d: got %q %v, want only", prio, v, ok)
			}
		}
	}
}

func TestPickEmpty(t *testing.T) {
	for _, f := range strategies(New[string]()) {
		if v, ok := f(); ok {
			t.Fatalf("picked %q from an empty set", v)
		}
	}
}

func TestPickExtremes(t *testing.T) {
	s := New(mem("a", 1, Passing), mem("b", 1, Passing), mem("huge", math.MaxInt, Passing), mem("neg", -3, Passing))
	for _, rnd := range []uint64{0, 1, math.MaxUint64} {
		if _, ok := s.Pick(rnd); !ok {
			t.Fatalf("Pick(%d) failed", rnd)
		}
	}
	if v, _ := s.Pick(0); v != "a" {
		t.Errorf("Pick(0) = %q, want the first member a", v)
	}
	if v, _ := s.Pick(math.MaxUint64); v != "huge" {
		t.Errorf("Pick(max) = %q, want the last member huge", v)
	}
}

func TestDuplicateIDLastWins(t *testing.T) {
	s := New(mem("a", 1, Passing), Member[string]{ID: "a", Priority: 1, Tier: Passing, Value: "a2"})
	if s.Len() != 1 {
		t.Fatalf("Len = %d, want 1", s.Len())
	}
	if v, _ := s.Pick(0); v != "a2" {
		t.Fatalf("got %q, want the later registration a2", v)
	}
}

func TestRoundRobinEven(t *testing.T) {
	s := New(mem("a", 1, Passing), mem("b", 9, Passing), mem("c", 3, Passing), mem("z", 0, Passing))
	counts := map[string]int{}
	prev := ""
	for range 3000 {
		v, ok := s.RoundRobin()
		if !ok || v == prev {
			t.Fatalf("got %q %v after %q: want a different member each turn", v, ok, prev)
		}
		prev = v
		counts[v]++
	}
	if len(counts) != 3 || counts["a"] != 1000 || counts["b"] != 1000 || counts["c"] != 1000 {
		t.Fatalf("counts %v, want 1000 each of a, b, c and no standby z", counts)
	}
}

func strategies(s *Set[string]) []func() (string, bool) {
	return []func() (string, bool){
		func() (string, bool) { return s.Pick(12345) },
		s.RoundRobin,
		func() (string, bool) { return s.HashKey("k") },
	}
}

// TestRoundRobinFairAcrossRebuilds: a service layer rebuilds the Set on
// every change; sharing one counter across the rebuilds keeps the rotation
// going. Before, each rebuilt Set started at the first member: with a
// change between picks, one member got every pick.
func TestRoundRobinFairAcrossRebuilds(t *testing.T) {
	var rr Counter
	counts := map[string]int{}
	for range 100 {
		s := NewShared(&rr, members(10)...)
		v, ok := s.RoundRobin()
		if !ok {
			t.Fatal("no member")
		}
		counts[v]++
	}
	for id, n := range counts {
		if n != 10 {
			t.Fatalf("%s got %d of 100 picks across rebuilds, want 10 each (%v)", id, n, counts)
		}
	}
	if len(counts) != 10 {
		t.Fatalf("%d members picked, want 10: %v", len(counts), counts)
	}
}
