package router

import (
	"fmt"
	"testing"
)

func TestPickSticksAndMovesOnlyTheDeadServersKeys(t *testing.T) {
	servers := []string{"a:1", "b:1", "c:1"}
	r := New(servers)
	const n = 3000
	owner := map[string]string{}
	count := map[string]int{}
	same := New([]string{"c:1", "a:1", "b:1", "a:1"})
	for i := range n {
		k := fmt.Sprintf("g\x00key-%d", i)
		a, ok := r.Pick(k, nil)
		if !ok {
			t.Fatal("no server picked")
		}
		if b, _ := same.Pick(k, nil); b != a {
			t.Fatalf("key %q: %s on one ring, %s on the same set in another order", k, a, b)
		}
		owner[k] = a
		count[a]++
	}
	for _, s := range servers {
		if count[s] < n/6 {
			t.Fatalf("server %s owns %d of %d keys: %v", s, count[s], n, count)
		}
	}
	// b stops answering: only its keys move, and they spread over a and c.
	alive := func(a string) bool { return a != "b:1" }
	moved := map[string]int{}
	for k, was := range owner {
		now, ok := r.Pick(k, alive)
		if !ok || now == "b:1" {
			t.Fatalf("key %q picked %q (ok %v) with b dead", k, now, ok)
		}
		if was != "b:1" && now != was {
			t.Fatalf("key %q moved from live %s to %s", k, was, now)
		}
		if was == "b:1" {
			moved[now]++
		}
	}
	if moved["a:1"] == 0 || moved["c:1"] == 0 {
		t.Fatalf("b's keys went to %v; want both others", moved)
	}
	if _, ok := r.Pick("x", func(string) bool { return false }); ok {
		t.Fatal("picked a server with none usable")
	}
	if _, ok := New(nil).Pick("x", nil); ok {
		t.Fatal("picked a server on an empty ring")
	}
}
