package balance

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func members(n int) []Member[string] {
	ms := make([]Member[string], n)
	for i := range ms {
		id := fmt.Sprintf("10.0.0.%d:8080", i+1)
		ms[i] = mem(id, 1+i%3, Passing)
	}
	return ms
}

func keys() []string {
	ks := make([]string, draws)
	for i := range ks {
		ks[i] = fmt.Sprintf("user-%d", i)
	}
	return ks
}

func assign(s *Set[string], ks []string) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i], _ = s.HashKey(k)
	}
	return out
}

func TestHashKeyStable(t *testing.T) {
	ms := members(7)
	shuffled := append([]Member[string](nil), ms...)
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(shuffled), func(i, j int) {
		shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
	})
	a, b := New(ms...), New(shuffled...)
	ks := keys()
	first := assign(a, ks)
	again, other := assign(a, ks), assign(b, ks)
	for i := range ks {
		if first[i] != again[i] || first[i] != other[i] {
			t.Fatalf("key %q: %q, then %q, other order %q", ks[i], first[i], again[i], other[i])
		}
	}
}

func TestHashKeyBalance(t *testing.T) {
	for _, n := range []int{3, 5, 10} {
		counts := map[string]int{}
		for _, v := range assign(New(members(n)...), keys()) {
			counts[v]++
		}
		if len(counts) != n {
			t.Fatalf("n=%d: only %d members own keys", n, len(counts))
		}
		for id, c := range counts {
			// Bounded loads cap a member at 1.25× the average partition count.
			if share := float64(c) / draws; share > 1.3/float64(n) {
				t.Errorf("n=%d: %s owns %.3f of keys, over 1.3/n", n, id, share)
			}
		}
	}
}

// Removing any one of n members must move its own keys and few others.
func TestHashKeyMovement(t *testing.T) {
	ks := keys()
	for _, n := range []int{3, 5, 10} {
		ms := members(n)
		before := assign(New(ms...), ks)
		worst, worstOther := 0.0, 0.0
		for gone := range n {
			rest := append(append([]Member[string](nil), ms[:gone]...), ms[gone+1:]...)
			after := assign(New(rest...), ks)
			moved, movedOther := 0, 0
			for i := range ks {
				if before[i] == after[i] {
					continue
				}
				moved++
				if before[i] != ms[gone].ID {
					movedOther++
				}
				if after[i] == ms[gone].ID {
					t.Fatalf("key %q still on removed member", ks[i])
				}
			}
			share, other := float64(moved)/draws, float64(movedOther)/draws
			worst, worstOther = max(worst, share), max(worstOther, other)
			if limit := 1/float64(n) + 0.10; share > limit {
				t.Errorf("n=%d, %s left: %.3f of keys moved, limit %.3f", n, ms[gone].ID, share, limit)
			}
			if other > 0.10 {
				t.Errorf("n=%d, %s left: %.3f of keys moved between staying members, limit 0.10", n, ms[gone].ID, other)
			}
		}
		t.Logf("n=%d: worst moved %.4f (1/n = %.4f), of which between staying members %.4f", n, worst, 1/float64(n), worstOther)
	}
}
